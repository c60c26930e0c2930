"""The proxy's clock heartbeats: they carry event time to the rendezvous job when traffic doesn't.

Heartbeats go into every partition the rendezvous job reads (see ``rendezvous.heartbeat``):
fast while a request of this replica may still be waiting, slow otherwise, and one right after
each batch's last deadline, so the job's timer for a lone request fires on time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from rendezvous import topics
from rendezvous.clock import Clock
from rendezvous.proxy.errors import KafkaUnavailable
from rendezvous.proxy.metrics import Metrics
from rendezvous.proxy.transport import Transport


class Heartbeat:
    """Schedules one replica's heartbeats on its event loop; ``interval_ms`` 0 turns them off.

    ``last_flush_ms()`` is when the newest batch of requests left: a batch carries event time
    too, so a heartbeat right after one is skipped where it would add nothing.
    """

    def __init__(
        self,
        transport: Transport,
        metrics: Metrics,
        clock: Clock,
        last_flush_ms: Callable[[], int],
        *,
        interval_ms: int,
        idle_interval_ms: int,
    ) -> None:
        self.transport = transport
        self.metrics = metrics
        self.clock = clock
        self.last_flush_ms = last_flush_ms
        self.interval_ms = interval_ms
        self.idle_interval_ms = max(interval_ms, idle_interval_ms)
        # Heartbeats stay fast until this time: the last deadline plus its decision grace.
        self.busy_until_ms = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        # Event times (ms) for which a deadline heartbeat is scheduled.
        self._deadline_ticks: set[int] = set()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        if self.interval_ms > 0:
            self._task = loop.create_task(self._run(), name="rdv-proxy-heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def busy_until(self, at_ms: int) -> None:
        """A request of this replica may be waiting until ``at_ms``: stay fast until then."""
        if at_ms > self.busy_until_ms:
            self.busy_until_ms = at_ms

    async def _run(self) -> None:
        fast = self.interval_ms / 1000
        slow_ms = self.idle_interval_ms
        last = 0
        while True:
            at_ms = self.clock()
            # At the slow cadence a heartbeat goes even while batches carry time, so that event
            # time still moves if every scoring job stops writing.
            if at_ms - last >= slow_ms or not self._time_carried_since(at_ms - self.interval_ms):
                self._tick(at_ms)
                last = at_ms
            await asyncio.sleep(fast if at_ms < self.busy_until_ms else slow_ms / 1000)

    def _time_carried_since(self, at_ms: int) -> bool:
        """Whether a batch that left at or after ``at_ms`` will carry event time past it.

        With one partition per heartbeat topic the rendezvous job's watermark follows every
        record on them: the batch's model inputs land on one and its scores on the other, both
        stamped after the batch left, so a heartbeat adds nothing. With more partitions a batch
        reaches only some of them, so every heartbeat is written.
        """
        return (
            self.transport.tick_partitions() == len(topics.HEARTBEAT)
            and self.last_flush_ms() >= at_ms
        )

    def _tick(self, at_ms: int) -> None:
        try:
            self.metrics.ticks(self.transport.tick(at_ms))
        except KafkaUnavailable:
            self.metrics.tick_error()

    def tick_at(self, at_ms: int) -> None:
        """One heartbeat as soon as the clock reaches ``at_ms``, stamped with the clock.

        The periodic heartbeat alone would carry time past a deadline up to one interval late;
        this one lets the rendezvous job's timer for a lone request fire right at its deadline.
        A heartbeat is never stamped ahead of the clock: a request accepted later must not be
        behind the watermark."""
        if self._loop is None or self.interval_ms <= 0:
            return
        if at_ms in self._deadline_ticks:
            return
        self._deadline_ticks.add(at_ms)
        self._loop.call_later(max(at_ms - self.clock(), 0) / 1000, self._deadline_tick, at_ms)

    def _deadline_tick(self, at_ms: int) -> None:
        now = self.clock()
        if now < at_ms:  # the loop may wake a little early
            assert self._loop is not None
            self._loop.call_later((at_ms - now) / 1000, self._deadline_tick, at_ms)
            return
        self._deadline_ticks.discard(at_ms)
        if not self._time_carried_since(at_ms):
            self._tick(now)
