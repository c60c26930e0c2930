"""Where API keys and their usage live: compacted topics, read whole and followed.

On ``rdv.api-keys`` every record is one key's latest state, keyed by its key id; on
``rdv.usage`` one replica's count of one key's requests in the current quota window. So
compaction keeps exactly what a reader needs, and the topics survive any restart. The CLI reads
a log whole (:meth:`read`) and appends to it (:meth:`publish`); every proxy replica *follows*
both (:meth:`follow`): reads from the start, says when it has caught up with the end it saw on
starting, and goes on applying new records as they come, so a key made or revoked on one host
reaches every replica within a second.

:class:`KafkaRecordLog` is such a topic on a broker (:class:`KafkaKeyLog`,
:class:`KafkaUsageLog`); :class:`MemoryLog` is the same in a list, for tests and experiments.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from rendezvous import serde, topics
from rendezvous.errors import RendezvousError
from rendezvous.kafka import KafkaConnection

log = logging.getLogger(__name__)

Record = dict[str, Any]
OnRecord = Callable[
    [str, "Record | None"], None
]  # the record's key, the record (None: a tombstone)
KeyOf = Callable[[Record], str]


def key_id(record: Record) -> str:
    """The key of an API key record on its topic."""
    return record["key_id"]


def usage_key(record: Record) -> str:
    """The key of a usage record on its topic: one per API key and replica."""
    return f"{record['key_id']}/{record['replica_id']}"


class Following(Protocol):
    def close(self) -> None:
        """Stop following (may block briefly)."""
        ...


class KeyLog(Protocol):
    def read(self) -> dict[str, Record]:
        """The latest record of every key, by its key."""
        ...

    def publish(self, record: Record) -> None:
        """Append a record; it is on the log when this returns."""
        ...

    def follow(
        self,
        on_record: OnRecord,
        on_caught_up: Callable[[], None],
        on_problem: Callable[[str], None],
    ) -> Following:
        """Call ``on_record`` for every record, old and new, ``on_caught_up`` once the records
        that were there at the start have all been passed on, and ``on_problem(text)`` when the
        log cannot be read. Callbacks may come from another thread."""
        ...


# ---- in memory -----------------------------------------------------------------------------
class _MemoryFollowing:
    def __init__(self, owner: MemoryLog, on_record: OnRecord) -> None:
        self.owner, self.on_record = owner, on_record

    def close(self) -> None:
        if self in self.owner.followers:
            self.owner.followers.remove(self)


class MemoryLog:
    """A log in a list; followers get every record at once, on the publisher's thread."""

    key_of: KeyOf = staticmethod(key_id)

    def __init__(self, records: list[Record] | None = None) -> None:
        self.records: list[Record] = list(records or [])
        self.followers: list[_MemoryFollowing] = []

    def read(self) -> dict[str, Record]:
        return {self.key_of(r): r for r in self.records}

    def publish(self, record: Record) -> None:
        self.records.append(record)
        for following in list(self.followers):
            following.on_record(self.key_of(record), record)

    def follow(
        self,
        on_record: OnRecord,
        on_caught_up: Callable[[], None],
        on_problem: Callable[[str], None],
    ) -> Following:
        for record in self.records:
            on_record(self.key_of(record), record)
        on_caught_up()
        following = _MemoryFollowing(self, on_record)
        self.followers.append(following)
        return following


class MemoryKeyLog(MemoryLog):
    """API keys in a list."""


class MemoryUsageLog(MemoryLog):
    """Usage records in a list."""

    key_of = staticmethod(usage_key)


# ---- on Kafka ------------------------------------------------------------------------------
class KafkaRecordLog:
    """A compacted topic of records of one kind on a Kafka broker, keyed by ``key_of``."""

    FOLLOW_POLL_S = 0.2

    def __init__(
        self,
        kafka: KafkaConnection,
        *,
        topic: str,
        kind: serde.Kind,
        key_of: KeyOf,
        timeout_s: float = 10.0,
        client_id: str = "rdv-keys",
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.kind = kind
        self.key_of = key_of
        self.timeout_s = timeout_s
        self.client_id = client_id

    def decode(self, value: bytes | None, key: bytes | None) -> tuple[str, Record | None] | None:
        """(key, record) of one message; None (after a warning) for one of another kind."""
        if value is None:
            return (key.decode(errors="replace"), None) if key else None
        try:
            record = serde.decode_as(self.kind, value)
        except serde.SerdeError as exc:
            log.warning(
                "skipped a record on %s that is not %s: %s", self.topic, self.kind.name, exc
            )
            return None
        return self.key_of(record), record

    def _consumer(self):
        from confluent_kafka import Consumer

        return Consumer(
            self.kafka.client_config(
                {
                    "client.id": self.client_id,
                    # Required by the client; unused: partitions are assigned, never subscribed.
                    "group.id": self.client_id,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    # A revocation should reach the proxies soon after it is written.
                    "fetch.wait.max.ms": 200,
                    "allow.auto.create.topics": False,
                }
            )
        )

    def _partitions(self, consumer) -> list[tuple[int, int, int]]:
        """(partition, low, high) of every partition of the topic."""
        from confluent_kafka import TopicPartition

        meta = consumer.list_topics(self.topic, timeout=self.timeout_s).topics.get(self.topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise RendezvousError(
                f"topic {self.topic} not found on {self.kafka.bootstrap}"
                + (f" ({meta.error})" if meta is not None and meta.error else "")
                + "; run `rendezvous up` to create it"
            )
        out = []
        for p in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=self.timeout_s
            )
            out.append((p, low, high))
        return out

    def read(self) -> dict[str, Record]:
        from confluent_kafka import KafkaException, TopicPartition

        consumer = self._consumer()
        keys: dict[str, Record] = {}
        try:
            try:
                parts = self._partitions(consumer)
            except KafkaException as exc:
                raise RendezvousError(
                    f"could not read {self.topic} at {self.kafka.bootstrap}: {exc}; is Kafka up "
                    f"(`rendezvous status`)?"
                ) from exc
            ends = {p: high for p, low, high in parts if high > low}
            if not ends:
                return keys
            consumer.assign([TopicPartition(self.topic, p, low) for p, low, _ in parts])
            deadline = time.monotonic() + self.timeout_s
            while ends:
                if time.monotonic() > deadline:
                    raise RendezvousError(
                        f"could not read all of {self.topic} at {self.kafka.bootstrap} in "
                        f"{self.timeout_s:.0f}s; is Kafka up (`rendezvous status`)?"
                    )
                msg = consumer.poll(0.5)
                if msg is None:
                    self._drop_reached(consumer, ends)
                    continue
                if msg.error():
                    continue
                if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                    ends.pop(msg.partition(), None)
                decoded = self.decode(msg.value(), msg.key())
                if decoded is not None:
                    key, record = decoded
                    if record is None:
                        keys.pop(key, None)
                    else:
                        keys[key] = record
        finally:
            consumer.close()
        return keys

    def _drop_reached(self, consumer, ends: dict[int, int]) -> None:
        """Forget partitions whose position is at their end (compaction leaves offset gaps,
        so the last offset seen need not be high - 1)."""
        from confluent_kafka import TopicPartition

        positions = consumer.position([TopicPartition(self.topic, p) for p in ends])
        for tp in positions:
            if tp.offset >= 0 and tp.offset >= ends[tp.partition]:
                ends.pop(tp.partition, None)

    def publish(self, record: Record) -> None:
        from confluent_kafka import Producer

        producer = Producer(self.kafka.client_config({"linger.ms": 0, "acks": "all"}))
        key = self.key_of(record)
        producer.produce(self.topic, value=serde.encode(self.kind, dict(record)), key=key.encode())
        if producer.flush(self.timeout_s) != 0:
            raise RendezvousError(
                f"could not write {self.kind.name} record {key} to {self.topic} at "
                f"{self.kafka.bootstrap}; is Kafka up (`rendezvous status`)?"
            )

    def follow(
        self,
        on_record: OnRecord,
        on_caught_up: Callable[[], None],
        on_problem: Callable[[str], None],
    ) -> Following:
        return _KafkaFollowing(self, on_record, on_caught_up, on_problem)


class KafkaKeyLog(KafkaRecordLog):
    """The API key topic on a Kafka broker."""

    def __init__(self, kafka: KafkaConnection, *, topic: str = topics.API_KEYS, **kw: Any) -> None:
        super().__init__(kafka, topic=topic, kind=serde.Kind.API_KEY, key_of=key_id, **kw)


class KafkaUsageLog(KafkaRecordLog):
    """The usage topic on a Kafka broker."""

    def __init__(self, kafka: KafkaConnection, *, topic: str = topics.USAGE, **kw: Any) -> None:
        super().__init__(kafka, topic=topic, kind=serde.Kind.USAGE, key_of=usage_key, **kw)


class _KafkaFollowing:
    """A daemon thread that reads its log's topic from the start until closed."""

    def __init__(
        self,
        owner: KafkaRecordLog,
        on_record: OnRecord,
        on_caught_up: Callable[[], None],
        on_problem: Callable[[str], None],
    ) -> None:
        self.owner = owner
        self.on_record, self.on_caught_up, self.on_problem = on_record, on_caught_up, on_problem
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"rdv-follow-{owner.topic}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        owner, topic = self.owner, self.owner.topic
        consumer = owner._consumer()
        try:
            ends: dict[int, int] | None = None
            while ends is None and not self._stop.is_set():
                try:
                    parts = owner._partitions(consumer)
                except Exception as exc:  # not there yet, or Kafka down: try again
                    text = exc.message if isinstance(exc, RendezvousError) else str(exc)
                    self.on_problem(f"{topic} not read: {text}")
                    self._stop.wait(1.0)
                    continue
                consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p, _, _ in parts])
                ends = {p: high for p, low, high in parts if high > low}
            caught_up = False
            while not self._stop.is_set():
                if not caught_up and not ends:
                    caught_up = True
                    self.on_caught_up()
                msg = consumer.poll(owner.FOLLOW_POLL_S)
                if msg is None:
                    if ends:
                        owner._drop_reached(consumer, ends)
                    continue
                if msg.error():
                    self.on_problem(f"reading {topic}: {msg.error()}")
                    continue
                if ends and msg.offset() + 1 >= ends.get(msg.partition(), 0):
                    ends.pop(msg.partition(), None)
                decoded = owner.decode(msg.value(), msg.key())
                if decoded is not None:
                    self.on_record(*decoded)
        except RuntimeError:  # the event loop closed under us during shutdown
            pass
        finally:
            consumer.close()
