"""The Kafka transport: confluent-kafka's producer, off the event loop.

:class:`KafkaTransport` keeps the event loop free: confluent-kafka's ``produce()`` only queues,
and three daemon threads do the blocking work — one polls the producer for delivery failures,
one reads *every* partition of the results topic
(:class:`~rendezvous.proxy.transport.results.ResultsReader`), one probes the cluster metadata
for readiness.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from rendezvous import heartbeat, topics
from rendezvous.proxy.errors import KafkaUnavailable
from rendezvous.proxy.settings import ProxySettings
from rendezvous.proxy.transport.base import ErrorHandler, ResultHandler, Transport
from rendezvous.proxy.transport.results import ResultsReader

log = logging.getLogger(__name__)


class KafkaTransport(Transport):
    """confluent-kafka producer plus an all-partitions results reader, off the event loop."""

    POLL_S = 0.05

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
        self._reader: ResultsReader | None = None
        self._producer: Any = None
        self._probe_ok = False
        self._problem = "not started"
        self._tick_partitions: dict[str, int] = {}

    # -- lifecycle
    def start(self, loop: asyncio.AbstractEventLoop, on_result: ResultHandler) -> None:
        from confluent_kafka import KafkaException, Producer

        self._loop = loop
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
        self._reader = ResultsReader(
            self.settings, self.results_topic, loop, on_result, self._stop, self._report
        )
        for name, target in (
            ("poll", self._poll_loop),
            ("results", self._reader.run),
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
        return self._probe_ok and self._reader is not None and self._reader.assigned

    def tick_partitions(self) -> int:
        return sum(self._tick_partitions.values())

    def detail(self) -> str:
        return "" if self.ready() else self._problem

    def reply_to(self, replica_id: str) -> str:
        # The reader's address names its partition once one is assigned (before that the
        # transport is not ready and no request is produced).
        return replica_id if self._reader is None else self._reader.reply_to

    @property
    def decode_errors(self) -> int:
        """Records on the results topic that could not be decoded (skipped)."""
        return 0 if self._reader is None else self._reader.decode_errors

    @property
    def results(self) -> int:
        """RESULT records read from the results topic and handed to the event loop."""
        return 0 if self._reader is None else self._reader.results

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

    def _report(self, problem: str) -> None:
        self._problem = problem

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
