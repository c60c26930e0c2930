"""The proxy's heartbeat scheduling, over a fake transport and a fake clock."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rendezvous import topics
from rendezvous.proxy.errors import KafkaUnavailable
from rendezvous.proxy.heartbeat import Heartbeat
from rendezvous.proxy.metrics import Metrics

pytestmark = pytest.mark.unit

T0 = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class Ticks:
    """A transport that only records heartbeats (or refuses them)."""

    def __init__(self) -> None:
        self.at: list[int] = []
        self.down = False

    def tick(self, at_ms: int) -> int:
        if self.down:
            raise KafkaUnavailable("down")
        self.at.append(at_ms)
        return len(topics.HEARTBEAT)

    def tick_partitions(self) -> int:
        return len(topics.HEARTBEAT)


def heartbeat(transport: Ticks, clock: Clock, last_flush_ms: int = 0, **kw: int) -> Heartbeat:
    metrics = Metrics()
    return Heartbeat(
        transport,  # type: ignore[arg-type]
        metrics,
        clock,
        lambda: last_flush_ms,
        interval_ms=kw.get("interval_ms", 1000),
        idle_interval_ms=kw.get("idle_interval_ms", 1000),
    )


def counter(hb: Heartbeat, name: str) -> float:
    for family in text_string_to_metric_families(hb.metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(name)


def test_a_deadline_tick_goes_once_when_the_clock_reaches_it() -> None:
    async def go() -> None:
        clock, t = Clock(), Ticks()
        hb = heartbeat(t, clock)
        hb.start(asyncio.get_running_loop())  # the periodic tick goes at once
        await asyncio.sleep(0)
        assert t.at == [T0]
        hb.tick_at(T0 + 5)
        hb.tick_at(T0 + 5)  # one tick per deadline
        await asyncio.sleep(0.02)
        assert t.at == [T0]  # the loop woke, the clock had not reached it
        clock.now = T0 + 6
        await asyncio.sleep(0.02)
        assert t.at == [T0, T0 + 6]  # stamped with the clock, never ahead of it
        assert counter(hb, "rdv_proxy_ticks_total") == 2 * len(topics.HEARTBEAT)
        await hb.stop()

    asyncio.run(go())


def test_a_batch_after_the_deadline_makes_its_tick_unneeded() -> None:
    async def go() -> None:
        clock, t = Clock(), Ticks()
        hb = heartbeat(t, clock, last_flush_ms=T0 + 10, interval_ms=1000)
        hb._loop = asyncio.get_running_loop()  # scheduling only, no periodic task
        clock.now = T0 + 10
        hb.tick_at(T0 + 5)
        await asyncio.sleep(0.01)
        assert t.at == []

    asyncio.run(go())


def test_heartbeats_off_and_failed_heartbeats() -> None:
    async def go() -> None:
        clock, t = Clock(), Ticks()
        off = heartbeat(t, clock, interval_ms=0)
        off.start(asyncio.get_running_loop())
        off.tick_at(T0)
        await asyncio.sleep(0.01)
        assert t.at == []
        await off.stop()
        t.down = True
        hb = heartbeat(t, clock)
        hb.start(asyncio.get_running_loop())
        await asyncio.sleep(0)
        assert counter(hb, "rdv_proxy_tick_errors_total") == 1
        await hb.stop()

    asyncio.run(go())


def test_busy_until_only_moves_forward() -> None:
    hb = heartbeat(Ticks(), Clock())
    hb.busy_until(T0 + 100)
    hb.busy_until(T0 + 50)
    assert hb.busy_until_ms == T0 + 100
