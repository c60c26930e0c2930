"""Drift against the past: each canary against its own reference window, and the inputs."""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from rendezvous import cli
from rendezvous.archive import drift, report
from rendezvous.archive.layout import ArchiveError, write_rows
from rendezvous.archive.metrics import bin_edges, psi
from tests.unit.archive_data import HOUR, T0, decision, request, score

pytestmark = pytest.mark.unit

DAY = 24 * HOUR


def read(model: str, role: str, values, at: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "request_id": [f"{model}{at}-{i}" for i in range(len(values))],
            "model": model,
            "role": role,
            "status": "ok",
            "value": list(values),
            "received_ms": at,
        }
    )


def test_a_canary_is_compared_with_its_own_reference_outputs_per_hour():
    rng = np.random.default_rng(3)
    ref_values = rng.uniform(0, 1, 500)
    reference = read("lr", "canary", ref_values, T0)
    same = read("lr", "canary", rng.uniform(0, 1, 300), T0 + DAY)
    moved = read("lr", "canary", rng.uniform(0.6, 1, 300), T0 + DAY + HOUR)
    champion = read("gbm", "champion", rng.uniform(0, 1, 300), T0 + DAY)
    (lr,) = drift.canary_self_drift(pd.concat([same, moved, champion]), reference)
    assert (lr.canary, lr.reference_n, lr.canary_n) == ("lr", 500, 600)
    edges = bin_edges(ref_values)
    expected = [psi(ref_values, same["value"], edges), psi(ref_values, moved["value"], edges)]
    assert lr.hourly["psi"].tolist() == pytest.approx(expected)
    assert expected[0] < 0.1 < 0.25 < expected[1]
    assert lr.window_psi == pytest.approx(
        psi(ref_values, np.concatenate([same["value"], moved["value"]]), edges)
    )
    # no reference outputs of the canary: nothing to compare with
    assert drift.canary_self_drift(same, champion) == []


def test_numeric_features_are_read_from_the_requests_json():
    table = drift.numeric_features(
        ['{"a": 1, "b": "x", "c": true}', '{"a": 2.5, "d": 3}', None, "not json", '{"a": NaN}']
    )
    assert table.columns.tolist() == ["a", "d"]
    assert table["a"].tolist()[:2] == [1.0, 2.5] and table["d"].tolist()[1] == 3.0


def test_each_numeric_feature_gets_a_psi_largest_first():
    rng = random.Random(5)
    then = [json.dumps({"amount": rng.gauss(100, 10), "age": rng.gauss(40, 5)}) for _ in range(400)]
    now = [json.dumps({"amount": rng.gauss(160, 10), "age": rng.gauss(40, 5)}) for _ in range(400)]
    table = drift.feature_drift(now, then)
    assert table["feature"].tolist() == ["amount", "age"]
    assert table["reference_n"].tolist() == [400, 400] and table["current_n"].tolist() == [400, 400]
    amount, age = table["psi"]
    assert amount > 1 and age < 0.1
    assert drift.feature_drift(now, []).empty


# ---- the report --------------------------------------------------------------------------


def drift_archive(root):
    """Day 1 (the reference): canary outputs and amounts around their usual values; day 2:
    the same canary's outputs and the amounts moved up."""
    rng = random.Random(11)
    scores, decisions, requests = [], [], []
    for day, (center, amount) in enumerate(((0.3, 100.0), (0.7, 160.0))):
        for i in range(60):
            rid, at = f"d{day}-{i}", T0 + day * DAY + i * 1000
            value = min(max(rng.gauss(center, 0.05), 0.0), 1.0)
            scores += [
                score(rid, "gbm", "champion", json.dumps(0.5), 5, at=at),
                score(rid, "lr", "canary", json.dumps(value), 5, at=at),
            ]
            decisions.append(decision(rid, "gbm", "preferred", at=at, output=json.dumps(0.5)))
            row = request(rid, at=at)
            row["features"] = json.dumps({"amount": rng.gauss(amount, 5), "flag": True})
            requests.append(row)
    write_rows(root, "scores", scores, service="credit")
    write_rows(root, "decisions", decisions, service="credit")
    write_rows(root, "requests", requests, service="credit")
    return root


def test_the_report_shows_the_canary_and_the_features_against_the_first_day(tmp_path, capsys):
    root = drift_archive(tmp_path / "archive")
    since = datetime.fromtimestamp((T0 + DAY) / 1000, tz=timezone.utc).isoformat()
    page = tmp_path / "report.html"
    argv = ["report", "--archive", str(root), "--since", since, "--html", str(page)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    own = out.index(
        "canary lr against its own outputs in the reference window, received from 2024-05-01 10:00:00"
    )
    assert "input features against the reference window, received from 2024-05-01 10:00:00" in out
    window = next(x for x in out[own:].splitlines() if x.strip().startswith("window"))
    assert float(window.split()[-1]) > 1  # the canary moved from 0.3 to 0.7
    amount = next(x for x in out.splitlines() if x.strip().startswith("amount"))
    assert amount.split()[1:3] == ["60", "60"] and float(amount.split()[-1]) > 1
    assert "flag" not in out  # a boolean is not a numeric feature
    html = page.read_text()
    assert "Canary lr against its own outputs in the reference window" in html
    assert "Input features against the reference window" in html

    # the same day as its own reference: nothing moved
    until = datetime.fromtimestamp((T0 + 2 * DAY) / 1000, tz=timezone.utc).isoformat()
    assert cli.main([*argv[:-2], "--drift-reference", f"{since}/{until}"]) == 0
    out = capsys.readouterr().out
    amount = next(x for x in out.splitlines() if x.strip().startswith("amount"))
    assert float(amount.split()[-1]) < 0.1


def test_the_mlflow_metrics_carry_the_self_and_feature_psi(tmp_path):
    root = drift_archive(tmp_path / "archive")
    now = datetime.fromtimestamp((T0 + 3 * DAY) / 1000, tz=timezone.utc)
    window = report.Window(datetime.fromtimestamp((T0 + DAY) / 1000, tz=timezone.utc), None)
    scores, decisions = report.load(root, service=None, window=window)
    reports = report.build_reports(scores, decisions)
    reference = report.drift_reference_window(root, "first:1d", service="credit", now=now)
    assert reference.since == datetime.fromtimestamp(T0 / 1000, tz=timezone.utc)
    (credit,) = report.with_self_drift(
        reports,
        current=(scores, report.load_reference(root, service=None, window=window)[1]),
        reference=report.load_reference(root, service="credit", window=reference),
        fields=report.OutputFields(),
        described=reference.describe(),
    )
    names = {name for name, *_ in report.mlflow_metrics(credit)}
    assert {"psi_self.lr", "psi_feature.amount"} <= names


@pytest.mark.parametrize("spec", ["first:soon", "yesterday", "2024-05-02/2024-05-01", "/2h"])
def test_a_bad_drift_reference_is_a_clear_error(tmp_path, spec):
    root = drift_archive(tmp_path / "archive")
    with pytest.raises(ArchiveError, match="--drift-reference"):
        report.drift_reference_window(root, spec, service=None, now=datetime.now(timezone.utc))
