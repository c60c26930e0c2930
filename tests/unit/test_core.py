"""The rendezvous core under every interleaving of its events."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rendezvous import core

pytestmark = pytest.mark.unit

PREFERENCE = ["champ", "canary", "backstop"]
ROLES = {"champ": "champion", "canary": "canary", "backstop": "backstop", "shadow": "challenger"}
RECEIVED, SLA, GRACE = 1_000, 100, 500
DEADLINE = RECEIVED + SLA


def request(**over):
    rec = {
        "request_id": "r1",
        "service": "svc",
        "received_ms": RECEIVED,
        "deadline_ms": DEADLINE,
        "features": "{}",
        "payload": "{}",
        "enriched_ms": RECEIVED + 1,
        "reply_to": "p1",
        "policy": {"preference": PREFERENCE, "sla_ms": SLA, "grace_ms": GRACE, "version": 3},
        "error": None,
    }
    rec.update(over)
    return rec


def score(model, latency, status="ok"):
    return {
        "request_id": "r1",
        "service": "svc",
        "model": model,
        "version": "7",
        "role": ROLES[model],
        "status": status,
        "output": '{"p": 0.5}' if status == "ok" else None,
        "error": None if status == "ok" else "boom",
        "received_ms": RECEIVED,
        "deadline_ms": DEADLINE,
        "started_ms": RECEIVED + 1,
        "scored_ms": RECEIVED + latency,
    }


class Driver:
    """Plays events against the core the way the Flink function does, with timers in time order."""

    def __init__(self):
        self.state: core.Pending | None = None
        self.results, self.decisions, self.timers = [], [], []
        self.cleared = False

    def _apply(self, out: core.Outcome):
        self.results += out.results
        self.decisions += out.decisions
        self.timers += out.timers
        if out.done:
            self.state = None
            self.cleared = True

    def _state(self):
        if self.state is None:
            self.state = core.Pending()
        return self.state

    def request(self, rec):
        self._apply(core.on_request(self._state(), rec))

    def score(self, rec):
        self._apply(core.on_score(self._state(), rec))

    def fire_until(self, watermark):
        while True:
            due = sorted(t for t in self.timers if t <= watermark)
            if not due:
                return
            t = due[0]
            self.timers.remove(t)
            if self.state is not None:  # Flink: a timer on cleared state sees empty state
                self._apply(core.on_timer(self.state, t))


def test_champion_in_time_answers_immediately_as_preferred():
    d = Driver()
    d.request(request())
    d.score(score("backstop", 2))
    assert d.results == []  # the champion has not spoken and the deadline is not reached
    d.score(score("champ", 20))
    assert [(r["model"], r["reason"], r["decided_ms"]) for r in d.results] == [
        ("champ", "preferred", RECEIVED + 20)
    ]


def test_late_champion_falls_back_at_deadline_and_is_flagged_late():
    d = Driver()
    d.request(request())
    d.score(score("canary", 30))
    d.fire_until(DEADLINE)
    assert [(r["model"], r["reason"], r["decided_ms"]) for r in d.results] == [
        ("canary", "fallback: champ late", DEADLINE)
    ]
    d.score(score("champ", SLA + 40))
    d.fire_until(DEADLINE + GRACE)
    (decision,) = d.decisions
    by_model = {s["model"]: s for s in decision["scores"]}
    assert by_model["champ"]["late"] is True and by_model["canary"]["late"] is False
    assert decision["model"] == "canary" and decision["latency_ms"] == SLA
    assert not d.cleared  # a tombstone stays to catch duplicates of the request
    d.request(request())
    assert len(d.results) == 1 and len(d.decisions) == 1
    d.fire_until(sys.maxsize)
    assert d.cleared and d.state is None


def test_a_deadline_tighter_than_the_sla_decides_and_is_the_one_in_the_decision():
    # A client's X-Deadline-Ms reaches the join as the request's own deadline_ms; the policy's
    # SLA is not read: the champion in time for the SLA is late for this request.
    tight = RECEIVED + 30
    d = Driver()
    d.request(request(deadline_ms=tight))
    d.score(score("canary", 10))
    d.fire_until(tight)
    assert [(r["model"], r["reason"], r["decided_ms"]) for r in d.results] == [
        ("canary", "fallback: champ late", tight)
    ]
    assert d.results[0]["deadline_ms"] == tight
    d.score(score("champ", 50))
    d.fire_until(tight + GRACE)
    (decision,) = d.decisions
    assert decision["deadline_ms"] == tight and decision["decided_ms"] == tight
    assert {s["model"]: s["late"] for s in decision["scores"]} == {"canary": False, "champ": True}


def test_failed_champion_falls_back_without_waiting():
    d = Driver()
    d.request(request())
    d.score(score("canary", 5))
    d.score(score("champ", 10, status="error"))
    assert [(r["model"], r["reason"]) for r in d.results] == [("canary", "fallback: champ failed")]


def test_backstop_reason_names_what_happened_before():
    d = Driver()
    d.request(request())
    d.score(score("champ", 10, status="error"))
    d.score(score("backstop", 3))
    d.fire_until(DEADLINE)
    assert [(r["model"], r["reason"]) for r in d.results] == [
        ("backstop", "backstop: champ failed, canary late")
    ]


def test_no_score_at_all_gives_an_error_answer_by_the_deadline():
    d = Driver()
    d.request(request())
    d.fire_until(DEADLINE + GRACE)
    assert [(r["status"], r["decided_ms"]) for r in d.results] == [("error", DEADLINE)]
    assert d.results[0]["reason"].startswith("no_answer")
    assert len(d.decisions) == 1
    d.fire_until(sys.maxsize)
    assert d.cleared


def test_enrichment_error_is_answered_at_once():
    d = Driver()
    d.request(request(error="lookup failed: region 'xx' unknown"))
    assert d.results[0]["status"] == "error"
    assert "lookup failed" in d.results[0]["reason"]


def test_orphan_scores_are_reported_and_cleared():
    d = Driver()
    d.score(score("champ", 10))
    d.fire_until(RECEIVED + core.ORPHAN_MS)
    assert d.results == []
    assert d.decisions[0]["reason"].startswith("orphan")
    d.fire_until(sys.maxsize)
    assert d.cleared


def test_choose_is_a_pure_function_of_timestamps():
    scores = {"champ": score("champ", SLA + 1), "canary": score("canary", SLA)}
    assert core.choose(PREFERENCE, scores, DEADLINE, at_deadline=False) is None
    assert core.choose(PREFERENCE, scores, DEADLINE, at_deadline=True) == ("canary", "champ late")


# ---- properties ---------------------------------------------------------------------------

MODELS = ["champ", "canary", "backstop", "shadow"]
event = st.one_of(
    st.tuples(st.just("request"), st.none()),
    st.tuples(
        st.just("score"),
        st.tuples(
            st.sampled_from(MODELS),
            st.integers(0, SLA + GRACE + 50),
            st.sampled_from(["ok", "error"]),
        ),
    ),
    st.tuples(st.just("watermark"), st.integers(RECEIVED, RECEIVED + SLA + GRACE + 100)),
)


@settings(max_examples=3000, deadline=None)
@given(st.lists(event, max_size=14), st.booleans())
def test_any_interleaving_gives_one_result_one_decision_and_no_state(events, enrichment_failed):
    d = Driver()
    requested = False
    for kind, arg in events:
        if kind == "request":
            d.request(request(error="bad" if enrichment_failed else None))
            requested = True
        elif kind == "score":
            model, latency, status = arg
            d.score(score(model, latency, status))
        else:
            d.fire_until(arg)
    if not requested:
        d.request(request(error="bad" if enrichment_failed else None))
    d.fire_until(sys.maxsize)  # end of input: every timer fires

    assert len(d.results) == 1, d.results
    assert len(d.decisions) == 1, d.decisions
    assert d.state is None and d.cleared
    result, decision = d.results[0], d.decisions[0]
    assert result["decided_ms"] <= DEADLINE
    assert decision["model"] == result["model"] and decision["reason"] == result["reason"]
    if result["status"] == "ok":
        chosen = next(s for s in decision["scores"] if s["model"] == result["model"])
        assert chosen["status"] == "ok" and chosen["late"] is False
        assert result["model"] in PREFERENCE
        # Nobody earlier in the preference order had an in-time ok score... unless it came after
        # the answer went out.
        earlier = PREFERENCE[: PREFERENCE.index(result["model"])]
        for s in decision["scores"]:
            if s["model"] in earlier and s["status"] == "ok" and not s["late"]:
                assert (
                    result["decided_ms"] < RECEIVED + s["latency_ms"]
                    or result["decided_ms"] == DEADLINE
                )
    models = [s["model"] for s in decision["scores"]]
    assert len(models) == len(set(models))  # duplicates collapsed


@settings(max_examples=500, deadline=None)
@given(
    st.permutations([("score", m) for m in ["champ", "canary", "backstop"]] + [("request", None)])
)
def test_all_in_time_scores_in_any_order_pick_the_champion(order):
    d = Driver()
    for kind, model in order:
        if kind == "request":
            d.request(request())
        else:
            d.score(score(model, 10))
    d.fire_until(sys.maxsize)
    assert d.results[0]["model"] == "champ" and d.results[0]["reason"] == "preferred"


def test_core_does_not_import_pyflink():
    import subprocess

    code = (
        "import rendezvous.core, rendezvous.serde, rendezvous.config, rendezvous.enrich, "
        "rendezvous.policy, rendezvous.control, rendezvous.records, sys; print('pyflink' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_request_expired_before_enrichment_is_a_deadline_error_at_once():
    d = Driver()
    d.request(
        request(
            error="deadline_exceeded: the request reached enrichment 40 ms after its deadline; not scored"
        )
    )
    (result,) = d.results
    assert result["status"] == "error" and result["reason"].startswith("deadline_exceeded:")
