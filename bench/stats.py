"""Figures of a run from its hits, the held-rate rule and the printed tables: pure functions."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from bench.vegeta import Hit, send_lags_ms

MIN_OK_SHARE = 0.999  # "held": at least this share answered with HTTP 200 ...
MAX_LAG_SHARE = 0.1  # ... and the generator kept its schedule: send lag p99 <= 10% of the SLA
SATURATED_P99 = 10  # a rate whose p99 is over 10x the SLA (or under 90% OK) ends a sweep
SATURATED_OK = 0.9
OUTCOMES = ("200", "503 retry-after", "503", "504", "other")


def percentile(sorted_xs: Sequence[float], q: float) -> float:
    """Nearest rank: the smallest value with at least ``q`` of the values at or below it."""
    if not sorted_xs:
        return float("nan")
    rank = math.ceil(q * len(sorted_xs))
    return sorted_xs[min(len(sorted_xs) - 1, max(0, rank - 1))]


@dataclass
class RunStats:
    system: str
    kind: str  # sweep, light, overload, recovery, settle
    rate: float
    seconds: float
    sent: int = 0
    p50: float = float("nan")  # latency, ms, as vegeta measures it (from the actual send)
    p90: float = float("nan")
    p99: float = float("nan")
    max: float = float("nan")
    ok_share: float = 0.0  # HTTP 200
    lag_p99: float = float("nan")  # send lag against the schedule, ms
    lag_max: float = float("nan")
    achieved_rate: float = 0.0  # hits over the span of their send times
    codes: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    cpu_s: dict[str, float | None] = field(default_factory=dict)
    cpu_per_1000: dict[str, float | None] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {k: _finite(v) for k, v in asdict(self).items()}


def _finite(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def outcome(hit: Hit) -> str:
    if hit.code == 200:
        return "200"
    if hit.code == 503:
        return "503 retry-after" if hit.retry_after else "503"
    if hit.code == 504:
        return "504"
    return "other"


def summarize(
    hits: Sequence[Hit], *, system: str, kind: str, rate: float, seconds: float
) -> RunStats:
    run = RunStats(system, kind, rate, seconds, sent=len(hits))
    if not hits:
        return run
    lat = sorted(h.latency_ms for h in hits)
    run.p50, run.p90, run.p99, run.max = (percentile(lat, q) for q in (0.5, 0.9, 0.99, 1.0))
    run.ok_share = sum(h.code == 200 for h in hits) / len(hits)
    lags = sorted(send_lags_ms(hits, rate))
    run.lag_p99, run.lag_max = percentile(lags, 0.99), lags[-1]
    span_s = (max(h.sent_ns for h in hits) - min(h.sent_ns for h in hits)) / 1e9
    run.achieved_rate = (len(hits) - 1) / span_s if span_s > 0 else 0.0
    run.codes = dict(sorted(Counter(str(h.code) for h in hits).items()))
    run.notes = dict(Counter(h.note for h in hits).most_common())
    counts = Counter(outcome(h) for h in hits)
    run.outcomes = {k: counts.get(k, 0) for k in OUTCOMES}
    return run


def holds(run: RunStats, sla_ms: float, *, check_lag: bool = True) -> bool:
    """p99 within the SLA, at least 99.9% HTTP 200, and (``check_lag``) the load was really
    offered on schedule: the generator's send lag p99 within 10% of the SLA."""
    return (
        run.sent > 0
        and run.p99 <= sla_ms
        and run.ok_share >= MIN_OK_SHARE
        and (not check_lag or run.lag_p99 <= MAX_LAG_SHARE * sla_ms)
    )


def saturated(run: RunStats, sla_ms: float) -> bool:
    return run.sent == 0 or run.p99 > SATURATED_P99 * sla_ms or run.ok_share < SATURATED_OK


def stop_sweep(runs: Sequence[RunStats], sla_ms: float) -> bool:
    """Stop raising the rate after a saturated run or two misses in a row: higher rates only
    build a backlog the next settle has to drain."""
    if not runs:
        return False
    if saturated(runs[-1], sla_ms):
        return True
    return len(runs) >= 2 and not holds(runs[-1], sla_ms) and not holds(runs[-2], sla_ms)


@dataclass(frozen=True)
class Held:
    rate: float | None  # the highest rate that held, or None
    ceiling: bool  # True when a higher rate was tried and missed (the limit was found)


def held_rate(runs: Iterable[RunStats], sla_ms: float) -> Held:
    """The highest swept rate that held. ``ceiling`` is False when that was the highest rate
    tried: the system may hold more."""
    runs = list(runs)
    ok = [r.rate for r in runs if holds(r, sla_ms)]
    if not ok:
        return Held(None, bool(runs))
    best = max(ok)
    return Held(best, any(r.rate > best for r in runs))


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def light_rate(held: float | None, preferred: float, *, floor: float = 5.0) -> float:
    """A light load: ``preferred`` (the Kafka baseline's rate) when that is at most 10% of
    the held rate, else 10% of it; with nothing held, the floor."""
    if not held:
        return floor
    return max(floor, min(preferred, 0.1 * held))


@dataclass(frozen=True)
class Slice:
    start_s: float
    end_s: float
    sent: int
    p99: float
    ok_share: float


def slices(hits: Sequence[Hit], width_s: float, total_s: float | None = None) -> list[Slice]:
    """Hits cut by send time into windows of ``width_s`` from the first send."""
    if not hits:
        return []
    t0 = min(h.sent_ns for h in hits)
    last = max(h.sent_ns for h in hits)
    n = max(1, math.ceil(total_s / width_s)) if total_s else int((last - t0) / 1e9 // width_s) + 1
    buckets: list[list[Hit]] = [[] for _ in range(n)]
    for h in hits:
        buckets[min(n - 1, int((h.sent_ns - t0) / 1e9 // width_s))].append(h)
    out = []
    for i, b in enumerate(buckets):
        lat = sorted(h.latency_ms for h in b)
        ok = sum(h.code == 200 for h in b) / len(b) if b else 0.0
        out.append(Slice(i * width_s, (i + 1) * width_s, len(b), percentile(lat, 0.99), ok))
    return out


def slice_holds(s: Slice, sla_ms: float) -> bool:
    return s.sent > 0 and s.p99 <= sla_ms and s.ok_share >= MIN_OK_SHARE


def recovery_s(parts: Sequence[Slice], sla_ms: float) -> float | None:
    """Seconds after the overload until every later slice holds: the start of the first slice
    of the final run of holding slices (0 when all hold), None when the last one misses."""
    if not parts or not slice_holds(parts[-1], sla_ms):
        return None
    i = len(parts) - 1
    while i > 0 and slice_holds(parts[i - 1], sla_ms):
        i -= 1
    return parts[i].start_s


# ---- tables --------------------------------------------------------------------------------
def _f(v: float | None, fmt: str = "7.1f", width: int = 7) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return f"{'-':>{width}}"
    return format(v, fmt)


def sweep_table(runs: Sequence[RunStats], sla_ms: float) -> str:
    head = (
        f"{'rate/s':>7} {'sent/s':>7} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>8} "
        f"{'200 %':>7} {'lag99':>6}  answers"
    )
    lines = [head, "-" * len(head)]
    for r in runs:
        mark = " " if holds(r, sla_ms) else "!"
        notes = ", ".join(f"{k} {v}" for k, v in list(r.notes.items())[:4])
        lines.append(
            f"{r.rate:>7g} {r.achieved_rate:7.1f} {_f(r.p50)} {_f(r.p90)} {_f(r.p99)} "
            f"{_f(r.max, '8.1f', 8)} {100 * r.ok_share:7.2f} {_f(r.lag_p99, '6.1f', 6)}{mark} "
            f"{notes}"
        )
    return "\n".join(lines)


def cpu_table(runs: Sequence[RunStats], columns: Sequence[str]) -> str:
    """CPU-seconds per 1,000 requests: one row per run, one column per process."""
    w = max(8, *(len(c) for c in columns))
    head = f"{'run':<24} " + " ".join(f"{c:>{w}}" for c in columns) + f" {'total':>{w}}"
    lines = [head, "-" * len(head)]
    for r in runs:
        vals = [r.cpu_per_1000.get(c) for c in columns]
        total = sum(v for v in vals if v is not None)
        cells = " ".join(_f(v, f"{w}.3f", w) for v in vals)
        label = f"{r.system} {r.kind} {r.rate:g}/s"
        lines.append(f"{label:<24} {cells} {total:{w}.3f}")
    return "\n".join(lines)


def idle_table(percent: Mapping[str, float | None], seconds: float) -> str:
    lines = [f"idle CPU over {seconds:g} s, % of one core:"]
    total = 0.0
    for name, v in percent.items():
        lines.append(f"  {name:<16} {_f(v, '6.1f', 6)}")
        total += v or 0.0
    lines.append(f"  {'total':<16} {total:6.1f}")
    return "\n".join(lines)


def slices_table(parts: Sequence[Slice], sla_ms: float) -> str:
    lines = [f"{'window s':>10} {'sent':>6} {'p99':>8} {'200 %':>7}"]
    for s in parts:
        mark = " " if slice_holds(s, sla_ms) else "!"
        lines.append(
            f"{f'{s.start_s:g}-{s.end_s:g}':>10} {s.sent:>6} {_f(s.p99, '8.1f', 8)} "
            f"{100 * s.ok_share:7.2f}{mark}"
        )
    return "\n".join(lines)
