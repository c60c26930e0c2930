"""How the proxy talks to Kafka: a small interface, the real one, and an in-memory double.

The interface is four calls: :meth:`Transport.start` (with the event loop and the callback that
receives every decoded RESULT record), :meth:`Transport.produce` (never blocks; raises
:class:`~rendezvous.proxy.errors.KafkaUnavailable` when the record cannot even be queued, and
reports a later delivery failure through ``on_error`` on the event loop),
:meth:`Transport.ready` (cheap, cached) and :meth:`Transport.close`.

:class:`KafkaTransport` keeps the event loop free: confluent-kafka's ``produce()`` only queues,
and three daemon threads do the blocking work — one polls the producer for delivery failures,
one reads *every* partition of the results topic (``assign`` at the end offsets, no consumer
group, so every replica sees every result) and hands decoded batches to the loop with
``call_soon_threadsafe``, one probes the cluster metadata for readiness.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, NamedTuple

from rendezvous import heartbeat, records, serde, topics
from rendezvous.proxy.errors import KafkaUnavailable
from rendezvous.proxy.settings import ProxySettings

log = logging.getLogger(__name__)

ResultHandler = Callable[[dict[str, Any]], None]
ErrorHandler = Callable[[str], None]


class Record(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes
    timestamp_ms: int


class Transport:
    """What the proxy needs from Kafka. Subclasses implement all four methods."""

    def start(self, loop: asyncio.AbstractEventLoop, on_result: ResultHandler) -> None:
        """Begin delivering RESULT records to ``on_result``, called on ``loop``."""
        raise NotImplementedError

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        timestamp_ms: int,
        on_error: ErrorHandler | None = None,
        on_delivered: Callable[[], None] | None = None,
    ) -> None:
        """Queue one record; ``on_error(text)`` runs on the loop if delivery fails later,
        ``on_delivered()`` once the broker has acknowledged it."""
        raise NotImplementedError

    def tick(self, at_ms: int) -> int:
        """Queue one heartbeat into every partition of the heartbeat topics; return how many."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether Kafka is reachable (cached; must be cheap enough to call per request)."""
        raise NotImplementedError

    def tick_partitions(self) -> int:
        """How many partitions a heartbeat goes into (0 while unknown)."""
        raise NotImplementedError

    def detail(self) -> str:
        """Why the transport is not ready, in words for an operator."""
        return ""

    def close(self) -> None:
        """Stop background work and flush what is queued (may block briefly)."""
        raise NotImplementedError


# ---- the real one --------------------------------------------------------------------------
class KafkaTransport(Transport):
    """confluent-kafka producer plus an all-partitions results reader, off the event loop."""

    POLL_S = 0.05
    CONSUME_BATCH = 500
    PARTITION_REFRESH_S = 30.0

    def __init__(
        self,
        settings: ProxySettings,
        *,
        results_topic: str = topics.RESULTS,
        probe_topics: tuple[str, ...] = (topics.REQUESTS, topics.RESULTS, *topics.HEARTBEAT),
    ) -> None:
        self.settings = settings
        self.results_topic = results_topic
        self.probe_topics = probe_topics
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_result: ResultHandler | None = None
        self._producer: Any = None
        self._probe_ok = False
        self._assigned = False
        self._problem = "not started"
        self._tick_partitions: dict[str, int] = {}
        self.decode_errors = 0
        self.results = 0

    # -- lifecycle
    def start(self, loop: asyncio.AbstractEventLoop, on_result: ResultHandler) -> None:
        from confluent_kafka import KafkaException, Producer

        self._loop, self._on_result = loop, on_result
        conf = self.settings.kafka.client_config(
            {
                "client.id": f"rdv-proxy-{self.settings.replica_id}",
                "linger.ms": 0,
                "acks": 1,
                "enable.idempotence": False,
                "compression.type": "none",
                "message.timeout.ms": self.settings.delivery_timeout_ms,
                # Every delivery reports back: a request batch's acknowledgement is what lets a
                # timed-out request be told apart from one Kafka never took (503 against 504).
                # Records produced without a callback (heartbeats) cost one C-level no-op each.
                "delivery.report.only.error": False,
                # Producing to a missing topic is an error, not a silently auto-created topic.
                "allow.auto.create.topics": False,
                "error_cb": self._on_client_error,
            }
        )
        try:
            self._producer = Producer(conf)
        except KafkaException as exc:
            raise KafkaUnavailable(
                f"cannot create a Kafka producer for {self.settings.bootstrap}: {exc}; "
                f"check RDV_PROXY_BOOTSTRAP"
            ) from None
        self._problem = f"waiting for the first metadata probe of {self.settings.bootstrap}"
        for name, target in (
            ("poll", self._poll_loop),
            ("results", self._consume_loop),
            ("probe", self._probe_loop),
        ):
            t = threading.Thread(target=target, name=f"rdv-proxy-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5.0)
        self._threads.clear()
        if self._producer is not None:
            left = self._producer.flush(2.0)
            if left:
                log.warning("proxy closed with %d record(s) not delivered to Kafka", left)
            self._producer = None

    # -- hot path
    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        timestamp_ms: int,
        on_error: ErrorHandler | None = None,
        on_delivered: Callable[[], None] | None = None,
    ) -> None:
        producer = self._producer
        if producer is None:
            raise KafkaUnavailable("the Kafka transport is not started (or already closed)")
        try:
            if on_error is None:
                producer.produce(topic, value, key, timestamp=timestamp_ms)
            else:
                producer.produce(
                    topic,
                    value,
                    key,
                    on_delivery=partial(self._delivered, on_error, on_delivered),
                    timestamp=timestamp_ms,
                )
        except BufferError:
            raise KafkaUnavailable(
                f"the Kafka producer queue is full ({len(producer)} records waiting): Kafka at "
                f"{self.settings.bootstrap} is too slow or unreachable"
            ) from None
        except Exception as exc:  # KafkaException and friends
            raise KafkaUnavailable(f"cannot produce to topic {topic}: {exc}") from None

    def tick(self, at_ms: int) -> int:
        producer = self._producer
        if producer is None or not self._tick_partitions:
            return 0
        try:
            return heartbeat.produce_ticks(producer, self._tick_partitions, at_ms)
        except BufferError:
            raise KafkaUnavailable("the Kafka producer queue is full; heartbeat skipped") from None
        except Exception as exc:
            raise KafkaUnavailable(f"cannot produce a heartbeat: {exc}") from None

    def ready(self) -> bool:
        return self._probe_ok and self._assigned

    def tick_partitions(self) -> int:
        return sum(self._tick_partitions.values())

    def detail(self) -> str:
        return "" if self.ready() else self._problem

    # -- background threads and callbacks (never on the event loop)
    def _delivered(
        self, on_error: ErrorHandler, on_delivered: Callable[[], None] | None, err: Any, msg: Any
    ) -> None:
        if self._loop is None:
            return
        if err is not None:
            text = f"delivery to {msg.topic()} failed: {err.str()}"
            self._loop.call_soon_threadsafe(on_error, text)
        elif on_delivered is not None:
            self._loop.call_soon_threadsafe(on_delivered)

    def _on_client_error(self, err: Any) -> None:
        from confluent_kafka import KafkaError

        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._probe_ok = False
            self._problem = f"Kafka at {self.settings.bootstrap}: {err.str()}"

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            producer = self._producer
            if producer is None:
                return
            producer.poll(self.POLL_S)

    def _probe_loop(self) -> None:
        interval = self.settings.ready_probe_interval_ms / 1000
        while not self._stop.is_set():
            producer = self._producer
            if producer is None:
                return
            try:
                md = producer.list_topics(timeout=max(interval, 0.5))
                missing = [
                    t
                    for t in self.probe_topics
                    if t not in md.topics or md.topics[t].error is not None
                ]
                if missing:
                    self._probe_ok = False
                    self._problem = (
                        f"Kafka at {self.settings.bootstrap} has no topic(s) "
                        f"{', '.join(missing)}; run `rendezvous up` first"
                    )
                else:
                    self._tick_partitions = heartbeat.partition_counts(md)
                    self._probe_ok = True
            except Exception as exc:
                self._probe_ok = False
                self._problem = (
                    f"Kafka at {self.settings.bootstrap} is not reachable ({exc}); run "
                    f"`rendezvous up` first or set RDV_PROXY_BOOTSTRAP"
                )
            self._stop.wait(interval)

    def _consume_loop(self) -> None:
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        topic = self.results_topic
        consumer = Consumer(
            self.settings.kafka.client_config(
                {
                    "client.id": f"rdv-proxy-{self.settings.replica_id}-results",
                    # Required by the client; unused: partitions are assigned, never subscribed.
                    "group.id": f"rdv-proxy-{self.settings.replica_id}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "enable.partition.eof": False,
                    # The broker answers a fetch as soon as a record arrives (fetch.min.bytes 1), so
                    # a long wait costs no latency; a short one costs the broker a request per
                    # wait while the results topic is quiet.
                    "fetch.wait.max.ms": 500,
                    # An answer is worth more early than committed.
                    "isolation.level": "read_uncommitted",
                    "allow.auto.create.topics": False,
                }
            )
        )
        assigned: set[int] = set()
        next_refresh = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_refresh:
                    next_refresh = now + (self.PARTITION_REFRESH_S if assigned else 0.5)
                    try:
                        md = consumer.list_topics(topic, timeout=1.0)
                        tmd = md.topics.get(topic)
                        if tmd is None or tmd.error is not None or not tmd.partitions:
                            self._problem = (
                                f"results topic {topic} not found on {self.settings.bootstrap}; "
                                f"run `rendezvous up` first"
                            )
                        else:
                            new = sorted(set(tmd.partitions) - assigned)
                            if new:
                                parts = [TopicPartition(topic, p, OFFSET_END) for p in new]
                                if assigned:
                                    consumer.incremental_assign(parts)
                                else:
                                    consumer.assign(parts)
                                assigned.update(new)
                                self._assigned = True
                    except Exception as exc:
                        self._problem = f"cannot read metadata of {topic}: {exc}"
                if not assigned:
                    self._stop.wait(0.2)
                    continue
                # consume() waits for a full batch or its whole timeout, so block in poll()
                # for the first record only, then take whatever else is already fetched.
                first = consumer.poll(self.POLL_S)
                if first is None:
                    continue
                msgs = [first, *consumer.consume(self.CONSUME_BATCH - 1, 0)]
                batch = []
                for m in msgs:
                    if m.error() is not None:
                        continue
                    try:
                        kind, _, items = serde.decode_items(m.value())
                    except serde.SerdeError:
                        self.decode_errors += 1
                        if self.decode_errors in (1, 10, 100) or self.decode_errors % 10_000 == 0:
                            log.warning(
                                "skipped %d undecodable record(s) on %s",
                                self.decode_errors,
                                topic,
                            )
                        continue
                    if kind is serde.Kind.RESULT:
                        batch.extend(items)
                if batch and self._loop is not None:
                    self.results += len(batch)
                    self._loop.call_soon_threadsafe(self._deliver, batch)
        except RuntimeError:  # the loop closed under us during shutdown
            pass
        finally:
            consumer.close()

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        on_result = self._on_result
        if on_result is not None:
            for record in batch:
                on_result(record)


# ---- the test double -----------------------------------------------------------------------
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
