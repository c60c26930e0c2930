"""``rendezvous replay-policy``: the archived decisions decided again by the rendezvous core
under another preference order and SLA, checked by hand on the credit archive."""

from __future__ import annotations

import json

import pytest

from rendezvous import cli
from rendezvous.archive import policy_replay
from rendezvous.archive.layout import ArchiveError
from rendezvous.archive.policy_replay import NewPolicy, new_deadline, reason_kind
from tests.unit.archive_data import credit_archive

pytestmark = pytest.mark.unit

# The credit archive (tests/unit/archive_data.py), SLA 25 ms, archived order gbm > lr > rules:
#   r1  gbm ok 10 ms, lr ok 5, rules ok 1     archived: gbm preferred (10 ms)
#   r2  gbm ok 20,    lr ok 15, rules ok 1    archived: gbm preferred (10 ms)
#   r3  gbm ok 30,    lr ok 25, rules ok 2    archived: lr fallback: gbm late (10 ms)
#   r4  gbm error 8,  lr ok 35, rules ok 2    archived: rules backstop: gbm failed, lr late
#   r5  enrichment failed, no scores          archived: error
# (The archive's decisions all say 10 ms; what matters here is what changes.)


@pytest.fixture
def archive(tmp_path):
    return credit_archive(tmp_path / "archive")


def answers(archive, policy: NewPolicy):
    decisions, scores, requests = policy_replay.load(archive, "credit", policy_replay_window())
    return policy_replay.replay(decisions, scores, requests, policy).set_index("request_id")


def policy_replay_window():
    from rendezvous.archive.report import Window

    return Window()


def test_lr_first_with_the_same_deadlines(archive):
    # Deadline received + 25 (no lead): lr answers r1, r2, r3 first (5, 15, 25 ms); r4's lr is
    # late (35 ms) and gbm failed: the backstop at the deadline, as before.
    got = answers(archive, NewPolicy(("lr", "gbm", "rules"), 25, decision_lead_ms=0))
    assert got["model"].tolist() == ["lr", "lr", "lr", "rules", None]
    assert got["reason"].tolist() == [
        "preferred",
        "preferred",
        "preferred",
        "backstop: lr late, gbm failed",
        "enrichment_failed: missing field amount",
    ]
    assert got["latency_ms"].tolist() == [5, 15, 25, 25, 0]
    summary = policy_replay.summarize(got.reset_index())
    # r1, r2 change model (gbm -> lr); r3 changes reason (fallback -> preferred)
    assert (summary["model_changed"], summary["reason_changed"]) == (2, 1)
    assert summary["transitions"] == [
        {"archived": "gbm preferred", "new": "lr preferred", "count": 2},
        {"archived": "lr fallback", "new": "lr preferred", "count": 1},
    ]
    assert summary["by_model"] == [
        {"model": "gbm", "archived": 2, "new": 0},
        {"model": "lr", "archived": 1, "new": 3},
        {"model": "rules", "archived": 1, "new": 1},
        {"model": None, "archived": 1, "new": 1},
    ]
    # new latencies of the four answers 5, 15, 25, 25: mean 17.5, p50 20, p95 25
    new = summary["latency_ms"]["new"]
    assert (new["n"], new["mean"], new["p50"], new["p95"], new["max"]) == (4, 17.5, 20, 25, 25)
    assert summary["latency_ms"]["archived"]["p50"] == 10


def test_a_longer_sla_lets_the_late_lr_answer_r4(archive):
    got = answers(archive, NewPolicy(("lr", "gbm", "rules"), 40, decision_lead_ms=0))
    assert got.loc["r4", "model"] == "lr" and got.loc["r4", "reason"] == "preferred"
    assert got.loc["r4", "latency_ms"] == 35
    summary = policy_replay.summarize(got.reset_index())
    assert (summary["model_changed"], summary["reason_changed"]) == (3, 2)  # r1 r2 r4 | r3 r4


def test_a_shorter_sla_with_the_proxys_lead(archive):
    # SLA 20, lead min(15, 20 // 4) = 5: deadline received + 15. r2's gbm (20 ms) is late, lr
    # (15) answers at the deadline; r3 has only the backstop in time.
    got = answers(archive, NewPolicy(("gbm", "lr", "rules"), 20))
    assert got["deadline_ms"].sub(got["received_ms"]).unique().tolist() == [15]
    assert got["model"].tolist() == ["gbm", "lr", "rules", "rules", None]
    assert got["reason"].tolist()[:4] == [
        "preferred",
        "fallback: gbm late",
        "backstop: gbm late, lr late",
        "backstop: gbm failed, lr late",
    ]
    assert got["latency_ms"].tolist()[:4] == [10, 15, 15, 15]
    summary = policy_replay.summarize(got.reset_index())
    assert (summary["model_changed"], summary["reason_changed"]) == (2, 2)


def test_new_deadline():
    policy = NewPolicy(("a",), 100, decision_lead_ms=15)
    assert new_deadline(0, 185, 200, policy) == 85  # the SLA's deadline: 100 - 15
    # a client asked for 50 ms (archived deadline 50 < 200 - 15): it keeps its own
    assert new_deadline(0, 50, 200, policy) == 50
    assert new_deadline(0, 50, 200, NewPolicy(("a",), 40)) == 30  # 40 - min(15, 10)
    assert new_deadline(0, 50, None, NewPolicy(("a",), None)) == 50  # no --sla-ms


def test_reason_kind():
    assert [
        reason_kind(r)
        for r in ("preferred", "fallback: a late", "backstop: a failed", "no_answer: a late")
    ] == ["preferred", "fallback", "backstop", "no_answer"]


def test_cli_table(archive, capsys):
    argv = ["replay-policy", "--archive", str(archive), "--service", "credit"]
    assert cli.main([*argv, "--preference", "lr,gbm,rules", "--sla-ms", "40"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "credit: 5 decisions (all times), decided again with preference lr > gbm > rules and "
        "SLA 40 ms\n  archived: policy v1: preference gbm > lr > rules, SLA 25 ms (5 requests)\n"
    )
    # SLA 40, lead 10: deadline received + 30; r4's lr (35 ms) is still late
    assert "answers that change model:  2 of 5 (40.0%)" in out
    assert "reasons that change:        1 of 5 (20.0%)" in out
    line = next(x for x in out.splitlines() if x.split()[:1] == ["p50"])
    assert line.split() == ["p50", "10.0", "20.0"]


def test_cli_json(archive, capsys):
    argv = ["replay-policy", "--archive", str(archive), "--service", "credit", "--json"]
    assert cli.main([*argv, "--preference", "lr,gbm,rules,ghost"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # archived deadlines (received + 25): as in test_lr_first_with_the_same_deadlines
    assert (doc["decisions"], doc["model_changed"], doc["reason_changed"]) == (5, 2, 1)
    assert doc["preference"] == ["lr", "gbm", "rules", "ghost"] and doc["sla_ms"] is None
    assert doc["latency_ms"]["new"]["p50"] == 20
    assert doc["notes"] == ["ghost has no scores in the window: in the new order it never answers"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preference", "lr,,gbm"], "--preference 'lr,,gbm': expected model names"),
        (["--preference", "lr,lr"], "--preference names lr more than once"),
        (["--preference", "lr", "--sla-ms", "0"], "--sla-ms 0: the SLA is a whole number"),
        (["--preference", "lr", "--since", "1h"], "no decisions of 'credit' in "),
    ],
)
def test_cli_errors(archive, capsys, argv, message):
    base = ["replay-policy", "--archive", str(archive), "--service", "credit"]
    assert cli.main([*base, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


def test_parse_preference():
    assert policy_replay.parse_preference(" a, b ,c") == ("a", "b", "c")
    with pytest.raises(ArchiveError, match="expected model names"):
        policy_replay.parse_preference("")
