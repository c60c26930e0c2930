"""The rendezvous bookkeeping for one batch of requests: the per-request core, applied in bulk.

Requests travel in batches (one Kafka record carries every request a proxy accepted within a few
milliseconds), and every model scores a whole batch at once, so the rendezvous job is keyed by
batch ID: one state, one Python call and one timer serve many requests. This module keeps, per
batch, one :class:`rendezvous.core.Pending` per request ID and drives each through the core.

Timing, per batch, in event time:

- **Answers**: each request still gets its answer as soon as the policy allows, and a request
  still waiting at *its own* deadline gets its fallback (or error) answer then, exactly as if
  it were keyed alone.
- **Decisions**: late scores are collected for every request of the batch until the batch
  *closes*, at the latest ``deadline + grace`` of its requests; then all its decisions are
  written at once. A request's collection window is therefore up to one batch interval longer
  than ``grace``, never shorter, and it depends only on recorded data (which requests share a
  batch is in the model-input record), so a replay decides the same.
- **Expiry**: tombstones (against duplicate deliveries) expire together, at the batch's latest.

One Flink timer is registered per batch at any time, at its next event time (a timer that is
no longer needed is deleted), so a batch whose champion answered in time costs two timer calls
(close and expiry) whatever its size. Pure: no Flink, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rendezvous import core


@dataclass
class BatchState:
    """Everything known about the requests of one batch ID."""

    pending: dict[str, core.Pending] = field(default_factory=dict)
    registered: int | None = None  # the earliest Flink timer asked for and not fired yet


@dataclass
class BatchOutcome:
    results: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    timers: list[int] = field(default_factory=list)  # Flink timers to register
    cancelled: list[int] = field(default_factory=list)  # Flink timers to delete
    done: bool = False  # the state can be cleared


# Fields of a model input the rendezvous does not keep in state: the payload (the body as
# received) is archived from the model-input topic and is in no answer or decision.
_DROPPED = frozenset({"payload"})


def on_requests(state: BatchState, requests: Iterable[dict[str, Any]]) -> BatchOutcome:
    kept = ({k: v for k, v in r.items() if k not in _DROPPED} for r in requests)
    return _each(state, kept, core.on_request)


def on_scores(state: BatchState, scores: Iterable[dict[str, Any]]) -> BatchOutcome:
    return _each(state, scores, core.on_score)


def _each(state: BatchState, records: Iterable[dict[str, Any]], event) -> BatchOutcome:
    """Apply one core event to the Pending of each record's request ID."""
    out = BatchOutcome()
    for record in records:
        rid = record["request_id"]
        pending = state.pending.get(rid)
        if pending is None:
            pending = state.pending[rid] = core.Pending()
        _merge(out, event(pending, record))
    return _close(state, out)


def closes_at(state: BatchState) -> int | None:
    """When the batch's open requests are decided: the latest deadline + grace among them."""
    ends = [
        p.request["deadline_ms"] + p.request["policy"]["grace_ms"]
        for p in state.pending.values()
        if p.request is not None and p.finished_until is None
    ]
    return max(ends) if ends else None


def on_timer(state: BatchState, timestamp: int) -> BatchOutcome:
    """A Flink timer at ``timestamp`` fired: run every core event due by then, each at its own
    event time (a request's deadline, the orphan limit, the batch's close, its expiry)."""
    out = BatchOutcome()
    if state.registered is not None and timestamp >= state.registered:
        state.registered = None
    close = closes_at(state)
    expiry = _expiry(state)
    for rid, p in list(state.pending.items()):
        if p.finished_until is not None:
            if expiry is not None and timestamp >= expiry:
                _merge(out, core.on_timer(p, expiry))
                del state.pending[rid]
        elif p.request is None:
            if p.orphan_timer is not None and timestamp >= p.orphan_timer:
                _merge(out, core.on_timer(p, p.orphan_timer))
        else:
            deadline = p.request["deadline_ms"]
            if p.result is None and timestamp >= deadline:
                _merge(out, core.on_timer(p, deadline))
            if close is not None and timestamp >= close:
                _merge(out, core.on_timer(p, close))
    return _close(state, out)


def _expiry(state: BatchState) -> int | None:
    """When every tombstone of the batch may go: once all its requests are decided."""
    ends = []
    for p in state.pending.values():
        if p.finished_until is None:
            return None
        ends.append(p.finished_until)
    return max(ends) if ends else None


def _next(state: BatchState) -> int | None:
    """The earliest event time at which the batch has something to do."""
    times = []
    for p in state.pending.values():
        if p.finished_until is not None:
            continue
        if p.request is None:
            if p.orphan_timer is not None:
                times.append(p.orphan_timer)
        elif p.result is None:
            times.append(p.request["deadline_ms"])
    close = closes_at(state)
    if close is not None:
        times.append(close)
    if not times:
        expiry = _expiry(state)
        return expiry
    return min(times)


def _merge(out: BatchOutcome, one: core.Outcome) -> None:
    out.results += one.results
    out.decisions += one.decisions


def _close(state: BatchState, out: BatchOutcome) -> BatchOutcome:
    """Keep exactly one Flink timer registered: at the batch's next event time."""
    if not state.pending:
        if state.registered is not None:
            out.cancelled.append(state.registered)
            state.registered = None
        out.done = True
        return out
    wake = _next(state)
    if wake != state.registered:
        if state.registered is not None:
            out.cancelled.append(state.registered)
        state.registered = wake
        if wake is not None:
            out.timers.append(wake)
    return out


def by_reply_to(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Results grouped by the proxy replica waiting for them (one record per replica)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(r.get("reply_to", ""), []).append(r)
    return groups
