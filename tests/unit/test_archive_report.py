"""``rendezvous report``: figures checked against a small archive computed by hand."""

from __future__ import annotations

import base64
import json
import math
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rendezvous import cli
from rendezvous.archive import metrics, report
from rendezvous.archive.layout import ArchiveError, write_rows
from rendezvous.archive.metrics import OutputFields, bin_edges, psi, read_output
from rendezvous.archive.report import Window, parse_time
from tests.unit.archive_data import HOUR, T0, credit_archive, decision, score

approx = pytest.approx


@pytest.fixture
def archive(tmp_path):
    return credit_archive(tmp_path / "archive")


@pytest.fixture
def credit(archive) -> metrics.ServiceReport:
    scores, decisions = report.load(archive, service=None, window=Window())
    (credit,) = metrics.build_reports(scores, decisions)
    return credit


def model_row(r: metrics.ServiceReport, model: str) -> dict:
    (row,) = r.models[r.models["model"] == model].to_dict("records")
    return row


# ---- the credit archive (tests/unit/archive_data.py) -------------------------------------
#
# Five requests at 10:00 UTC, SLA 25 ms. gbm (champion) scores r1..r3 ok with labels 1, 0, 1
# and probabilities 0.9, 0.2, 0.7 in 10, 20, 30 ms (r3 late) and fails r4. lr (canary) scores
# r1..r4 ok: labels 1, 1, 1, 0 and probabilities 0.8, 0.6, 0.75, 0.1 in 5, 15, 25, 35 ms (r4
# late), plus a later duplicate of r1 that is ignored. rules (backstop) answers plain numbers
# 1, 0, 0, 1 in 1, 1, 2, 2 ms. Decisions: r1, r2 gbm (preferred), r3 lr (fallback), r4 rules
# (backstop), r5 none (enrichment failed).


def test_champion_figures(credit):
    gbm = model_row(credit, "gbm")
    assert credit.champion == "gbm" and credit.requests == 5 and credit.decisions == 5
    assert gbm["role"] == "champion" and gbm["scores"] == 4
    assert gbm["error_rate"] == 0.25  # r4 failed
    assert gbm["late_rate"] == 0.25  # r3 in 30 ms > 25
    # ok latencies 10, 20, 30: p50 = 20; p95 at rank 0.95*2 = 1.9 -> 20 + 0.9*10 = 29;
    # p99 at rank 1.98 -> 29.8
    assert (gbm["latency_p50"], gbm["latency_p95"], gbm["latency_p99"]) == approx((20, 29, 29.8))
    assert math.isnan(gbm["agreement"])  # not compared with itself
    assert gbm["answered"] == 2 and gbm["win_rate"] == 0.4  # r1, r2 of 5 decisions


def test_canary_figures(credit):
    lr = model_row(credit, "lr")
    assert lr["scores"] == 4  # the duplicate of r1 counts once
    assert lr["error_rate"] == 0 and lr["late_rate"] == 0.25  # r4 in 35 ms
    # latencies 5, 15, 25, 35: p50 = 20; p95 at rank 2.85 -> 25 + 0.85*10 = 33.5; p99 -> 34.7
    assert (lr["latency_p50"], lr["latency_p95"], lr["latency_p99"]) == approx((20, 33.5, 34.7))
    # compared on r1..r3 (the champion failed r4): labels agree on r1 and r3 -> 2/3
    assert lr["compared"] == 3 and lr["agreement"] == approx(2 / 3)
    # deltas 0.8-0.9, 0.6-0.2, 0.75-0.7 = -0.1, 0.4, 0.05: mean 0.35/3; sorted -0.1, 0.05, 0.4:
    # p05 at rank 0.1 -> -0.1 + 0.1*0.15 = -0.085; p50 = 0.05; p95 at 1.9 -> 0.05 + 0.9*0.35
    assert lr["deltas"] == 3
    assert lr["delta_mean"] == approx(0.116667, abs=1e-6)
    assert (lr["delta_p05"], lr["delta_p50"], lr["delta_p95"]) == approx((-0.085, 0.05, 0.365))
    assert lr["answered"] == 1 and lr["win_rate"] == 0.2


def test_plain_number_outputs_are_label_and_value(credit):
    rules = model_row(credit, "rules")
    # labels 1, 0, 0 against 1, 0, 1 -> 2/3; deltas 1-0.9, 0-0.2, 0-0.7 = 0.1, -0.2, -0.7:
    # mean -0.8/3; sorted -0.7, -0.2, 0.1: p05 -0.7 + 0.1*0.5 = -0.65, p50 -0.2, p95
    # -0.2 + 0.9*0.3 = 0.07
    assert rules["agreement"] == approx(2 / 3)
    assert rules["delta_mean"] == approx(-0.266667, abs=1e-6)
    assert (rules["delta_p05"], rules["delta_p50"], rules["delta_p95"]) == approx(
        (-0.65, -0.2, 0.07)
    )
    assert (rules["latency_p50"], rules["latency_p95"]) == approx((1.5, 2.0))
    assert rules["late_rate"] == 0 and rules["win_rate"] == 0.2


def test_models_are_ordered_by_role(credit):
    assert list(credit.models["model"]) == ["gbm", "lr", "rules"]


def test_reasons_are_counted_per_answering_model(credit):
    counted = {(r.model, r.reason): r.count for r in credit.reasons.itertuples()}
    assert counted == {
        ("gbm", "preferred"): 2,
        ("lr", "fallback: gbm late"): 1,
        ("rules", "backstop: gbm failed, lr late"): 1,
        (None, "enrichment_failed: missing field amount"): 1,
    }


def test_canary_drift_on_the_credit_archive(credit):
    # Champion values 0.2, 0.7, 0.9 -> deciles 0.3 0.4 0.5 0.6 0.7 0.74 0.78 0.82 0.86; the
    # champion fills bins 0, 5, 9 (1/3 each), lr's 0.1, 0.6, 0.75, 0.8 fill bins 0, 4, 6, 7
    # (1/4 each). PSI = (1/4-1/3)ln(3/4) + 3*(1/4-1e-4)ln(2500) + 2*(1e-4-1/3)ln(3e-4)
    #                 = 0.023974 + 3*1.955229 + 2*2.703098 = 11.295857
    (drift,) = credit.drift
    assert drift.canary == "lr" and (drift.champion_n, drift.canary_n) == (3, 4)
    assert drift.edges == approx([0.3, 0.4, 0.5, 0.6, 0.7, 0.74, 0.78, 0.82, 0.86])
    assert drift.window_psi == approx(11.295857, abs=1e-6)
    assert drift.hourly["psi"].tolist() == approx([11.295857], abs=1e-6)  # one hour


# ---- PSI ---------------------------------------------------------------------------------


def test_psi_by_hand():
    # Reference 1..8 in 4 bins: quartiles at ranks 1.75, 3.5, 5.25 -> edges 2.75, 4.5, 6.25,
    # shares 1/4 each. Current 1,1,1 | 4 | 5,6 | 7,8 -> 3/8, 1/8, 2/8, 2/8.
    # PSI = (3/8-1/4)ln(3/2) + (1/8-1/4)ln(1/2) = 0.125*(0.405465 + 0.693147) = 0.137327
    reference = [1, 2, 3, 4, 5, 6, 7, 8]
    edges = bin_edges(reference, bins=4)
    assert edges.tolist() == [2.75, 4.5, 6.25]
    assert psi(reference, [1, 1, 1, 4, 5, 6, 7, 8], edges) == approx(0.137327, abs=1e-6)
    assert psi(reference, reference, edges) == 0


def test_a_value_on_an_edge_goes_to_the_upper_bin():
    edges = np.array([2.75, 4.5, 6.25])
    assert metrics.bin_shares([1, 2.75, 4.5, 7], edges).tolist() == [0.25, 0.25, 0.25, 0.25]


def test_psi_floors_empty_bins():
    # Current all in bin 0: (1-1/4)ln(4) + 3*(1e-4-1/4)ln(1e-4/(1/4))
    #                     = 1.039721 + 3*1.955229 = 6.905408
    edges = bin_edges([1, 2, 3, 4, 5, 6, 7, 8], bins=4)
    assert psi([1, 2, 3, 4, 5, 6, 7, 8], [1, 1, 1, 1], edges) == approx(6.905408, abs=1e-6)
    assert math.isnan(psi([1, 2], [], edges))


def test_equal_quantiles_merge_into_fewer_bins():
    assert bin_edges([0, 0, 0, 0, 1], bins=10).tolist() == approx([0.0, 0.2, 0.6])


def test_drift_per_hour_against_bins_of_the_whole_window(tmp_path):
    # Champion a: 1,2,5,6 at 10:00 and 3,4,7,8 at 11:00 (window 1..8 -> edges 2.75, 4.5, 6.25).
    # Canary b: the same 1,2,5,6 at 10:00 -> PSI 0. At 11:00 3 | 7,8,8 against 3,4 | 7,8:
    # shares (0, 1/4, 0, 3/4) vs (0, 1/2, 0, 1/2) -> 0.25 ln2 + 0.25 ln1.5 = 0.274653.
    # Window: b is 1,2 | 3 | 5,6 | 7,8,8 -> the 0.137327 of test_psi_by_hand.
    rows = []
    pairs = zip([1, 2, 5, 6, 3, 4, 7, 8], [1, 2, 5, 6, 3, 7, 8, 8], strict=True)
    for i, (a, b) in enumerate(pairs):
        at = T0 if i < 4 else T0 + HOUR
        rows += [score(f"d{i}", "a", "champion", str(a), 5, at=at)]
        rows += [score(f"d{i}", "b", "canary", str(b), 5, at=at)]
    write_rows(tmp_path, "scores", rows, service="drift")
    scores, decisions = report.load(tmp_path, service="drift", window=Window())
    (drift,) = metrics.build_reports(scores, decisions, bins=4)[0].drift
    assert drift.hourly["hour"].dt.hour.tolist() == [10, 11]
    assert drift.hourly["psi"].tolist() == approx([0.0, 0.274653], abs=1e-6)
    assert drift.window_psi == approx(0.137327, abs=1e-6)


# ---- outputs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fields", "expected"),
    [
        ('{"label": "yes", "probability": 0.7}', OutputFields(), ("yes", 0.7)),
        ('{"class": 2, "score": 3}', OutputFields(label="class", value="score"), (2, 3.0)),
        ('{"probability": 0.7}', OutputFields(), (None, 0.7)),
        ('{"label": 1, "probability": "high"}', OutputFields(), (1, math.nan)),
        ("0.25", OutputFields(), (0.25, 0.25)),
        ("0.25", OutputFields(threshold=0.5), (False, 0.25)),
        ('{"probability": 0.5}', OutputFields(threshold=0.5), (True, 0.5)),
        ('"approve"', OutputFields(), ("approve", math.nan)),
        ("true", OutputFields(), (True, math.nan)),
        ('{"label": [1, 2]}', OutputFields(), ("[1,2]", math.nan)),
        ("not json", OutputFields(), (None, math.nan)),
        (None, OutputFields(), (None, math.nan)),
    ],
)
def test_read_output(text, fields, expected):
    label, value = read_output(text, fields)
    assert label == expected[0] and type(label) is type(expected[0])
    assert value == approx(expected[1], nan_ok=True)


def test_notes_name_the_missing_field_and_the_flag():
    outputs = ['{"class": "a", "score": 0.2}']
    notes = metrics.output_notes(outputs, OutputFields())
    assert notes == [
        "no output object has the label field 'label' (fields: class, score), so agreement is "
        "empty; pass --label-field NAME or --threshold T",
        "no output object has a number in 'probability' (fields: class, score), so deltas and "
        "drift are empty; pass --output-field NAME",
    ]
    assert metrics.output_notes(outputs, OutputFields(label="class", value="score")) == []
    assert metrics.output_notes(["0.3", '"x"'], OutputFields()) == []  # no objects


def fraud_archive(root):
    rows = [
        score("q1", "m1", "champion", '{"class": "fraud", "score": 0.9}', 5),
        score("q2", "m1", "champion", '{"class": "ok", "score": 0.1}', 5),
        score("q1", "m2", "challenger", '{"class": "fraud", "score": 0.7}', 5),
        score("q2", "m2", "challenger", '{"class": "fraud", "score": 0.6}', 5),
    ]
    write_rows(root, "scores", rows, service="fraud")
    write_rows(root, "decisions", [decision("q1", "m1", "preferred")], service="fraud")
    return root


def test_cli_chooses_the_output_fields(tmp_path, capsys):
    # m2 against m1: classes agree on q1 only -> 50%; scores 0.7-0.9, 0.6-0.1 -> mean +0.15
    root = fraud_archive(tmp_path)
    argv = ["report", "--archive", str(root), "--label-field", "class", "--output-field", "score"]
    assert cli.main(argv) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("m2"))
    assert line.split()[:11] == [
        "m2",
        "challenger",
        "2",
        "0.0%",
        "0.0%",
        "5.0",
        "5.0",
        "5.0",
        "50.0%",
        "2",
        "+0.1500",
    ]

    assert cli.main(["report", "--archive", str(root)]) == 0
    out = capsys.readouterr().out
    assert "note: no output object has the label field 'label'" in out
    assert "pass --output-field NAME" in out


# ---- the window --------------------------------------------------------------------------

NOW = datetime(2024, 5, 3, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=timezone.utc)),
        ("2024-05-01T13:30", datetime(2024, 5, 1, 13, 30, tzinfo=timezone.utc)),
        ("2024-05-01T13:30Z", datetime(2024, 5, 1, 13, 30, tzinfo=timezone.utc)),
        ("2024-05-01 15:30:00+02:00", datetime(2024, 5, 1, 13, 30, tzinfo=timezone.utc)),
        ("2h", datetime(2024, 5, 3, 10, 0, tzinfo=timezone.utc)),
        ("90m", datetime(2024, 5, 3, 10, 30, tzinfo=timezone.utc)),
        ("7d", datetime(2024, 4, 26, 12, 0, tzinfo=timezone.utc)),
        ("1w", datetime(2024, 4, 26, 12, 0, tzinfo=timezone.utc)),
    ],
)
def test_parse_time(text, expected):
    assert parse_time(text, now=NOW) == expected


def test_bad_times_name_the_flag_and_the_forms():
    with pytest.raises(ArchiveError, match=r"--until '2 hours' is not a time: expected an ISO"):
        parse_time("2 hours", now=NOW, flag="--until")
    with pytest.raises(ArchiveError, match="is not before --until"):
        Window.parse("1h", "2h", now=NOW)


def test_the_window_selects_by_received_time(archive):
    later = [
        score("r9", "gbm", "champion", '{"label": 1, "probability": 0.5}', 5, at=T0 + 2 * HOUR)
    ]
    write_rows(archive, "scores", later, service="credit")
    after = Window.parse("2024-05-01T11:00Z", None, now=NOW)
    scores, decisions = report.load(archive, service="credit", window=after)
    assert scores["request_id"].tolist() == ["r9"] and decisions.empty
    before = Window.parse(None, "2024-05-01T11:00", now=NOW)
    scores, decisions = report.load(archive, service=None, window=before)
    assert len(scores) == 13 and len(decisions) == 5


def test_an_empty_window_is_an_error_naming_the_services(archive, capsys):
    assert cli.main(["report", "--archive", str(archive), "--since", "1d"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no scores or decisions in {archive} received from")
    assert "services in the archive: credit; check --archive, --service and --since/--until" in err


# ---- the command -------------------------------------------------------------------------


def test_cli_summary_and_html(archive, tmp_path, capsys):
    page = tmp_path / "report.html"
    assert cli.main(["report", "--archive", str(archive), "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert "credit: 5 requests, 5 decisions, compared with gbm (first choice of policy v1)" in out
    lr = next(x for x in out.splitlines() if x.strip().startswith("lr "))
    assert "66.7%" in lr and "+0.1167" in lr and "33.5" in lr
    assert "enrichment_failed: missing field amount" in out
    assert "11.2959" in out  # the canary's PSI

    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<h2>credit</h2>" in text
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert [alt for alt, _ in images] == [
        "latency per model",
        "score deltas to the first choice",
        "canary PSI per hour",
        "output value distributions",
    ]
    for _, data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    assert "http" not in text.replace("http-equiv", "")  # nothing fetched from elsewhere


def test_mlflow_run_per_service(archive, tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # anything MLflow might write lands in the test's folder
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("reports", artifact_location=(tmp_path / "art").as_uri())
    argv = [
        "report",
        "--archive",
        str(archive),
        "--since",
        "2024-05-01",
        "--until",
        "2024-05-02",
        "--mlflow",
        "--tracking-uri",
        uri,
        "--experiment",
        "reports",
    ]
    assert cli.main(argv) == 0
    assert f"MLflow runs in experiment 'reports' at {uri}" in capsys.readouterr().out

    (run,) = client.search_runs([experiment])
    assert run.info.status == "FINISHED"
    metrics_ = run.data.metrics
    assert metrics_["agreement.lr"] == approx(2 / 3)
    assert metrics_["agreement.rules"] == approx(2 / 3)
    assert "agreement.gbm" not in metrics_
    assert metrics_["win_rate.gbm"] == approx(0.4)
    assert metrics_["latency_p95.lr"] == approx(33.5)
    assert metrics_["delta_p95.lr"] == approx(0.365)
    assert metrics_["error_rate.gbm"] == approx(0.25)
    assert metrics_["psi.lr"] == approx(11.295857, abs=1e-6)
    (hourly,) = client.get_metric_history(run.info.run_id, "psi_hourly.lr")
    assert hourly.timestamp == T0 and hourly.step == 0
    params = run.data.params
    assert params["since"] == "2024-05-01T00:00:00Z" and params["until"] == "2024-05-02T00:00:00Z"
    assert params["service"] == "credit" and params["champion"] == "gbm"
    assert params["label_field"] == "label" and params["output_field"] == "probability"
    (artifact,) = client.list_artifacts(run.info.run_id)
    assert artifact.path == "report.html"
    local = client.download_artifacts(run.info.run_id, "report.html", str(tmp_path))
    assert "data:image/png;base64," in Path(local).read_text()


def test_mlflow_unreachable_is_a_clear_error(archive, capsys):
    argv = ["report", "--archive", str(archive), "--mlflow", "--tracking-uri", "http://127.0.0.1:9"]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert "no MLflow tracking server answers at http://127.0.0.1:9" in captured.err
    assert captured.out == ""  # refused before the report is computed


def test_mlflow_metric_names(credit):
    names = {name for name, *_ in report.mlflow_metrics(credit)}
    assert {"agreement.lr", "delta_mean.rules", "latency_p99.gbm", "late_rate.lr"} <= names
    assert {"win_rate.rules", "psi.lr", "psi_hourly.lr"} <= names
    assert not any(
        name.endswith(".gbm") and name.startswith(("agreement", "delta")) for name in names
    )


# ---- replay ------------------------------------------------------------------------------


def test_compare_replay_by_hand():
    live = pd.DataFrame(
        [
            score("q1", "gbm", "champion", '{"label": 1, "probability": 0.9}', 5),
            score("q2", "gbm", "champion", '{"label": 0, "probability": 0.2}', 5),
            score("q3", "gbm", "champion", None, 5, status="error"),
            score("q4", "gbm", "champion", '{"label": 1, "probability": 0.6}', 5),
            score("q1", "lr", "canary", "0.5", 5),
        ]
    )
    replay = pd.DataFrame(
        [
            score("q1", "gbm", "champion", '{"label": 1, "probability": 0.8}', 5, replay_id="x"),
            score("q2", "gbm", "champion", '{"label": 1, "probability": 0.4}', 5, replay_id="x"),
            score("q3", "gbm", "champion", '{"label": 0, "probability": 0.1}', 5, replay_id="x"),
            score("q5", "gbm", "champion", '{"label": 0, "probability": 0.3}', 5, replay_id="x"),
            score("q1", "lr", "canary", "0.5", 5, replay_id="x"),
            score("q1", "lr", "canary", "0.9", 9, replay_id="x"),  # a later duplicate
        ]
    )
    got = report.compare_replay(live, replay).set_index("model")
    gbm = got.loc["gbm"]
    # matched q1, q2, q3; q4 only live, q5 only replayed; q3 went error -> ok
    assert (gbm["live"], gbm["replayed"], gbm["matched"]) == (4, 4, 3)
    assert (gbm["missing_in_replay"], gbm["missing_in_live"], gbm["status_changed"]) == (1, 1, 1)
    # ok on both sides: q1 (1 = 1), q2 (1 vs 0) -> 1/2; deltas replay - live -0.1, 0.2:
    # mean 0.05, p05 -0.1 + 0.05*0.3 = -0.085, p95 -0.1 + 0.95*0.3 = 0.185
    assert gbm["compared"] == 2 and gbm["agreement"] == 0.5
    assert (gbm["delta_mean"], gbm["delta_p05"], gbm["delta_p95"]) == approx((0.05, -0.085, 0.185))
    lr = got.loc["lr"]
    assert (lr["matched"], lr["missing_in_replay"], lr["missing_in_live"]) == (1, 0, 0)
    assert lr["agreement"] == 1.0 and lr["delta_mean"] == 0.0


def test_compare_replay_names_missing_columns():
    live = pd.DataFrame({"request_id": ["q1"], "model": ["m"]})
    with pytest.raises(ArchiveError, match="the live scores lacks the column.s. status, output"):
        report.compare_replay(live, live)


def test_compare_replay_reads_the_replay_view(archive):
    from rendezvous.archive.sql import ArchiveSQL

    replayed = [
        score("r1", "gbm", "champion", '{"label": 0, "probability": 0.4}', 5, replay_id="a")
    ]
    write_rows(archive, "replay", replayed, service="credit")
    with ArchiveSQL(archive) as db:
        live = db.frame("SELECT * FROM scores WHERE model = 'gbm'")
        replay = db.frame("SELECT * FROM replay WHERE replay_id = ?", ["a"])
    (row,) = report.compare_replay(live, replay).to_dict("records")
    assert (row["matched"], row["missing_in_replay"], row["compared"]) == (1, 3, 1)
    assert row["agreement"] == 0.0 and row["delta_mean"] == approx(-0.5)
    assert np.isclose(row["delta_p50"], -0.5)


# ---- imports -----------------------------------------------------------------------------


def _loaded(imports: str) -> list[str]:
    code = (
        f"import json, sys, {imports};"
        "print(json.dumps([m for m in ('pandas', 'duckdb', 'mlflow', 'matplotlib', 'pyflink') "
        "if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_the_cli_modules_load_nothing_heavy():
    """The CLI imports sql and report to build its parser; that must stay fast."""
    assert _loaded("rendezvous.archive.sql, rendezvous.archive.report") == []


def test_the_archive_modules_do_not_load_pyflink():
    loaded = _loaded("rendezvous.archive.metrics, rendezvous.archive.render")
    assert "pandas" in loaded and "pyflink" not in loaded
