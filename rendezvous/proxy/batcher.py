"""Requests leave the proxy in batches: one Kafka record for every request accepted within a few
milliseconds.

Every stage downstream (enrich, each model, the rendezvous join, the archive) pays per record
far more than per request, so the batch is the unit of work of the whole serving path: a model
scores a batch in one vectorised call, and the join keeps one state per batch.

Flush policy: a batch leaves as soon as the event loop is done with what it is handling, unless
the previous batch left less than ``interval_ms`` ago; then it leaves when the interval is up.
At light load every request leaves alone and at once; under load, batches leave every
``interval_ms`` with whatever arrived meanwhile (at most ``max_items``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from rendezvous import serde, topics
from rendezvous.clock import Clock
from rendezvous.proxy.transport import Transport

FailureHandler = Callable[[str, str], None]  # (request id, why)


class RequestBatcher:
    def __init__(
        self,
        transport: Transport,
        clock: Clock,
        on_failed: FailureHandler,
        *,
        interval_ms: int,
        max_items: int,
        on_flushed: Callable[[list[dict[str, Any]]], None] | None = None,
        on_delivered: Callable[[list[str]], None] | None = None,
        on_acked: Callable[[int], None] | None = None,
    ) -> None:
        self.transport = transport
        self.clock = clock
        self.on_failed = on_failed
        self.interval_ms = interval_ms
        self.max_items = max_items
        self.on_flushed = on_flushed
        self.on_delivered = on_delivered
        # Called with the milliseconds from a batch's produce call to Kafka's acknowledgement.
        self.on_acked = on_acked
        self.items: list[dict[str, Any]] = []
        self.last_flush_ms = -(1 << 62)
        self.batches = 0
        self.requests = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled: asyncio.Handle | asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def add(self, request: dict[str, Any]) -> None:
        """Queue one REQUEST record; it leaves with the next batch."""
        self.items.append(request)
        if len(self.items) >= self.max_items:
            self.flush()
        elif self._scheduled is None:
            loop = self._loop or asyncio.get_running_loop()
            wait_ms = self.last_flush_ms + self.interval_ms - self.clock()
            if wait_ms <= 0:
                self._scheduled = loop.call_soon(self.flush)
            else:
                self._scheduled = loop.call_later(wait_ms / 1000, self.flush)

    def flush(self) -> None:
        """Produce what is queued as one record (raises nothing: failures reach ``on_failed``)."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        items, self.items = self.items, []
        if not items:
            return
        now = self.clock()
        self.last_flush_ms = now
        batch_id = uuid.uuid4().hex
        rids = [r["request_id"] for r in items]
        try:
            value = serde.encode_batch(serde.Kind.REQUEST, batch_id, items)
            self.transport.produce(
                topics.REQUESTS,
                batch_id.encode(),
                value,
                now,
                lambda why: self._failed(rids, why),
                self._acked(rids, now),
            )
        except Exception as exc:  # KafkaUnavailable, or a record serde refused
            self._failed(rids, str(exc))
            return
        self.batches += 1
        self.requests += len(items)
        if self.on_flushed is not None:
            self.on_flushed(items)

    def _acked(self, rids: list[str], sent_ms: int) -> Callable[[], None] | None:
        delivered, acked = self.on_delivered, self.on_acked
        if delivered is None and acked is None:
            return None

        def on_ack() -> None:
            if acked is not None:
                acked(self.clock() - sent_ms)
            if delivered is not None:
                delivered(rids)

        return on_ack

    def _failed(self, rids: list[str], why: str) -> None:
        for rid in rids:
            self.on_failed(rid, why)
