"""The proxy's request batches: at once when quiet, every interval under load."""

from __future__ import annotations

import asyncio

import pytest

from rendezvous import serde, topics
from rendezvous.proxy.batcher import RequestBatcher
from rendezvous.proxy.transport import InMemoryTransport

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def req(rid: str) -> dict:
    return {
        "request_id": rid,
        "service": "s",
        "received_ms": 1,
        "deadline_ms": 2,
        "payload": "{}",
        "reply_to": "p",
    }


def batches(t: InMemoryTransport) -> list[list[str]]:
    out = []
    for r in t.records:
        assert r.topic == topics.REQUESTS
        kind, batch_id, items = serde.decode_items(r.value)
        assert kind is serde.Kind.REQUEST and r.key == batch_id.encode()
        out.append([i["request_id"] for i in items])
    return out


def test_quiet_requests_leave_at_once_and_busy_ones_together() -> None:
    async def go() -> None:
        t, clock, failed, flushed = InMemoryTransport(), Clock(), [], []
        t.start(asyncio.get_running_loop(), lambda r: None)
        b = RequestBatcher(
            t,
            clock,
            lambda rid, why: failed.append(rid),
            interval_ms=10,
            max_items=3,
            on_flushed=flushed.append,
        )
        b.start(asyncio.get_running_loop())
        b.add(req("a"))
        b.add(req("b"))  # handled in the same loop turn: same batch
        await asyncio.sleep(0)
        assert batches(t) == [["a", "b"]]
        b.add(req("c"))  # within the interval of the last batch: waits for it
        await asyncio.sleep(0)
        assert batches(t) == [["a", "b"]]
        for rid in "def":  # the batch is full at three: it leaves at once
            b.add(req(rid))
        assert batches(t) == [["a", "b"], ["c", "d", "e"]]
        await asyncio.sleep(0.03)  # the interval is up (the scheduled flush runs on real time)
        assert batches(t) == [["a", "b"], ["c", "d", "e"], ["f"]]
        assert [len(f) for f in flushed] == [2, 3, 1] and failed == []
        assert (b.batches, b.requests) == (3, 6)

    asyncio.run(go())


def test_a_batch_kafka_refuses_fails_each_of_its_requests() -> None:
    async def go() -> None:
        t, failed = InMemoryTransport(), []
        t.start(asyncio.get_running_loop(), lambda r: None)
        t.fail_produce = "queue full"
        b = RequestBatcher(
            t, Clock(), lambda rid, why: failed.append((rid, why)), interval_ms=0, max_items=10
        )
        b.start(asyncio.get_running_loop())
        b.add(req("a"))
        b.add(req("b"))
        await asyncio.sleep(0)
        assert failed == [("a", "queue full"), ("b", "queue full")] and b.batches == 0

    asyncio.run(go())


def test_each_acknowledged_batch_reports_its_ack_time_then_its_requests() -> None:
    async def go() -> None:
        t, clock, seen = InMemoryTransport(), Clock(), []
        t.start(asyncio.get_running_loop(), lambda r: None)
        b = RequestBatcher(
            t,
            clock,
            lambda rid, why: None,
            interval_ms=0,
            max_items=10,
            on_delivered=lambda rids: seen.append(("delivered", rids)),
            on_acked=lambda ms: seen.append(("acked", ms)),
        )
        b.start(asyncio.get_running_loop())
        b.add(req("a"))
        b.add(req("b"))
        await asyncio.sleep(0)  # the batch leaves at clock 1_000_000
        clock.now += 7  # Kafka acknowledges it 7 ms later
        await asyncio.sleep(0)
        assert seen == [("acked", 7), ("delivered", ["a", "b"])]

    asyncio.run(go())
