"""Wall-clock time as records carry it: whole milliseconds since the Unix epoch.

Logic never reads the clock: the entry points (the proxy, the jobs, the CLI) call
:func:`now_ms`, or take a :data:`Clock` argument defaulting to it, and pass the time down, so
tests drive time by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]
"""A source of the time in epoch milliseconds; :func:`now_ms` is the real one."""


def now_ms() -> int:
    """The wall-clock time now, in whole milliseconds since the epoch."""
    return time.time_ns() // 1_000_000
