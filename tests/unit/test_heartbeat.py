"""Heartbeat production: one tick into every partition of every heartbeat topic, over a fake
producer and fake cluster metadata."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import confluent_kafka
import pytest

from rendezvous import heartbeat, serde, topics
from rendezvous.heartbeat import Heartbeat, partition_counts, produce_ticks
from rendezvous.kafka import KafkaConnection

pytestmark = pytest.mark.unit

T0 = 1_700_000_000_000
KAFKA = KafkaConnection("broker-1:9092,broker-2:9092", {"security.protocol": "PLAINTEXT"})


@dataclass(frozen=True)
class Produced:
    topic: str
    partition: int
    value: bytes
    timestamp: int


def cluster(
    counts: dict[str, int], errors: dict[str, confluent_kafka.KafkaError] | None = None
) -> SimpleNamespace:
    """Cluster metadata as confluent-kafka lays it out: ``topics[name].partitions`` (a dict of
    partition id to partition metadata) and ``topics[name].error`` (None, or the error the
    broker reports for that topic)."""
    errors = errors or {}
    return SimpleNamespace(
        topics={
            name: SimpleNamespace(
                error=errors.get(name),
                partitions={p: SimpleNamespace(id=p) for p in range(count)},
            )
            for name, count in counts.items()
        }
    )


SIX_AND_THREE = {topics.MODEL_INPUT: 6, topics.SCORES: 3}


@dataclass
class FakeProducer:
    """Records what ``produce`` receives; ``list_topics`` answers with ``meta``."""

    config: dict = field(default_factory=dict)
    meta: SimpleNamespace = field(default_factory=lambda: cluster(SIX_AND_THREE))
    produced: list[Produced] = field(default_factory=list)
    polls: int = 0
    flushed: list[float] = field(default_factory=list)
    # set once ``wanted`` records were produced (the thread's ticks arrive asynchronously)
    wanted: int = 0
    enough: threading.Event = field(default_factory=threading.Event)

    def produce(self, topic, value=None, *, partition=-1, timestamp=0, **kw) -> None:
        assert not kw, f"unexpected produce arguments {kw}"
        self.produced.append(Produced(topic, partition, value, timestamp))
        if self.wanted and len(self.produced) >= self.wanted:
            self.enough.set()

    def poll(self, timeout: float = 0) -> int:
        self.polls += 1
        return 0

    def flush(self, timeout: float = -1) -> int:
        self.flushed.append(timeout)
        return 0

    def list_topics(self, topic=None, timeout: float = -1) -> SimpleNamespace:
        return self.meta


def assert_is_tick(record: Produced) -> None:
    """The value is an empty batch of the topic's kind: a heartbeat, no items, no ID."""
    assert serde.is_heartbeat(record.value), record
    kind, batch_id, items = serde.decode_items(record.value)
    assert kind == topics.ITEM_KIND[record.topic]
    assert (batch_id, items) == ("", [])


# ---- tick ------------------------------------------------------------------------------


@pytest.mark.parametrize("topic", topics.HEARTBEAT)
def test_a_tick_is_an_empty_batch_of_the_kind_its_topic_holds(topic):
    value = heartbeat.tick(topic)
    assert serde.is_heartbeat(value)
    kind, record = serde.decode(value)
    assert kind == serde.BATCH_OF[topics.ITEM_KIND[topic]]
    assert record == {"batch_id": "", "items": []}


# ---- partition_counts ------------------------------------------------------------------


def test_partition_counts_are_read_from_the_metadata_of_every_heartbeat_topic():
    meta = cluster({**SIX_AND_THREE, topics.REQUESTS: 12, topics.RESULTS: 4})
    assert partition_counts(meta) == SIX_AND_THREE  # only the heartbeat topics


def test_partition_counts_leave_out_missing_failed_and_empty_topics():
    no_leader = confluent_kafka.KafkaError(confluent_kafka.KafkaError.LEADER_NOT_AVAILABLE)
    meta = cluster(
        {topics.MODEL_INPUT: 2, topics.SCORES: 3, topics.DECISIONS: 0},
        errors={topics.SCORES: no_leader},
    )
    assert partition_counts(meta) == {topics.MODEL_INPUT: 2}
    assert partition_counts(meta, [topics.DECISIONS, topics.RESULTS]) == {}


def test_partition_counts_take_the_topics_asked_for():
    meta = cluster({topics.DECISIONS: 5, topics.MODEL_INPUT: 1})
    assert partition_counts(meta, [topics.DECISIONS]) == {topics.DECISIONS: 5}


# ---- produce_ticks ---------------------------------------------------------------------


def test_one_tick_goes_into_every_partition_of_every_topic_stamped_with_the_given_time():
    producer = FakeProducer()
    n = produce_ticks(producer, SIX_AND_THREE, at_ms=T0)
    assert n == 9 == len(producer.produced)
    assert sorted((r.topic, r.partition) for r in producer.produced) == sorted(
        [(topics.MODEL_INPUT, p) for p in range(6)] + [(topics.SCORES, p) for p in range(3)]
    )
    assert {r.timestamp for r in producer.produced} == {T0}
    for record in producer.produced:
        assert_is_tick(record)


def test_ticks_of_later_rounds_carry_their_own_time():
    producer = FakeProducer()
    produce_ticks(producer, {topics.SCORES: 2}, at_ms=T0)
    produce_ticks(producer, {topics.SCORES: 2}, at_ms=T0 + 10)
    assert [(r.partition, r.timestamp) for r in producer.produced] == [
        (0, T0),
        (1, T0),
        (0, T0 + 10),
        (1, T0 + 10),
    ]


def test_no_partitions_no_ticks():
    producer = FakeProducer()
    assert produce_ticks(producer, {}, at_ms=T0) == 0
    assert produce_ticks(producer, {topics.SCORES: 0}, at_ms=T0) == 0
    assert producer.produced == []


# ---- the Heartbeat thread --------------------------------------------------------------


class Producers:
    """Stands in for confluent_kafka.Producer: every producer made, on the metadata set here."""

    def __init__(self) -> None:
        self.made: list[FakeProducer] = []
        self.meta = cluster(SIX_AND_THREE)
        self.wanted = 0  # how many records make a producer's ``enough`` event fire

    def __call__(self, config: dict) -> FakeProducer:
        self.made.append(FakeProducer(config=config, meta=self.meta, wanted=self.wanted))
        return self.made[-1]

    def __getitem__(self, i: int) -> FakeProducer:
        return self.made[i]


@pytest.fixture
def producers(monkeypatch) -> Producers:
    """Heartbeat imports confluent_kafka.Producer when it is built: it gets the fake."""
    factory = Producers()
    monkeypatch.setattr(confluent_kafka, "Producer", factory)
    return factory


def test_the_heartbeat_ticks_every_partition_with_the_wall_clock_until_closed(producers):
    producers.wanted = 18  # two rounds over 6 + 3 partitions
    before = int(time.time() * 1000)
    with Heartbeat(KAFKA, source="batch-client", interval_ms=1) as hb:
        producer = producers[0]
        assert producer.enough.wait(10), f"only {len(producer.produced)} ticks within 10 s"
    after = int(time.time() * 1000)
    assert not hb._thread.is_alive()
    assert hb.sent == len(producer.produced) >= 18
    assert producer.flushed, "close() flushes the producer"
    rounds: dict[int, list[Produced]] = {}
    for record in producer.produced:
        assert_is_tick(record)
        assert before <= record.timestamp <= after
        rounds.setdefault(record.timestamp, []).append(record)
    # every round that produced at one time stamp covered each partition once (a round may
    # share its millisecond with the next one, then it covered each partition a multiple)
    for stamped in rounds.values():
        counts = {}
        for r in stamped:
            counts[(r.topic, r.partition)] = counts.get((r.topic, r.partition), 0) + 1
        assert len(counts) == 9 and len(set(counts.values())) == 1, counts


def test_the_heartbeats_producer_uses_the_connection_and_sends_at_once(producers):
    producers.wanted = 9
    with Heartbeat(KAFKA, source="loadgen") as hb:
        assert producers[0].enough.wait(10)
    assert producers[0].config == {
        "bootstrap.servers": "broker-1:9092,broker-2:9092",
        "security.protocol": "PLAINTEXT",
        "linger.ms": 0,
        "acks": 1,
        "client.id": "loadgen",
    }
    assert hb._thread.name == "rdv-loadgen" and hb._thread.daemon


def test_a_missing_heartbeat_topic_is_an_error_naming_it_and_the_fix(producers):
    producers.meta = cluster({topics.MODEL_INPUT: 6})
    with pytest.raises(RuntimeError) as err:
        Heartbeat(KAFKA)
    message = str(err.value)
    assert repr([topics.SCORES]) in message and topics.MODEL_INPUT not in message
    assert "broker-1:9092,broker-2:9092" in message and "rendezvous up" in message
    assert producers[0].produced == []


def test_the_heartbeat_writes_only_the_topics_it_is_given(producers):
    producers.wanted = 3
    producers.meta = cluster({topics.SCORES: 3})  # the other topic is not needed
    with Heartbeat(KAFKA, names=[topics.SCORES]):
        assert producers[0].enough.wait(10)
    assert {r.topic for r in producers[0].produced} == {topics.SCORES}


class Waits:
    """Stands in for the stop event: records each wait's length, stops after ``rounds``."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.waits: list[float] = []

    def is_set(self) -> bool:
        return len(self.waits) >= self.rounds

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        return self.is_set()

    def set(self) -> None:
        self.rounds = 0


def test_the_cadence_is_slow_when_idle_and_fast_while_busy(producers, monkeypatch):
    hb = Heartbeat(KAFKA, interval_ms=10, idle_interval_ms=1000, always_busy=False)
    hb.close()  # stop the thread; the loop is run below, in this thread, on a fake clock
    clock = SimpleNamespace(now=100.0)
    monkeypatch.setattr(heartbeat.time, "monotonic", lambda: clock.now)

    hb._stop = Waits(rounds=1)
    hb._run()
    assert hb._stop.waits == [1.0]  # idle

    hb.busy(500)  # busy until 100.5
    hb._stop = Waits(rounds=1)
    hb._run()
    assert hb._stop.waits == [0.01]

    clock.now = 100.6  # past the busy period
    hb._stop = Waits(rounds=1)
    hb._run()
    assert hb._stop.waits == [1.0]


def test_busy_never_shortens_an_earlier_busy_period(producers, monkeypatch):
    hb = Heartbeat(KAFKA, always_busy=False)
    hb.close()
    monkeypatch.setattr(heartbeat.time, "monotonic", lambda: 50.0)
    hb.busy(2_000)
    hb.busy(100)
    assert hb._busy_until == pytest.approx(52.0)


def test_always_busy_ticks_fast_with_no_call_to_busy(producers):
    hb = Heartbeat(KAFKA, interval_ms=25, idle_interval_ms=5_000)
    hb.close()
    hb._stop = Waits(rounds=2)
    hb._run()
    assert hb._stop.waits == [0.025, 0.025]
    assert hb.sent >= 18  # the thread's rounds and these two, each over 6 + 3 partitions
