"""Admission control: how many synchronous requests a replica lets into the pipeline at once.

A request the pipeline cannot answer by its deadline still costs every stage its work, so
past capacity a queue grows, every answer comes late, and the queue outlives the overload.
The proxy therefore keeps a limit on the requests in flight and answers the ones beyond it at
once with 503 and ``Retry-After``. The limit adapts (additive increase, multiplicative
decrease): every answer in time raises it a little, every request that missed its deadline
cuts it (at most once per ``cooldown_ms``, so one burst of timeouts is one cut). In-time
throughput is ``limit / latency``, so the limit settles where the pipeline answers in time.

Pure: the clock is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Admission:
    limit: float = 200.0
    min_limit: float = 8.0
    max_limit: float = 5000.0
    increase: float = 0.5
    decrease: float = 0.8
    cooldown_ms: int = 100
    in_flight: int = 0
    rejected: int = 0
    _last_cut_ms: int = -(1 << 62)

    def try_enter(self) -> bool:
        """Take a place for one request; False when the replica is at its limit."""
        if self.in_flight >= int(self.limit):
            self.rejected += 1
            return False
        self.in_flight += 1
        return True

    def leave(self, *, in_time: bool, now_ms: int) -> None:
        """Give the place back, saying whether the request was answered by its deadline."""
        self.in_flight = max(0, self.in_flight - 1)
        if in_time:
            self.limit = min(self.max_limit, self.limit + self.increase / max(1.0, self.limit / 50))
        elif now_ms - self._last_cut_ms >= self.cooldown_ms:
            self._last_cut_ms = now_ms
            self.limit = max(self.min_limit, self.limit * self.decrease)

    def leave_unjudged(self) -> None:
        """Give the place back without judging the pipeline (a client or Kafka error)."""
        self.in_flight = max(0, self.in_flight - 1)
