"""The jobs' live metrics, tallied per batch: what each counter and gauge adds."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rendezvous import core
from rendezvous import live_metrics as lm
from rendezvous.archive.metrics import bin_edges, psi


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("preferred", "preferred"),
        ("fallback: champion late", "fallback"),
        ("backstop: champion failed, canary failed", "backstop"),
        ("no_answer: champion late", "no_answer"),
        ("deadline_exceeded", "deadline_exceeded"),
        ("enrichment_failed: lookup users: no row for key 7", "enrichment_failed"),
        ("orphan: scores arrived but the request never did", "orphan"),
        ("something new", "other"),
        (None, "other"),
    ],
)
def test_a_reason_is_counted_by_its_kind(reason, kind):
    assert lm.reason_kind(reason) == kind


def score(latency_ms: int, status: str = "ok") -> dict:
    return {"status": status, "received_ms": 1000, "scored_ms": 1000 + latency_ms}


def test_a_batch_of_scores_adds_counts_and_a_cumulative_latency_histogram():
    tally = lm.tally_scores([score(0), score(3), score(5), score(7000, "error")])
    assert (tally.scores, tally.errors, tally.latency_sum_ms) == (4, 1, 7008)
    by_le = dict(zip(lm.bucket_labels(), tally.buckets, strict=True))
    # le is inclusive, as Prometheus reads it: 5 ms falls in the bucket le="5"
    assert (by_le["1"], by_le["2"], by_le["5"], by_le["5000"], by_le[lm.INF]) == (1, 1, 3, 3, 4)
    assert tally.buckets == sorted(tally.buckets)  # cumulative
    assert lm.tally_scores([]).buckets == [0] * len(lm.bucket_labels())


def request(rid: str, preference=("champion", "canary", "backstop"), version: int = 3) -> dict:
    return {
        "request_id": rid,
        "service": "fraud",
        "received_ms": 0,
        "deadline_ms": 100,
        "features": "{}",
        "policy": {"preference": list(preference), "version": version, "grace_ms": 50},
    }


def scored(rid: str, model: str, role: str, output, *, at: int = 10, status: str = "ok") -> dict:
    return {
        "request_id": rid,
        "service": "fraud",
        "model": model,
        "version": "1",
        "role": role,
        "status": status,
        "output": None if output is None else json.dumps(output),
        "error": None if status == "ok" else "boom",
        "received_ms": 0,
        "deadline_ms": 100,
        "started_ms": 0,
        "scored_ms": at,
    }


def decide(req: dict, *scores: dict) -> tuple[list, list]:
    """Run the real core over a request and its scores to the end of its grace period."""
    state = core.Pending()
    results, decisions = [], []
    for out in (core.on_request(state, req), *(core.on_score(state, s) for s in scores)):
        results += out.results
    end = core.on_timer(state, req["deadline_ms"] + req["policy"]["grace_ms"])
    results += end.results
    decisions += end.decisions
    return results, decisions


def test_answers_fallbacks_and_the_decisions_scores_per_model():
    m = lm.JoinMetrics()
    r1, r2 = request("a"), request("b")
    m.on_requests([r1, r2])
    res1, dec1 = decide(
        r1, scored("a", "champion", "champion", 1), scored("a", "canary", "canary", 1)
    )
    res2, dec2 = decide(
        r2,
        scored("b", "champion", "champion", 1, at=150),  # late
        scored("b", "canary", "canary", None, status="error"),
        scored("b", "backstop", "backstop", 0),
    )
    tally = m.tally(res1 + res2, dec1 + dec2)
    assert tally.answers == {
        ("fraud", "champion", "preferred"): 1,
        ("fraud", "backstop", "backstop"): 1,
    }
    assert tally.fallbacks == {("fraud", "backstop"): 1}
    assert tally.joined == {
        ("fraud", "champion"): 2,
        ("fraud", "canary"): 2,
        ("fraud", "backstop"): 1,
    }
    assert tally.errors == {
        ("fraud", "champion"): 0,
        ("fraud", "canary"): 1,
        ("fraud", "backstop"): 0,
    }
    assert tally.late[("fraud", "champion")] == 1 and tally.late[("fraud", "canary")] == 0
    # against the first choice (champion); a late first choice is still compared, as the
    # archive compares; an error score is not
    assert tally.compared == {("fraud", "canary"): 1, ("fraud", "backstop"): 1}
    assert tally.agreements == {("fraud", "canary"): 1, ("fraud", "backstop"): 0}


def test_an_error_answer_has_the_model_none():
    m = lm.JoinMetrics()
    r = request("c", preference=("champion",))
    results, _ = decide(r, scored("c", "champion", "champion", None, status="error"))
    assert m.tally(results, []).answers == {("fraud", lm.NO_MODEL, "no_answer"): 1}


def test_agreement_is_with_the_first_choice_of_the_policy_in_force():
    """After a promotion the canary answers first: the champion is compared against it."""
    m = lm.JoinMetrics()
    promoted = request("d", preference=("canary", "champion"), version=4)
    m.on_requests([promoted])
    _, decisions = decide(
        promoted, scored("d", "champion", "champion", 1), scored("d", "canary", "canary", 0)
    )
    tally = m.tally([], decisions)
    assert tally.compared == {("fraud", "champion"): 1}
    assert tally.agreements == {("fraud", "champion"): 0}
    # a policy version not seen (since a restart): the role champion is the reference
    fresh = lm.JoinMetrics()
    assert fresh.tally([], decisions).compared == {("fraud", "canary"): 1}


def test_the_canary_psi_is_against_its_own_first_values_over_the_rolling_window():
    rng = np.random.default_rng(7)
    m = lm.JoinMetrics(psi_window=50, psi_every=20)
    canary, updates = [], []
    for i in range(130):
        # the first choice's values do not matter; the canary's move after its first 50
        canary_value = float(rng.random() if i < 50 else rng.random() * 0.5)
        r = request(f"r{i}")
        m.on_requests([r])
        _, decisions = decide(
            r,
            scored(r["request_id"], "champion", "champion", {"probability": float(rng.random())}),
            scored(r["request_id"], "canary", "canary", {"probability": canary_value}),
        )
        canary.append(canary_value)
        tally = m.tally([], decisions)
        if tally.psi:
            updates.append((i, tally.psi[("fraud", "canary")]))
    # the gauge exists from the first value; a PSI once 50 reference and 20 more values are in
    assert [i for i, _ in updates] == [0, 69, 89, 109, 129]
    assert np.isnan(updates[0][1])
    reference, latest = canary[:50], canary[-50:]
    assert updates[-1][1] == pytest.approx(psi(reference, latest, bin_edges(reference)))
    assert updates[-1][1] > 0.25  # half the range: shifted
    assert lm.psi_gauge_value(0.1234567) == 123457
    assert lm.psi_gauge_value(float("nan")) == -1


def test_the_live_metrics_module_does_not_load_pyflink():
    code = "import sys, rendezvous.live_metrics; print('pyflink' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
