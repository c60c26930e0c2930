"""The rendezvous bookkeeping for one request: pure, deterministic, no Flink, no clock.

The keyed Flink function keeps one :class:`Pending` per request ID and feeds it three kinds of
events: the (enriched) request, a model's score, and an event-time timer. Each call returns an
:class:`Outcome` saying what to emit, which timers to register and whether the state can go.

Rules
- A score counts *in time* when ``scored_ms <= deadline_ms`` (its own timestamps decide, so a
  replay of the same records yields the same decisions).
- The answer goes out as soon as the policy allows: walking the preference order, the first
  model with an in-time ``ok`` score wins once every model before it has failed; a model that
  has not answered yet makes the walk wait. At the deadline the walk skips silent models.
- Scores keep being collected until ``deadline + grace``; then one decision record joins the
  request with every score (late ones flagged) and the state is cleared.
- A request's own order is its split arm's model first, then the policy's preference, without
  the models that do not sample it (``arm`` and ``unsampled``, decided by the enrich job and
  recorded in the request): nothing waits for a model that was never asked.
- Scores that arrive before their request wait for it; if it never comes, they are reported
  as an orphan decision after ``ORPHAN_MS``.
- After the decision a tombstone stays for ``TOMBSTONE_MS`` so that a duplicate of the request
  (a producer retry) is recognised instead of being answered twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rendezvous import records
from rendezvous.policy import NO_POLICY
from rendezvous.traffic import preference_for

ORPHAN_MS = 60_000
TOMBSTONE_MS = 60_000


@dataclass
class Pending:
    """Everything known about one request ID."""

    request: dict[str, Any] | None = None
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> first score
    duplicates: int = 0
    result: records.Result | None = None
    orphan_timer: int | None = None
    finished_until: int | None = None


@dataclass
class Outcome:
    results: list[records.Result] = field(default_factory=list)
    decisions: list[records.Decision] = field(default_factory=list)
    timers: list[int] = field(default_factory=list)
    done: bool = False


def on_request(state: Pending, request: dict[str, Any]) -> Outcome:
    out = Outcome()
    if state.request is not None or state.finished_until is not None:
        # A duplicate request (e.g. a producer retry): the first one wins.
        state.duplicates += 1
        return out
    state.request = request
    deadline = request["deadline_ms"]
    out.timers += [deadline, deadline + request["policy"]["grace_ms"]]
    error = request.get("error")
    if error:
        # An expired request says so itself; any other error is the enrichment's.
        reason = error if error.startswith("deadline_exceeded") else f"enrichment_failed: {error}"
        _answer_error(state, out, reason=reason, at_ms=request["received_ms"])
    else:
        _try_answer(state, out, at_deadline=False)
    return out


def on_score(state: Pending, score: dict[str, Any]) -> Outcome:
    out = Outcome()
    model = score["model"]
    if state.finished_until is not None:
        return out  # after the grace period: archived with the scores, not in the decision
    if model in state.scores:
        state.duplicates += 1
        return out
    state.scores[model] = score
    if state.request is None:
        if state.orphan_timer is None:
            state.orphan_timer = score["received_ms"] + ORPHAN_MS
            out.timers.append(state.orphan_timer)
        return out
    if state.result is None:
        _try_answer(state, out, at_deadline=False)
    return out


def on_timer(state: Pending, timestamp: int) -> Outcome:
    out = Outcome()
    if state.finished_until is not None:
        out.done = timestamp >= state.finished_until
        return out
    request = state.request
    if request is None:
        if state.orphan_timer is not None and timestamp >= state.orphan_timer:
            out.decisions.append(_orphan_decision(state))
            _finish(state, out, timestamp)
        return out
    deadline = request["deadline_ms"]
    if state.result is None and timestamp >= deadline:
        _try_answer(state, out, at_deadline=True)
    if timestamp >= deadline + request["policy"]["grace_ms"]:
        out.decisions.append(_decision(state))
        _finish(state, out, timestamp)
    return out


def _finish(state: Pending, out: Outcome, timestamp: int) -> None:
    """Drop what the decision holds and keep only a tombstone until it expires."""
    state.request, state.result, state.scores = None, None, {}
    state.finished_until = timestamp + TOMBSTONE_MS
    out.timers.append(state.finished_until)


# ---- choosing ---------------------------------------------------------------------------


def choose(
    preference: list[str], scores: dict[str, dict[str, Any]], deadline_ms: int, *, at_deadline: bool
) -> tuple[str | None, str] | None:
    """(model, reason) to answer with, (None, reason) for an error answer, or None to wait."""
    passed: list[str] = []
    for model in preference:
        score = scores.get(model)
        if score is None or score["scored_ms"] > deadline_ms:
            if not at_deadline:
                return None
            passed.append(f"{model} late")
            continue
        if score["status"] != "ok":
            passed.append(f"{model} failed")
            continue
        if not passed:
            return model, "preferred"
        return model, ", ".join(passed)
    return None, "no_answer: " + ", ".join(passed)


def order(request: dict[str, Any]) -> list[str]:
    """The request's preference order: its arm first, the unsampled models left out."""
    preference = request["policy"]["preference"]
    arm, skipped = request.get("arm"), request.get("unsampled") or ()
    if arm is None and not skipped:
        return preference
    return preference_for(preference, arm, skipped)


def _try_answer(state: Pending, out: Outcome, *, at_deadline: bool) -> None:
    request = state.request
    assert request is not None
    preference = order(request)
    picked = choose(preference, state.scores, request["deadline_ms"], at_deadline=at_deadline)
    if picked is None:
        return
    model, reason = picked
    if at_deadline:
        decided = request["deadline_ms"]
    else:
        # The event time at which the choice became possible: the last of the scores it read.
        considered = preference if model is None else preference[: preference.index(model) + 1]
        decided = max(
            [request["received_ms"]]
            + [state.scores[m]["scored_ms"] for m in considered if m in state.scores]
        )
    if model is None:
        _answer_error(state, out, reason=reason, at_ms=decided)
        return
    score = state.scores[model]
    if reason != "preferred":
        kind = "backstop" if score["role"] == "backstop" else "fallback"
        reason = f"{kind}: {reason}"
    state.result = records.result(
        request,
        status="ok",
        model=model,
        version=score["version"],
        role=score["role"],
        output=score["output"],
        reason=reason,
        error=None,
        decided_ms=decided,
    )
    out.results.append(state.result)


def _answer_error(state: Pending, out: Outcome, *, reason: str, at_ms: int) -> None:
    request = state.request
    assert request is not None
    state.result = records.result(
        request,
        status="error",
        model=None,
        version=None,
        role=None,
        output=None,
        reason=reason,
        error=reason,
        decided_ms=at_ms,
    )
    out.results.append(state.result)


# ---- the joined record ------------------------------------------------------------------


def _score_rows(state: Pending, deadline_ms: int | None) -> list[records.DecisionScore]:
    rows: list[records.DecisionScore] = []
    for model in sorted(state.scores):
        s = state.scores[model]
        rows.append(
            {
                "model": model,
                "version": s["version"],
                "role": s["role"],
                "status": s["status"],
                "output": s["output"],
                "error": s["error"],
                "latency_ms": s["scored_ms"] - s["received_ms"],
                "late": deadline_ms is None or s["scored_ms"] > deadline_ms,
            }
        )
    return rows


def _decision(state: Pending) -> records.Decision:
    request, result = state.request, state.result
    assert request is not None and result is not None
    return {
        "request_id": request["request_id"],
        "service": request["service"],
        "received_ms": request["received_ms"],
        "deadline_ms": request["deadline_ms"],
        "features": request.get("features"),
        "policy_version": request["policy"]["version"],
        "status": result["status"],
        "model": result["model"],
        "version": result["version"],
        "role": result["role"],
        "reason": result["reason"],
        "output": result["output"],
        "decided_ms": result["decided_ms"],
        "latency_ms": result["decided_ms"] - request["received_ms"],
        "scores": _score_rows(state, request["deadline_ms"]),
        "arm": request.get("arm"),
        "unsampled": list(request.get("unsampled") or ()),
    }


def _orphan_decision(state: Pending) -> records.Decision:
    first = next(iter(state.scores.values()))
    return {
        "request_id": first["request_id"],
        "service": first["service"],
        "received_ms": first["received_ms"],
        "deadline_ms": first["received_ms"],
        "features": None,
        "policy_version": NO_POLICY.version,
        "status": "error",
        "model": None,
        "version": None,
        "role": None,
        "reason": "orphan: scores arrived but the request never did",
        "output": None,
        "decided_ms": state.orphan_timer or first["received_ms"],
        "latency_ms": 0,
        "scores": _score_rows(state, None),
        "arm": None,
        "unsampled": [],
    }
