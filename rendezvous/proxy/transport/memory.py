"""The in-memory transport: the proxy without Kafka, for tests and experiments.

Every record the proxy produces is kept in order; results are fed in by hand
(:meth:`InMemoryTransport.inject_result`) or from a callback on each produced record, and
readiness and failures are switched on demand.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from typing import Any

from rendezvous import heartbeat, records, serde, topics
from rendezvous.proxy.errors import KafkaUnavailable
from rendezvous.proxy.transport.base import ErrorHandler, Record, ResultHandler, Transport


class InMemoryTransport(Transport):
    """Keeps produced records in :attr:`records`; a test feeds results with :meth:`inject_result`.

    ``on_produce(transport, record)`` runs (on the event loop) after each record is kept, so a
    test can answer a request as soon as the proxy produces it. Set :attr:`fail_produce` to make
    ``produce`` raise, :attr:`fail_delivery` to report a delivery failure,
    :attr:`hold_delivery` to leave records unacknowledged (a broker that is down), and call
    :meth:`set_ready` to flip readiness.
    """

    def __init__(
        self,
        *,
        ready: bool = True,
        on_produce: Callable[[InMemoryTransport, Record], None] | None = None,
    ) -> None:
        self.records: list[Record] = []
        self.on_produce = on_produce
        self.fail_produce: str | None = None
        self.fail_delivery: str | None = None
        self.hold_delivery = False
        self.started = False
        self.closed = False
        self._ready = ready
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_result: ResultHandler | None = None

    def start(self, loop: asyncio.AbstractEventLoop, on_result: ResultHandler) -> None:
        self._loop, self._on_result = loop, on_result
        self.started, self.closed = True, False

    def close(self) -> None:
        self.closed = True

    def ready(self) -> bool:
        return self._ready

    def tick_partitions(self) -> int:
        return len(topics.HEARTBEAT)

    def detail(self) -> str:
        return "" if self._ready else "the in-memory transport was set not ready"

    def set_ready(self, ready: bool) -> None:
        self._ready = ready

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        timestamp_ms: int,
        on_error: ErrorHandler | None = None,
        on_delivered: Callable[[], None] | None = None,
    ) -> None:
        if self.fail_produce is not None:
            raise KafkaUnavailable(self.fail_produce)
        record = Record(topic, key, value, timestamp_ms)
        self.records.append(record)
        if self.fail_delivery is not None and on_error is not None and self._loop is not None:
            self._loop.call_soon(on_error, self.fail_delivery)
        elif self.fail_delivery is None and on_delivered is not None and not self.hold_delivery:
            if self._loop is not None:
                self._loop.call_soon(on_delivered)
            else:
                on_delivered()
        if self.on_produce is not None:
            self.on_produce(self, record)

    def tick(self, at_ms: int) -> int:
        if self.fail_produce is not None:
            raise KafkaUnavailable(self.fail_produce)
        for name in topics.HEARTBEAT:
            self.records.append(Record(name, None, heartbeat.tick(name), at_ms))
        return len(topics.HEARTBEAT)

    # -- helpers for tests
    def produced(self, kind: serde.Kind | None = None) -> list[dict[str, Any]]:
        """Decoded records produced so far (all, or only those of ``kind``); batches are
        unpacked into their items."""
        out = []
        for r in list(self.records):
            k, record = serde.decode(r.value)
            if k in serde.ITEM_OF:
                k, items = serde.ITEM_OF[k], record["items"]
            else:
                items = [record]
            if kind is None or k is kind:
                out.extend(items)
        return out

    def inject_result(self, result: Mapping[str, Any], *, timeout_s: float = 5.0) -> None:
        """Deliver a RESULT record as if read from Kafka (round-tripped through serde).

        From the event loop's thread it is scheduled; from any other thread (a test driving
        ``TestClient``) it returns once the proxy has handled it.
        """
        if self._loop is None or self._on_result is None:
            raise RuntimeError(
                "inject_result before the transport was started (use the app lifespan)"
            )
        record = serde.decode_as(serde.Kind.RESULT, serde.encode(serde.Kind.RESULT, dict(result)))
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._loop.call_soon(self._on_result, record)
            return
        done = threading.Event()
        on_result = self._on_result

        def deliver() -> None:
            try:
                on_result(record)
            finally:
                done.set()

        self._loop.call_soon_threadsafe(deliver)
        if not done.wait(timeout_s):
            raise TimeoutError(f"the proxy did not take the injected result within {timeout_s}s")

    @staticmethod
    def result_for(
        request: Mapping[str, Any],
        *,
        status: records.ResultStatus = "ok",
        output: Any = None,
        model: str | None = "m",
        version: str | None = "1",
        role: str | None = "champion",
        reason: str = "champion",
        error: str | None = None,
        decided_ms: int | None = None,
        reply_to: str | None = None,
    ) -> records.Result:
        """A RESULT record answering a decoded REQUEST record."""
        return records.result(
            request,
            status=status,
            model=model,
            version=version,
            role=role,
            output=None if output is None else serde.to_json(output),
            reason=reason,
            error=error,
            decided_ms=request["received_ms"] if decided_ms is None else decided_ms,
            reply_to=reply_to,
        )
