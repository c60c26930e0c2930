"""The rendezvous bookkeeping for one batch of requests: the per-request core, applied in bulk.

Requests travel in batches (one Kafka record carries every request a proxy accepted within a
few milliseconds), and every model scores a whole batch at once, so the rendezvous job is keyed
by batch ID: one state, one Python call and one timer serve many requests. This module keeps,
per batch, one :class:`rendezvous.core.Pending` per request ID and the timers the core asked
for, and fires each core timer at its own time. Every request therefore gets exactly the
answer and the decision it would get if it were keyed alone: the batch changes the cost, not
the semantics. Pure: no Flink, no clock.

Only the earliest core timer is registered with Flink at any time; when it fires, every core
timer due by then runs, and the next earliest is registered.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rendezvous import core


@dataclass
class BatchState:
    """Everything known about the requests of one batch ID."""

    pending: dict[str, core.Pending] = field(default_factory=dict)
    timers: list[tuple[int, str]] = field(default_factory=list)  # heap of (time, request id)
    registered: int | None = None  # the earliest Flink timer asked for and not fired yet


@dataclass
class BatchOutcome:
    results: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    timers: list[int] = field(default_factory=list)  # Flink timers to register
    done: bool = False  # the state can be cleared


def on_requests(state: BatchState, requests: Iterable[dict[str, Any]]) -> BatchOutcome:
    out = BatchOutcome()
    for request in requests:
        rid = request["request_id"]
        pending = state.pending.get(rid)
        if pending is None:
            pending = state.pending[rid] = core.Pending()
        _merge(state, out, rid, core.on_request(pending, request))
    return _close(state, out)


def on_scores(state: BatchState, scores: Iterable[dict[str, Any]]) -> BatchOutcome:
    out = BatchOutcome()
    for score in scores:
        rid = score["request_id"]
        pending = state.pending.get(rid)
        if pending is None:
            pending = state.pending[rid] = core.Pending()
        _merge(state, out, rid, core.on_score(pending, score))
    return _close(state, out)


def on_timer(state: BatchState, timestamp: int) -> BatchOutcome:
    """A Flink timer at ``timestamp`` fired: run every core timer due by then, each at its own
    time."""
    out = BatchOutcome()
    if state.registered is not None and timestamp >= state.registered:
        state.registered = None
    heap = state.timers
    while heap and heap[0][0] <= timestamp:
        at, rid = heapq.heappop(heap)
        pending = state.pending.get(rid)
        if pending is not None:
            _merge(state, out, rid, core.on_timer(pending, at))
    return _close(state, out)


def _merge(state: BatchState, out: BatchOutcome, rid: str, one: core.Outcome) -> None:
    out.results += one.results
    out.decisions += one.decisions
    for t in one.timers:
        heapq.heappush(state.timers, (t, rid))
    if one.done:
        del state.pending[rid]


def _close(state: BatchState, out: BatchOutcome) -> BatchOutcome:
    if not state.pending:
        state.timers.clear()
        out.done = True
        return out
    # Drop timers of requests that are gone, so the heap never outgrows the batch.
    while state.timers and state.timers[0][1] not in state.pending:
        heapq.heappop(state.timers)
    if state.timers:
        earliest = state.timers[0][0]
        if state.registered is None or earliest < state.registered:
            state.registered = earliest
            out.timers.append(earliest)
    return out


def by_reply_to(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Results grouped by the proxy replica waiting for them (one record per replica)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(r.get("reply_to", ""), []).append(r)
    return groups
