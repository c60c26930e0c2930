"""A batch keyed as one: every request gets what the per-request core gives it alone."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rendezvous import batch, core

pytestmark = pytest.mark.unit

PREFERENCE = ["champ", "canary", "backstop"]
ROLES = {"champ": "champion", "canary": "canary", "backstop": "backstop"}
SLA, GRACE = 100, 300


def request(rid: str, received: int) -> dict:
    return {
        "request_id": rid,
        "service": "svc",
        "received_ms": received,
        "deadline_ms": received + SLA,
        "features": "{}",
        "payload": "{}",
        "enriched_ms": received + 1,
        "reply_to": "p1",
        "policy": {"preference": PREFERENCE, "sla_ms": SLA, "grace_ms": GRACE, "version": 1},
        "error": None,
    }


def score(rid: str, received: int, model: str, latency: int, status: str = "ok") -> dict:
    return {
        "request_id": rid,
        "service": "svc",
        "model": model,
        "version": "1",
        "role": ROLES[model],
        "status": status,
        "output": "1" if status == "ok" else None,
        "error": None if status == "ok" else "boom",
        "received_ms": received,
        "deadline_ms": received + SLA,
        "started_ms": received,
        "scored_ms": received + latency,
    }


class Flink:
    """Plays a keyed process function: per key a state, timers fired in time order as the
    watermark passes them, state cleared when asked."""

    def __init__(self, on_request, on_score, on_timer, new_state) -> None:
        self.calls = (on_request, on_score, on_timer, new_state)
        self.states: dict = {}
        self.timers: set = set()  # (time, key)
        self.results: list = []
        self.decisions: list = []
        self.timer_calls = 0

    def _apply(self, key, out) -> None:
        self.results += out.results
        self.decisions += out.decisions
        self.timers -= {(t, key) for t in getattr(out, "cancelled", ())}
        self.timers |= {(t, key) for t in out.timers}
        if out.done:
            del self.states[key]

    def element(self, key, kind, records) -> None:
        on_request, on_score, _, new_state = self.calls
        state = self.states.setdefault(key, new_state())
        self._apply(key, (on_request if kind == "request" else on_score)(state, records))

    def watermark(self, wm: int) -> None:
        _, _, on_timer, _ = self.calls
        while True:
            due = sorted(t for t in self.timers if t[0] <= wm)
            if not due:
                return
            self.timers.remove(due[0])
            at, key = due[0]
            if key in self.states:
                self.timer_calls += 1
                self._apply(key, on_timer(self.states[key], at))


def per_request() -> Flink:
    """Keyed by request ID, one record at a time: the reference."""
    return Flink(
        lambda s, recs: _single(core.on_request, s, recs),
        lambda s, recs: _single(core.on_score, s, recs),
        core.on_timer,
        core.Pending,
    )


def _single(fn, state, records):
    (record,) = records
    return fn(state, record)


def per_batch() -> Flink:
    return Flink(batch.on_requests, batch.on_scores, batch.on_timer, batch.BatchState)


@st.composite
def traffic(draw):
    """A batch of requests and, per request, scores of a random subset of models with random
    latencies, delivered in a random interleaving with watermark steps between them."""
    n = draw(st.integers(1, 6))
    received = [1_000 + draw(st.integers(0, 9)) for _ in range(n)]
    rids = [f"r{i}" for i in range(n)]
    events = [("request", None)]
    for rid, rec in zip(rids, received, strict=True):
        for model in PREFERENCE:
            if draw(st.booleans()):
                latency = draw(st.integers(1, SLA + GRACE + 50))
                status = draw(st.sampled_from(["ok", "ok", "error"]))
                events.append(("score", score(rid, rec, model, latency, status)))
                if draw(st.integers(0, 5)) == 0:  # a duplicate delivery
                    events.append(("score", score(rid, rec, model, latency, status)))
    order = draw(st.permutations(events))
    # Scores grouped as a model's batch would be: a score job writes one record per batch,
    # but a retried or late record may come alone; here each score is its own record.
    steps = []
    for kind, rec in order:
        if draw(st.booleans()):
            steps.append(("watermark", draw(st.integers(1_000, 1_000 + SLA + GRACE + 100))))
        steps.append((kind, rec))
    if draw(st.integers(0, 3)) == 0:
        steps.append(("request", None))  # the whole batch again (a producer retry)
    return [request(rid, rec) for rid, rec in zip(rids, received, strict=True)], steps


def play(flink: Flink, requests, steps, *, keyed_by_batch: bool) -> None:
    wm = 0
    for kind, rec in steps:
        if kind == "watermark":
            wm = max(wm, rec)
            flink.watermark(wm)
        elif kind == "request":
            if keyed_by_batch:
                flink.element("b1", "request", requests)
            else:
                for r in requests:
                    flink.element(r["request_id"], "request", [r])
        else:
            flink.element("b1" if keyed_by_batch else rec["request_id"], "score", [rec])
    flink.watermark(sys.maxsize)


@settings(max_examples=400, deadline=None)
@given(traffic())
def test_a_batch_gives_every_request_what_it_would_get_alone(case):
    """...with its scores collected until the batch closes (the latest deadline + grace of its
    requests) rather than until its own deadline + grace."""
    requests, steps = case
    close = max(r["deadline_ms"] + r["policy"]["grace_ms"] for r in requests)
    alone_requests = [
        {**r, "policy": {**r["policy"], "grace_ms": close - r["deadline_ms"]}} for r in requests
    ]
    alone, together = per_request(), per_batch()
    play(alone, alone_requests, steps, keyed_by_batch=False)
    play(together, requests, steps, keyed_by_batch=True)

    def by_rid(records):
        return sorted(records, key=lambda r: (r["request_id"], r["decided_ms"]))

    assert by_rid(together.results) == by_rid(alone.results)
    assert by_rid(together.decisions) == by_rid(alone.decisions)
    # Exactly one answer and one decision per request, and nothing left behind.
    assert sorted(r["request_id"] for r in together.results) == [r["request_id"] for r in requests]
    assert sorted(d["request_id"] for d in together.decisions) == [
        r["request_id"] for r in requests
    ]
    assert together.states == {} and alone.states == {}
    # One registered timer at a time per batch: never more timer calls than the reference.
    assert together.timer_calls <= alone.timer_calls


def test_a_lone_request_in_a_batch_is_answered_at_its_own_deadline():
    state = batch.BatchState()
    early, late = request("a", 1_000), request("b", 1_008)
    out = batch.on_requests(state, [early, late])
    assert out.results == [] and out.timers == [1_000 + SLA]  # only the earliest is registered
    out = batch.on_scores(state, [score("b", 1_008, "champ", 5)])
    assert [r["request_id"] for r in out.results] == ["b"] and out.timers == []
    out = batch.on_timer(state, 1_000 + SLA)
    assert [(r["request_id"], r["status"], r["decided_ms"]) for r in out.results] == [
        ("a", "error", 1_000 + SLA)
    ]
    close = 1_008 + SLA + GRACE
    assert out.timers == [close] and out.decisions == []  # b is answered: the batch's close
    out = batch.on_timer(state, close)
    assert sorted(d["request_id"] for d in out.decisions) == ["a", "b"]
    assert out.timers == [close + core.TOMBSTONE_MS]
    out = batch.on_timer(state, close + core.TOMBSTONE_MS)
    assert out.done and state.pending == {}


def test_answered_batches_delete_their_deadline_timer():
    state = batch.BatchState()
    out = batch.on_requests(state, [request("a", 1_000), request("b", 1_003)])
    assert out.timers == [1_000 + SLA]
    out = batch.on_scores(state, [score("a", 1_000, "champ", 5), score("b", 1_003, "champ", 5)])
    assert len(out.results) == 2
    assert out.cancelled == [1_000 + SLA] and out.timers == [1_003 + SLA + GRACE]


def test_results_go_to_the_replica_that_waits_for_them():
    results = [
        {"request_id": "a", "reply_to": "p1"},
        {"request_id": "b", "reply_to": "p2"},
        {"request_id": "c", "reply_to": "p1"},
    ]
    assert batch.by_reply_to(results) == {"p1": [results[0], results[2]], "p2": [results[1]]}
