"""The API key check, and the quota, on the proxy's request path.

A :class:`Gate` holds the :class:`~rendezvous.access.keys.KeyRing` and the
:class:`~rendezvous.access.quota.QuotaBook` that the replica's followers of ``rdv.api-keys``
and ``rdv.usage`` keep current, and answers each request in O(1): the SHA-256 of a key sent
before is cached (an LRU of ``cache_size``), the record is one dict lookup by digest, the quota
a few more. It raises the proxy's errors (401, 403, 429, and 503 before both topics are read);
the app turns them into responses. Health, readiness, metrics and the API document do not pass
through it.

A scoring request passes in two steps: :meth:`Gate.admit` before its body is read (the key, its
scope, and a quota with nothing left refused at once), then :meth:`Gate.charge` once the body
is valid, when what the request costs is known (:mod:`rendezvous.access.cost`: the sample
decisions read the request ID or a body field). A request refused between the two (an unknown
service, a bad body) is charged 1 by :meth:`Gate.charge_refused`, as every request was before
weights: refused requests are not free to send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from cachetools import LRUCache

from rendezvous import serde, topics
from rendezvous.access import keys
from rendezvous.access.cost import REQUESTS, Cost, unit
from rendezvous.access.log import Following, KeyLog, usage_key
from rendezvous.access.quota import QuotaBook, Verdict
from rendezvous.clock import Clock
from rendezvous.proxy.errors import (
    Forbidden,
    KafkaUnavailable,
    KeysUnavailable,
    QuotaExceeded,
    Unauthorized,
)
from rendezvous.proxy.transport import Transport
from rendezvous.records import ApiKey

log = logging.getLogger(__name__)

MAX_KEY_CHARS = 256  # longer is no key of ours, and is not hashed


class Gate:
    """The replica's access control: its keys, their quotas, and the work that keeps both
    current (:meth:`start` follows the two topics and publishes this replica's counts)."""

    def __init__(
        self,
        *,
        replica_id: str,
        key_log: KeyLog,
        usage_log: KeyLog,
        usage_interval_ms: int = 1000,
        key_topic: str = topics.API_KEYS,
        usage_topic: str = topics.USAGE,
        cache_size: int = 10_000,
        costs: Mapping[str, Cost] | None = None,
    ) -> None:
        self.key_log, self.usage_log = key_log, usage_log
        # What a request of each service costs; a service not here costs 1.
        self.costs: Mapping[str, Cost] = costs or {}
        self._weighted = frozenset(name for name, c in self.costs.items() if c.weighted)
        self.usage_interval_ms = usage_interval_ms
        self._following: list[Following] = []
        self._reporter: asyncio.Task[None] | None = None
        self.ring = keys.KeyRing()
        self.quota = QuotaBook(replica_id)
        self.key_topic, self.usage_topic = key_topic, usage_topic
        self._unread = {key_topic, usage_topic}  # the topics not read to their end yet
        self.problem = f"not read yet: {key_topic}, {usage_topic}"
        self._digests: LRUCache[str, str] = LRUCache(cache_size)

    @property
    def ready(self) -> bool:
        return not self._unread

    # -- lifecycle
    def start(self, loop: asyncio.AbstractEventLoop, transport: Transport, clock: Clock) -> None:
        """Follow both logs, and publish this replica's counts through ``transport`` every
        ``usage_interval_ms``; call it on ``loop``'s thread."""
        self._following = self._follow(loop)
        self._reporter = loop.create_task(self._report_every(transport, clock))

    async def stop(self, transport: Transport, clock: Clock) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reporter
            self.publish_usage(transport, clock())  # the last counts, before the producer closes
        loop = asyncio.get_running_loop()
        for following in self._following:
            await loop.run_in_executor(None, following.close)
        self._following = []

    async def _report_every(self, transport: Transport, clock: Clock) -> None:
        while True:
            await asyncio.sleep(self.usage_interval_ms / 1000)
            self.publish_usage(transport, clock())

    def publish_usage(self, transport: Transport, now_ms: int) -> int:
        """Queue this replica's changed counts on the usage topic; how many records."""
        records = self.quota.report(now_ms)
        for i, record in enumerate(records):
            value = serde.encode(serde.Kind.USAGE, dict(record))
            try:
                transport.produce(self.usage_topic, usage_key(record).encode(), value, now_ms)
            except KafkaUnavailable as exc:
                self.quota.unreported(records[i:])  # sent again with the next report
                log.warning("could not publish API key usage: %s", exc.message)
                return i
        return len(records)

    # -- from the logs (on the event loop)
    def _follow(self, loop: asyncio.AbstractEventLoop) -> list[Following]:
        loop_thread = threading.get_ident()

        def on_loop(fn: Callable[..., None]) -> Callable[..., None]:
            def call(*args: Any) -> None:
                if threading.get_ident() == loop_thread:
                    fn(*args)
                else:
                    loop.call_soon_threadsafe(fn, *args)

            return call

        report = on_loop(self.report)
        return [
            self.key_log.follow(
                on_loop(self.ring.apply), on_loop(lambda: self._read(self.key_topic)), report
            ),
            self.usage_log.follow(
                on_loop(self.quota.on_usage), on_loop(lambda: self._read(self.usage_topic)), report
            ),
        ]

    def _read(self, topic: str) -> None:
        self._unread.discard(topic)

    def report(self, problem: str) -> None:
        self.problem = problem

    # -- per request
    def check(self, authorization: str | None, service: str, now_ms: int) -> Verdict | None:
        """Let a request with this ``Authorization`` header call ``service`` now, and count
        one against its key's quota; the quota's verdict (None: the key has no quota)."""
        record = self.admit(authorization, service, now_ms)
        return self._take(record, service, 1, now_ms)

    def admit(self, authorization: str | None, service: str, now_ms: int) -> ApiKey:
        """The key of a request with this ``Authorization`` header, allowed to call
        ``service``, with something left of its quota (nothing is counted yet)."""
        record = self.authenticate(authorization)
        self.scope(record, service)
        used = self.quota.used(record, now_ms)
        q = record["quota"]
        if used is not None and q is not None and used[0] >= q["requests"]:
            refused = self.quota.take(record, now_ms)  # refused: counts nothing
            assert refused is not None and not refused.allowed
            self._refuse(record, service, refused, 1, now_ms)
        return record

    def charge(
        self, record: ApiKey, service: str, request_id: str, payload: Mapping[str, Any], now_ms: int
    ) -> Verdict | None:
        """Count what the request ``request_id`` of ``service`` with body ``payload`` costs
        against ``record``'s quota, or refuse it (429) without counting it when less is
        left; the quota's verdict (None: the key has no quota)."""
        cost = self.costs.get(service)
        price = 1 if cost is None else cost.of_request(request_id, payload)
        return self._take(record, service, price, now_ms)

    def charge_refused(self, record: ApiKey, service: str, now_ms: int) -> Verdict | None:
        """Count 1 for a request admitted and then refused before its cost was known (an
        unknown service, a bad body), when that fits in what is left; the verdict."""
        return self.quota.take(record, now_ms, 1, say_cost=service in self._weighted)

    def _take(self, record: ApiKey, service: str, cost: int, now_ms: int) -> Verdict | None:
        verdict = self.quota.take(record, now_ms, cost, say_cost=service in self._weighted)
        if verdict is None or verdict.allowed:
            return verdict
        self._refuse(record, service, verdict, cost, now_ms)

    def _refuse(
        self, record: ApiKey, service: str, verdict: Verdict, cost: int, now_ms: int
    ) -> NoReturn:
        weighted = service in self._weighted
        what = self.unit(record)
        quota = keys.quota_text(record, what)
        who = f"API key {record['key_id']} ({record['name']})"
        resets = (
            f"the window resets in {max(1, -(-(verdict.reset_ms - now_ms) // 1000))} s "
            "(see GET /v1/usage)"
        )
        if not weighted or verdict.remaining == 0:
            text = f"{who} has used its quota of {quota}; {resets}"
        elif cost > verdict.limit:
            text = (
                f"a request of service {service!r} costs {cost} {what} (the quota weights of "
                f"the models that score it), more than the whole quota of {who}, {quota}: ask "
                f"for a key with a larger quota"
            )
        else:
            text = (
                f"a request of service {service!r} costs {cost} {what} (the quota weights of "
                f"the models that score it) and {who} has {verdict.remaining} left of its quota "
                f"of {quota}; {resets}"
            )
        raise QuotaExceeded(text, limit_headers=verdict.headers(now_ms))

    def unit(self, record: ApiKey) -> str:
        """What ``record``'s quota counts: requests, or tokens when a service of its scope
        gives its models quota weights."""
        if not self._weighted:
            return REQUESTS
        return unit(record["services"], self._weighted)

    def authenticate(self, authorization: str | None) -> ApiKey:
        """The valid key of an ``Authorization`` header, whatever its services."""
        if not self.ready:
            raise KeysUnavailable(
                f"this proxy replica has not read the API keys and their usage yet "
                f"({self.problem}); retry shortly or on another replica"
            )
        if authorization is None:
            raise Unauthorized(
                "no API key: send 'Authorization: Bearer <key>' (make a key with "
                "`rendezvous keys create`)"
            )
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key or len(key) > MAX_KEY_CHARS:
            raise Unauthorized(
                "the Authorization header is not 'Bearer <key>'; send the key after 'Bearer '",
                error="invalid_token",
            )
        record = self.ring.by_digest.get(self._digest(key))
        if record is None:
            raise Unauthorized(
                "the API key is not known to this deployment; check it was copied whole, or "
                "make one with `rendezvous keys create`",
                error="invalid_token",
            )
        if record["revoked_ms"] is not None:
            raise Unauthorized(
                f"API key {record['key_id']} ({record['name']}) was revoked; ask for a new key",
                error="invalid_token",
            )
        return record

    def scope(self, record: ApiKey, service: str | None) -> None:
        """Refuse a key not allowed to call ``service`` (None: a request of no known service,
        which has nothing to check)."""
        if service is not None and not keys.allows(record, service):
            raise Forbidden(
                f"API key {record['key_id']} ({record['name']}) may call "
                f"{keys.scope_text(record)}, not {service[:64]!r}; use a key for that service "
                f"(`rendezvous keys create --service {service[:64]}`)"
            )

    def usage(self, record: ApiKey, now_ms: int) -> dict[str, Any]:
        """The body of GET /v1/usage for ``record``'s key."""
        body: dict[str, Any] = {
            "key_id": record["key_id"],
            "name": record["name"],
            "services": record["services"],
            "quota": None,
        }
        used = self.quota.used(record, now_ms)
        q = record["quota"]
        if used is not None and q is not None:
            count, start, end = used
            body["quota"] = {
                "requests": q["requests"],
                "period_ms": q["period_ms"],
                "window_start_ms": start,
                "window_end_ms": end,
                "used": count,
                "remaining": max(0, q["requests"] - count),
                "unit": self.unit(record),
            }
        body["costs"] = {
            name: cost.most
            for name, cost in sorted(self.costs.items())
            if keys.allows(record, name)
        }
        return body

    def _digest(self, key: str) -> str:
        cache = self._digests
        found = cache.get(key)
        if found is None:
            found = cache[key] = keys.digest(key)
        return found
