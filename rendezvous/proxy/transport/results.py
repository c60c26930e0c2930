"""The proxy's results reader: one thread that reads the replica's results partition.

A replica reads one partition of the results topic, its reply partition, and its requests
name it (``reply_to`` is ``<replica>@<partition>``, see :mod:`rendezvous.replies`), so the
rendezvous job writes their results there and N replicas do not each read every result. The
partition is the setting ``results_partition``: a number, or by default a stable hash of the
replica's ID over the topic's partitions (replicas sharing one each keep their own results). With
``all``, the reader takes every partition, and picks up partitions added later.

Partitions are assigned at their end offsets, with no consumer group. Each batch is decoded and
its RESULT records handed to the event loop with ``call_soon_threadsafe``.
:class:`~rendezvous.proxy.transport.kafka.KafkaTransport` starts it beside its producer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from rendezvous import replies, serde
from rendezvous.proxy.settings import ProxySettings
from rendezvous.proxy.transport.base import ResultHandler

log = logging.getLogger(__name__)


class ResultsReader:
    """Reads ``topic`` until ``stop`` is set; :meth:`run` is the thread's target.

    ``on_problem(text)`` is told, in words for an operator, why no partition can be read yet;
    :attr:`assigned` turns true once one is.
    """

    POLL_S = 0.05
    CONSUME_BATCH = 500
    PARTITION_REFRESH_S = 30.0

    def __init__(
        self,
        settings: ProxySettings,
        topic: str,
        loop: asyncio.AbstractEventLoop,
        on_result: ResultHandler,
        stop: threading.Event,
        on_problem: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.topic = topic
        self._loop = loop
        self._on_result = on_result
        self._stop = stop
        self._on_problem = on_problem
        self.assigned = False
        # What this replica's requests carry in reply_to: set once its partition is assigned.
        self.reply_to = settings.replica_id
        self.decode_errors = 0
        self.results = 0

    def run(self) -> None:
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        topic = self.topic
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
                            self._on_problem(
                                f"results topic {topic} not found on {self.settings.bootstrap}; "
                                f"run `rendezvous up` first"
                            )
                        else:
                            new = self._wanted(sorted(tmd.partitions), assigned)
                            if new:
                                parts = [TopicPartition(topic, p, OFFSET_END) for p in new]
                                if assigned:
                                    consumer.incremental_assign(parts)
                                else:
                                    consumer.assign(parts)
                                assigned.update(new)
                                if self.settings.results_partition != "all":
                                    self.reply_to = replies.address(
                                        self.settings.replica_id, new[0]
                                    )
                                self.assigned = True
                    except Exception as exc:
                        self._on_problem(f"cannot read metadata of {topic}: {exc}")
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
                if batch:
                    self.results += len(batch)
                    self._loop.call_soon_threadsafe(self._deliver, batch)
        except RuntimeError:  # the loop closed under us during shutdown
            pass
        finally:
            consumer.close()

    def _wanted(self, partitions: list[int], assigned: set[int]) -> list[int]:
        """The partitions to assign now, of the topic's ``partitions``."""
        mode = self.settings.results_partition
        if mode == "all":
            return [p for p in partitions if p not in assigned]
        if assigned:
            return []  # a replica keeps its partition: its requests in flight name it
        fixed = self.settings.fixed_results_partition
        if fixed is None:
            return [partitions[replies.choose(self.settings.replica_id, len(partitions))]]
        if fixed not in partitions:
            self._on_problem(
                f"results topic {self.topic} has partitions 0-{len(partitions) - 1}, not "
                f"{fixed}: set results_partition (RDV_PROXY_RESULTS_PARTITION) to one of "
                "them, or auto"
            )
            return []
        return [fixed]

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        on_result = self._on_result
        if on_result is not None:
            for record in batch:
                on_result(record)
