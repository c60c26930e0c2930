"""``rendezvous promote SERVICE MODEL --if CONDITION --window SPAN``: figures of a small archive
computed by hand, the condition's grammar, and promotion or refusal."""

from __future__ import annotations

import math
import shutil

import pytest
import yaml

from rendezvous import cli, config, control
from rendezvous.archive import evidence
from rendezvous.archive.layout import ArchiveError, write_rows
from rendezvous.clock import now_ms
from rendezvous.policy import Change, Policy
from tests.unit.archive_data import decision, out, request, score

pytestmark = pytest.mark.unit

CONFIG = """
services:
  credit:
    sla_ms: 25
    models:
      - {name: champ, role: champion, callable: "udfs.zoo:constant"}
      - {name: shadow, role: challenger, callable: "udfs.zoo:constant"}
      - {name: backstop, role: backstop, callable: "udfs.zoo:constant"}
      - {name: decoy, role: decoy}
    input:
      x: double
"""
CFG = config.parse(yaml.safe_load(CONFIG))

# Five requests e1..e5 received ten minutes ago, one more (o1) three hours ago. SLA 25 ms.
#   champ  (champion)   labels 1 0 1 1 0, all ok in 10 ms; o1: 1
#   shadow (challenger) labels 1 0 1 0 in 10 10 10 30 ms (e4 late), e5 an error; o1: 0
#   backstop            plain numbers 1 0 0 0 1 in 2 ms
# True labels e1..e4: 1 0 0 0.
# shadow, last hour: n 5, late 1/5, errors 1/5; against champ on e1..e4: agree on e1, e2,
#   e3 -> 3/4; against the true labels: right on e1, e2, e4 -> 3/4.
# shadow, last 4 hours: o1 disagrees too -> 3/5, n 6.
# backstop against shadow (e1..e4 ok): 1=1, 0=0, 0!=1, 0=0 -> 3/4; against champ 2/5.
CHAMP, SHADOW, BACKSTOP = [1, 0, 1, 1, 0], [1, 0, 1, 0], [1, 0, 0, 0, 1]
TRUTH = [1, 0, 0, 0]


def evidence_archive(root, now: int):
    recent, old = now - 600_000, now - 3 * 3_600_000
    scores, decisions, requests = [], [], []
    for i in range(5):
        rid, at = f"e{i + 1}", recent + i
        scores.append(score(rid, "champ", "champion", out(CHAMP[i], 0.8), 10, at=at))
        if i < 4:
            latency = 30 if i == 3 else 10
            scores.append(score(rid, "shadow", "challenger", out(SHADOW[i], 0.7), latency, at=at))
        else:
            scores.append(score(rid, "shadow", "challenger", None, 5, at=at, status="error"))
        scores.append(score(rid, "backstop", "backstop", str(BACKSTOP[i]), 2, at=at))
        decisions.append(decision(rid, "champ", "preferred", at=at, policy_version=0))
        requests.append(request(rid, at=at, preference="champ,backstop", policy_version=0))
    scores += [
        score("o1", "champ", "champion", out(1, 0.8), 10, at=old),
        score("o1", "shadow", "challenger", out(0, 0.7), 10, at=old),
    ]
    write_rows(root, "scores", scores, service="credit")
    write_rows(root, "decisions", decisions, service="credit")
    write_rows(root, "requests", requests, service="credit")
    feedback = [
        {"request_id": f"e{i + 1}", "label": str(t), "labelled_ms": now - 60_000}
        for i, t in enumerate(TRUTH)
    ]
    write_rows(root, "feedback", feedback, service="credit")
    return root


@pytest.fixture
def log() -> control.MemoryControl:
    return control.MemoryControl()


@pytest.fixture
def archive(tmp_path):
    return evidence_archive(tmp_path / "archive", now_ms())


@pytest.fixture
def run(tmp_path, monkeypatch, log, capsys, archive):
    path = tmp_path / "services.yaml"
    path.write_text(CONFIG)
    monkeypatch.setenv("RDV_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(control, "KafkaControl", lambda kafka: log)
    monkeypatch.setattr(cli, "_issuer", lambda: "ops@host")

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main([*argv, "--config", str(path), "--archive", str(archive)])
        got = capsys.readouterr()
        return code, got.out, got.err

    return run


def row(stdout: str, figure: str) -> list[str]:
    """The cells of a figure's row of the evidence table."""
    return next(x.split() for x in stdout.splitlines() if x.split()[:1] == [figure])


def preference(log) -> tuple[str, ...] | None:
    records = log.read()
    return tuple(records[-1]["policy"]["preference"]) if records else None


# ---- promotion on evidence ---------------------------------------------------------------


def test_every_clause_passes_so_the_model_is_promoted(run, log, registry):
    code, stdout, err = run(
        "promote",
        "credit",
        "shadow",
        "--if",
        "agreement>=0.7 and late_rate<=0.25",
        "--window",
        "1h",
    )
    assert (code, err) == (0, "")
    lines = stdout.splitlines()
    assert lines[0].startswith("evidence for shadow in credit, the last 1h (received from ")
    assert lines[0].endswith(
        "5 requests, 5 scored by shadow; agreement and deltas against champ, the current "
        "first choice"
    )
    assert lines[1].split() == ["figure", "value", "clause", "result"]
    assert lines[2].split() == ["agreement", "0.7500", "agreement", ">=", "0.7", "pass"]
    assert lines[3].split() == ["late_rate", "0.2000", "late_rate", "<=", "0.25", "pass"]
    assert lines[4] == "every clause passes: promoting shadow"
    assert "credit: preference shadow > champ > backstop, SLA 25 ms (policy version 1)" in stdout
    assert preference(log) == ("shadow", "champ", "backstop")
    # the promotion is an MLflow run with its evidence: the condition, the window, the figures
    (promoted,) = registry.runs
    assert promoted["params"]["condition"] == "agreement>=0.7 and late_rate<=0.25"
    assert promoted["params"]["window"] == "1h" and promoted["params"]["policy_version"] == "1"
    assert promoted["metrics"]["agreement"] == 0.75 and promoted["metrics"]["late_rate"] == 0.2


def test_a_failing_clause_refuses_and_publishes_nothing(run, log, registry):
    code, stdout, err = run(
        "promote", "credit", "shadow", "--if", "agreement >= 0.8 and n>=5", "--window", "1h"
    )
    assert code == 1 and log.read() == [] and registry.runs == []
    assert row(stdout, "agreement") == ["agreement", "0.7500", "agreement", ">=", "0.8", "fail"]
    assert row(stdout, "n") == ["n", "5", "n", ">=", "5", "pass"]
    assert err == (
        "error: shadow not promoted in credit: 1 of 2 clause(s) fail: agreement >= 0.8 "
        "(is 0.7500)\n"
    )


def test_the_window_decides_what_counts(run, log):
    # over four hours o1 counts: agreement 3/5, n 6
    code, stdout, err = run(
        "promote", "credit", "shadow", "--if", "agreement>=0.7", "--window", "4h"
    )
    assert code == 1 and log.read() == []
    assert "6 scored by shadow" in stdout and row(stdout, "agreement")[1] == "0.6000"


def test_error_rate_and_true_label_figures(run, log):
    code, stdout, _ = run(
        "promote",
        "credit",
        "shadow",
        "--if",
        "accuracy>=75% and error_rate<0.21 and labelled==4",
        "--window",
        "30m",
    )
    assert code == 0, stdout
    assert row(stdout, "accuracy") == ["accuracy", "0.7500", "accuracy", ">=", "75%", "pass"]
    assert row(stdout, "error_rate")[1] == "0.2000" and row(stdout, "labelled")[1] == "4"


def test_agreement_is_with_the_current_first_choice_not_the_champion_role(run, log):
    # shadow is first since an earlier promotion: backstop agrees with it 3/4 (2/5 with champ)
    promoted = Policy(("shadow", "champ", "backstop"), 25, 0, 1)
    log.publish(Change(promoted, now_ms(), "ops@host").to_control("credit"))
    code, stdout, err = run("promote", "credit", "backstop", "--if", "agreement>=0.7")
    assert code == 0, err
    assert "against shadow, the current first choice" in stdout
    assert row(stdout, "agreement")[1] == "0.7500"
    assert preference(log) == ("backstop", "shadow", "champ")


def test_the_first_choice_itself_has_no_agreement_and_is_refused(run, log):
    code, stdout, err = run("promote", "credit", "champ", "--if", "agreement>=0.5")
    assert code == 1 and log.read() == []
    assert "champ is the first choice already" in stdout
    assert "agreement >= 0.5 (no value: no request that both the model and" in err


def test_auc_and_log_loss_by_hand_and_without_labels(run, log, archive):
    # shadow predicts 1 0 1 0 with probability 0.7: P(1) = 0.7 0.3 0.7 0.3 against 1 0 0 0.
    # AUC: the positive's 0.7 beats two negatives (0.3) and ties one -> 2.5/3.
    # log-loss: -(ln 0.7 + ln 0.7 + ln 0.3 + ln 0.7)/4 = 0.568498
    code, stdout, _ = run("promote", "credit", "shadow", "--if", "auc>0.83 and log_loss<0.57")
    assert code == 0
    assert row(stdout, "auc")[1] == "0.8333" and row(stdout, "log_loss")[1] == "0.5685"

    shutil.rmtree(archive / "feedback")
    code, _, err = run("promote", "credit", "shadow", "--if", "auc>0.5")
    assert code == 1
    assert "auc > 0.5 (no value: needs true labels of both classes and probabilities)" in err


def test_an_empty_window_refuses_and_says_so(run, log):
    code, stdout, err = run("promote", "credit", "shadow", "--if", "n>=0", "--window", "1m")
    assert code == 1 and log.read() == []
    assert "0 requests" in stdout
    assert err.startswith(
        "error: shadow not promoted: no archived scores or decisions of credit received from "
    )
    assert "so there is no evidence; widen --window" in err


def test_a_model_without_scores_in_the_window_is_refused(run, log, archive):
    write_rows(
        archive,
        "scores",
        [score("z1", "ghost", "challenger", "1", 5, at=now_ms() - 5000)],
        service="credit",
    )
    code, _, err = run("promote", "credit", "backstop", "--if", "n>=0", "--window", "1m")
    assert code == 1 and log.read() == []
    assert err.startswith("error: backstop not promoted: it has no archived scores in credit")


@pytest.mark.parametrize(
    ("condition", "window", "message"),
    [
        (
            "agrement>=0.9",
            "24h",
            "error: --if: unknown figure 'agrement' (did you mean 'agreement'?); valid figures: "
            "agreement, compared, late_rate, error_rate, n, answered, win_rate, latency_p50, "
            "latency_p95, latency_p99, delta_mean, labelled, accuracy, auc, log_loss",
        ),
        (
            "agreement=>0.9",
            "24h",
            "error: --if: bad operator '=>' after 'agreement'; use one of >=, <=, >, <, ==, !=",
        ),
        ("agreement>=0.9", "24", "error: --window '24' is not a window: expected a whole"),
        ("agreement>=0.9", "0h", "error: --window '0h' is not a window"),
    ],
)
def test_bad_input_is_one_line_naming_the_problem(run, log, condition, window, message):
    code, stdout, err = run("promote", "credit", "shadow", "--if", condition, "--window", window)
    assert code == 2 and stdout == "" and log.read() == []
    assert err.startswith(message) and err.count("\n") == 1


def test_if_goes_with_a_model_and_window_with_if(run, log):
    for argv in (
        ("promote", "--undo", "credit", "--if", "n>1"),
        ("promote", "credit", "shadow", "--window", "1h"),
    ):
        with pytest.raises(SystemExit) as raised:
            run(*argv)
        assert raised.value.code == 2
    assert log.read() == []


# ---- the grammar -------------------------------------------------------------------------


def test_parse_condition():
    clauses = evidence.parse_condition("agreement>=0.95 and late_rate <= 1e-2 AND n > 500")
    assert [(c.figure, c.op, c.threshold) for c in clauses] == [
        ("agreement", ">=", 0.95),
        ("late_rate", "<=", 0.01),
        ("n", ">", 500.0),
    ]
    assert str(clauses[1]) == "late_rate <= 1e-2"
    (pct,) = evidence.parse_condition("accuracy!=95%")
    assert pct.threshold == pytest.approx(0.95) and pct.op == "!="


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "--if: empty condition; expected FIGURE OP NUMBER [and ...]"),
        ("agreement >= 0.9 or n > 5", "expected 'and' after agreement >= 0.9, got 'or'"),
        ("agreement >=", "expected a number after 'agreement >=', got nothing"),
        ("agreement >= high", "expected a number after 'agreement >=', got 'high'"),
        ("agreement 0.9", "bad operator '0.9' after 'agreement'"),
        ("agreement = 0.9", "bad operator '=' after 'agreement'"),
        ("agreement >= 0.9 and", "a clause must follow 'and' after agreement >= 0.9"),
        ("0.9 <= agreement", "expected a figure name, got '0.9'; valid figures: agreement,"),
        ("__import__('os')>0", "unknown figure '__import__'"),
        ("agreement>=0.9; n>1", "expected 'and' after agreement >= 0.9, got ';'"),
    ],
)
def test_bad_conditions(text, message):
    with pytest.raises(ArchiveError, match="") as raised:
        evidence.parse_condition(text)
    assert message in raised.value.message


def test_judge_by_hand():
    clauses = evidence.parse_condition("agreement>=0.9 and late_rate<0.1 and accuracy>0")
    verdicts = evidence.judge(clauses, {"agreement": 0.9, "late_rate": 0.1, "accuracy": math.nan})
    assert [v.passed for v in verdicts] == [True, False, False]
    assert verdicts[2].why == "no value: no true labels for its scores in the window"


def test_parse_window():
    assert evidence.parse_window("30m").total_seconds() == 1800
    assert evidence.parse_window("7d").total_seconds() == 7 * 86400
    with pytest.raises(ArchiveError, match=r"--window '1\.5h' is not a window"):
        evidence.parse_window("1.5h")
