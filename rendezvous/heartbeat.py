"""Heartbeats: the records that carry event time forward when no traffic does.

The rendezvous job's watermark is the minimum, over every partition it reads, of the newest
broker timestamp read from that partition. A heartbeat written into *every* partition of
:data:`rendezvous.topics.HEARTBEAT` therefore moves the watermark without ever letting it pass a
score that the broker stamped earlier on the same partition. The proxy writes them; so does
:class:`Heartbeat` for producers that bypass the proxy (batch clients, tests, benchmarks).

Cadence: fast (``interval_ms``) while a request may still be waiting for its deadline, slow
(``idle_interval_ms``) otherwise, so an idle system writes a handful of records per second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from rendezvous import serde, topics
from rendezvous.clock import now_ms
from rendezvous.kafka import KafkaConnection


def tick(topic: str) -> bytes:
    """The heartbeat for ``topic``: an empty batch of the kind it holds. Its broker timestamp is
    all it carries."""
    return serde.empty_batch(topics.ITEM_KIND[topic])


def partition_counts(metadata: Any, names: Iterable[str] = topics.HEARTBEAT) -> dict[str, int]:
    """Partitions per topic from confluent-kafka cluster metadata (missing topics left out)."""
    out = {}
    for name in names:
        tmd = metadata.topics.get(name)
        if tmd is not None and tmd.error is None and tmd.partitions:
            out[name] = len(tmd.partitions)
    return out


def produce_ticks(producer: Any, partitions: dict[str, int], at_ms: int) -> int:
    """Queue one heartbeat into every partition; return how many were queued."""
    n = 0
    for name, count in partitions.items():
        value = tick(name)
        for p in range(count):
            producer.produce(name, value, partition=p, timestamp=at_ms)
            n += 1
    return n


class Heartbeat:
    """A daemon thread writing heartbeats with its own producer until :meth:`close`.

    ``busy()`` switches to the fast cadence for ``busy_ms``; with ``busy_ms=None`` it always
    ticks fast.
    """

    def __init__(
        self,
        kafka: KafkaConnection,
        *,
        source: str = "heartbeat",
        interval_ms: int = 10,
        idle_interval_ms: int = 1000,
        names: Iterable[str] = topics.HEARTBEAT,
        always_busy: bool = True,
    ) -> None:
        from confluent_kafka import Producer

        self.source = source
        self.interval_s = interval_ms / 1000
        self.idle_interval_s = idle_interval_ms / 1000
        self.names = tuple(names)
        self.always_busy = always_busy
        self.sent = 0
        self._busy_until = 0.0
        self._stop = threading.Event()
        self._producer = Producer(
            kafka.client_config({"linger.ms": 0, "acks": 1, "client.id": source})
        )
        self._partitions = partition_counts(self._producer.list_topics(timeout=10), self.names)
        missing = set(self.names) - set(self._partitions)
        if missing:
            raise RuntimeError(
                f"no topic(s) {sorted(missing)} on {kafka.bootstrap}; run `rendezvous up`"
            )
        self._thread = threading.Thread(target=self._run, name=f"rdv-{source}", daemon=True)
        self._thread.start()

    def busy(self, for_ms: int) -> None:
        self._busy_until = max(self._busy_until, time.monotonic() + for_ms / 1000)

    def _run(self) -> None:
        while not self._stop.is_set():
            at_ms = now_ms()
            self.sent += produce_ticks(self._producer, self._partitions, at_ms)
            self._producer.poll(0)
            fast = self.always_busy or time.monotonic() < self._busy_until
            self._stop.wait(self.interval_s if fast else self.idle_interval_s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._producer.flush(2)

    def __enter__(self) -> Heartbeat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
