"""One replica's book of requests and results: what it waits on, what it accepted, what it saw.

Plain Python, with no event loop and no HTTP: the clock is passed in, a waiting sync request is
an opaque *waiter* (the app's future), and every decision is a return value or one of the
proxy's exceptions. The app applies them (resolves a future, writes a response).

- ``pending``: sync requests waiting here, request id -> waiter.
- ``accepted``: async requests accepted here and not answered yet, oldest first, at most
  ``cache_size``; an expired one is kept ``cache_ttl_ms`` longer so its status is a 504.
- ``cache``: every result seen on the replica's reply partition of the results topic (its
  own requests', and those of replicas sharing the partition), an LRU of at most ``cache_size`` where each result lives ``cache_ttl_ms``; the first answer
  for a request id wins.
- ``unconfirmed``: requests produced that the broker has not acknowledged yet.
- ``bodies``: the fingerprint of the body of every request produced here, the newest
  ``cache_size``. A request id that is pending, accepted or cached may come again: with the
  same body it is a retry (the answer, or "in flight"), with another it is a conflict. A result
  of a request another replica took has no fingerprint here, so only its service is checked.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cachetools import LRUCache

from rendezvous.clock import Clock
from rendezvous.proxy.errors import (
    AnswerTimeout,
    DuplicateRequest,
    KafkaUnavailable,
    RequestIdConflict,
    UnknownRequest,
)

Result = dict[str, Any]
Waiter = TypeVar("Waiter")


def fingerprint(body: bytes) -> bytes:
    """A 64-bit hash of a request's raw body: what tells a retry from another request."""
    return hashlib.blake2b(body, digest_size=8).digest()


@dataclass(slots=True)
class Accepted:
    """An async request accepted on this replica."""

    expires_ms: int  # its SLA plus the result grace
    service: str
    failure: str | None = None  # why Kafka did not take it, once known


class ResultCache(LRUCache):
    """An LRU of results by request id, each with the time it arrived; an entry older than
    ``ttl_ms`` is absent (and dropped when looked up). ``get`` gives ``(arrived_ms, result)``.

    Not cachetools' TTLCache, and no ``(arrived_ms, result)`` tuple per entry: both are objects
    Python's cyclic garbage collector tracks and walks on every full collection, and with
    100,000 results such a collection paused the proxy's event loop for tens of milliseconds.
    Here the order lives in an OrderedDict, the arrival times in a dict of strings to ints, and
    a decoded result (a dict of strings and numbers) is not tracked by the collector at all.
    """

    def __init__(self, maxsize: int, ttl_ms: int, clock: Clock) -> None:
        super().__init__(maxsize)
        self.ttl_ms = ttl_ms
        self.clock = clock
        self._arrived: dict[str, int] = {}

    def put(self, rid: str, result: Result) -> None:
        """Keep ``result``, arrived now."""
        self._arrived[rid] = self.clock()
        self[rid] = result

    def get(self, rid: str, default: None = None) -> tuple[int, Result] | None:  # type: ignore[override]
        result = super().get(rid)
        return default if result is None else (self._arrived[rid], result)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._arrived.pop(key, None)

    def __contains__(self, key: object) -> bool:
        if not super().__contains__(key):
            return False
        if self.clock() - self._arrived[key] <= self.ttl_ms:  # type: ignore[index]
            return True
        del self[key]  # type: ignore[arg-type]
        return False


class ReplicaBook(Generic[Waiter]):
    """The bookkeeping of one proxy replica (see the module docstring)."""

    def __init__(
        self, *, cache_size: int, cache_ttl_ms: int, result_grace_ms: int, clock: Clock
    ) -> None:
        self.cache_size = cache_size
        self.cache_ttl_ms = cache_ttl_ms
        self.result_grace_ms = result_grace_ms
        self.clock = clock
        self.pending: dict[str, Waiter] = {}
        self.accepted: OrderedDict[str, Accepted] = OrderedDict()
        # request id -> (arrived_ms, result). A result is served while it is at most
        # cache_ttl_ms old.
        self.cache = ResultCache(cache_size, cache_ttl_ms, clock)
        self.unconfirmed: set[str] = set()
        self.bodies: OrderedDict[str, bytes] = OrderedDict()

    # -- a new request
    def check_new(self, rid: str, service: str, body: bytes) -> tuple[int, Result] | None:
        """Refuse an id already in flight; return ``(arrived_ms, result)`` of a finished one.

        ``body`` is the request's :func:`fingerprint`: an id this replica took for another
        body is a conflict, whether that request is in flight or answered."""
        if rid in self.pending or rid in self.accepted:
            self._same_body(rid, body)
            raise DuplicateRequest(
                f"request {rid} is already in flight on this replica; wait for its answer "
                f"(GET /v1/requests/{rid}) or send a new X-Request-ID"
            )
        hit = self.cache.get(rid)
        if hit is not None:
            if hit[1]["service"] != service:
                raise DuplicateRequest(
                    f"request id {rid} was already used for service {hit[1]['service']!r}; "
                    f"send a new X-Request-ID"
                )
            self._same_body(rid, body)
        return hit

    def _same_body(self, rid: str, body: bytes) -> None:
        bodies = self.bodies
        seen = bodies.get(rid)
        if seen is None:
            return
        if seen != body:
            raise RequestIdConflict(
                f"request id {rid} was already used for another body; send a new "
                f"X-Request-ID for a new request (a retry gets the first answer only with the "
                f"same body, byte for byte)",
                request_id=rid,
            )
        bodies.move_to_end(rid)  # a retried id is kept as long as a new one

    def produced(self, rid: str, body: bytes) -> None:
        """The request, of body fingerprint ``body``, was queued for Kafka; its
        acknowledgement is outstanding."""
        self.unconfirmed.add(rid)
        bodies = self.bodies
        bodies.pop(rid, None)  # an id seen long ago and forgotten starts again as the newest
        bodies[rid] = body
        if len(bodies) > self.cache_size:
            bodies.popitem(last=False)

    def accept(self, rid: str, service: str, expires_ms: int) -> None:
        """Keep an async request until its result, or for a while after ``expires_ms``."""
        accepted = self.accepted
        accepted[rid] = Accepted(expires_ms, service)
        if len(accepted) > self.cache_size:
            accepted.popitem(last=False)

    def wait(self, rid: str, waiter: Waiter) -> None:
        self.pending[rid] = waiter

    def stop_waiting(self, rid: str) -> None:
        self.pending.pop(rid, None)

    def judge(self, rid: str) -> bool:
        """A sync request got its answer or gave up: whether Kafka had still not taken it.

        A later acknowledgement changes nothing, so nothing is kept for it."""
        unacknowledged = rid in self.unconfirmed
        self.unconfirmed.discard(rid)
        return unacknowledged

    # -- from Kafka
    def on_result(self, result: Result) -> Waiter | None:
        """Record a result; return the waiter it answers on this replica, if any."""
        rid = result["request_id"]
        cache = self.cache
        if rid not in cache:  # the first answer wins; a duplicate changes nothing
            cache.put(rid, result)
        self.accepted.pop(rid, None)
        # A result proves Kafka took the request, whether or not its acknowledgement came first.
        self.unconfirmed.discard(rid)
        return self.pending.get(rid)

    def delivered(self, rids: Iterable[str]) -> None:
        self.unconfirmed.difference_update(rids)

    def delivery_failed(self, rid: str, text: str) -> Waiter | None:
        """Kafka refused the request: remember why; return the waiter to fail, if any."""
        self.unconfirmed.discard(rid)
        entry = self.accepted.get(rid)
        if entry is not None:
            entry.failure = text
        return self.pending.get(rid)

    # -- GET /v1/requests/{id}
    def service_of(self, rid: str) -> str | None:
        """The service of a request this replica has a result for or accepted, else None."""
        hit = self.cache.get(rid)
        if hit is not None:
            return hit[1]["service"]
        entry = self.accepted.get(rid)
        return None if entry is None else entry.service

    def status(self, rid: str) -> tuple[int, Result] | None:
        """``(arrived_ms, result)`` once known, None while pending, else the error to answer."""
        hit = self.cache.get(rid)
        if hit is not None:
            return hit
        if rid in self.pending:
            return None
        entry = self.accepted.get(rid)
        if entry is not None:
            if entry.failure is not None:
                raise KafkaUnavailable(f"request {rid} did not reach Kafka: {entry.failure}")
            now = self.clock()
            if now <= entry.expires_ms:
                return None
            if now - entry.expires_ms <= self.cache_ttl_ms:
                if rid in self.unconfirmed:
                    raise KafkaUnavailable(
                        f"request {rid} of service {entry.service!r} has no result and Kafka "
                        f"has not acknowledged it: it may never reach the pipeline (or reach it "
                        f"late, and then be decided and archived as deadline_exceeded); check "
                        f"that Kafka is up (`rendezvous status`)"
                    )
                raise AnswerTimeout(
                    f"no result for request {rid} of service {entry.service!r} by its deadline "
                    f"plus {self.result_grace_ms} ms grace; Kafka took the request, so it is "
                    f"still decided and archived downstream; check that the stream jobs run "
                    f"(`rendezvous status`)"
                )
            del self.accepted[rid]
        raise UnknownRequest(
            f"request {rid} is not known to this replica: it was never accepted here and no "
            f"result for it was seen in the last {self.cache_ttl_ms} ms (results "
            f"are kept for that long, at most {self.cache_size} of them); if it was "
            f"just submitted to another replica, retry shortly"
        )
