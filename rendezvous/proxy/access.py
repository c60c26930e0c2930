"""The API key check, and the quota, on the proxy's request path.

A :class:`Gate` holds the :class:`~rendezvous.access.keys.KeyRing` and the
:class:`~rendezvous.access.quota.QuotaBook` that the replica's followers of ``rdv.api-keys``
and ``rdv.usage`` keep current, and answers each request in O(1): the SHA-256 of a key sent
before is cached (an LRU of ``cache_size``), the record is one dict lookup by digest, the quota
a few more. It raises the proxy's errors (401, 403, 429, and 503 before both topics are read);
the app turns them into responses. Health, readiness, metrics and the API document do not pass
through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from cachetools import LRUCache

from rendezvous import serde, topics
from rendezvous.access import keys
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
    ) -> None:
        self.key_log, self.usage_log = key_log, usage_log
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
        it against its key's quota; the quota's verdict (None: the key has no quota)."""
        record = self.authenticate(authorization)
        self.scope(record, service)
        verdict = self.quota.take(record, now_ms)
        if verdict is not None and not verdict.allowed:
            raise QuotaExceeded(
                f"API key {record['key_id']} ({record['name']}) has used its quota of "
                f"{keys.quota_text(record)}; the window resets in "
                f"{max(1, -(-(verdict.reset_ms - now_ms) // 1000))} s (see GET /v1/usage)",
                limit_headers=verdict.headers(now_ms),
            )
        return verdict

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
            }
        return body

    def _digest(self, key: str) -> str:
        cache = self._digests
        found = cache.get(key)
        if found is None:
            found = cache[key] = keys.digest(key)
        return found
