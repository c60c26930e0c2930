"""Models against the true labels: accuracy, AUC and log-loss, by hand on small archives."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from rendezvous import cli
from rendezvous.archive import metrics, report
from rendezvous.archive.layout import write_rows
from rendezvous.archive.outcomes import outcome_stats, true_labels
from rendezvous.archive.report import Window
from tests.unit.archive_data import HOUR, T0, credit_archive

approx = pytest.approx


def label(rid: str, value: str, at: int, service: str = "credit") -> dict:
    return {"request_id": rid, "label": value, "labelled_ms": at, "service": service}


@pytest.fixture
def labelled(tmp_path):
    """The credit archive (tests/unit/archive_data.py) with true labels r1=1, r2=0, r3=0, r4=1
    given a day later; a second, later label for r1 that does not count; labels of another
    service and of a request that was never archived."""
    root = credit_archive(tmp_path / "archive")
    day = T0 + 24 * HOUR
    write_rows(root, "feedback", [label("r1", "1", day), label("r2", "0", day + 1)])
    write_rows(root, "feedback", [label("r3", "0", day), label("r4", "1", day + 2 * HOUR)])
    write_rows(root, "feedback", [label("r1", "0", day + 5), label("zz", "1", day)])
    write_rows(root, "feedback", [label("r2", "1", day, service="fraud")])
    return root


def _credit(root, **window) -> metrics.ServiceReport:
    w = Window(**window)
    scores, decisions = report.load(root, service=None, window=w)
    labels = report.load_labels(root, service=None, window=w)
    (credit,) = metrics.build_reports(scores, decisions, labels=labels)
    return credit


def _row(r: metrics.ServiceReport, model: str) -> dict:
    (row,) = r.models[r.models["model"] == model].to_dict("records")
    return row


def test_each_model_against_the_first_true_label_of_each_request(labelled):
    credit = _credit(labelled)
    assert credit.labelled == 4  # r1..r4; zz is no request of the window, fraud's r2 another's
    # gbm scored r1..r3 ok: labels 1, 0, 1 against 1, 0, 0. The probability of class 1 is
    # 0.9, 1 - 0.2 = 0.8 and 0.7: the one positive outranks both negatives (AUC 1);
    # log-loss = -(ln 0.9 + ln 0.2 + ln 0.3) / 3.
    gbm = _row(credit, "gbm")
    assert (gbm["labelled"], gbm["accuracy"]) == (3, approx(2 / 3))
    assert gbm["auc"] == approx(1.0)
    assert gbm["log_loss"] == approx(-(math.log(0.9) + math.log(0.2) + math.log(0.3)) / 3)
    # lr (the canary, a shadow) r1..r4: labels 1, 1, 1, 0 against 1, 0, 0, 1; P(1) = 0.8, 0.6,
    # 0.75, 0.9: positives 0.8, 0.9 above negatives 0.6, 0.75.
    lr = _row(credit, "lr")
    assert (lr["labelled"], lr["accuracy"], lr["auc"]) == (4, 0.25, approx(1.0))
    expected = -(math.log(0.8) + math.log(0.4) + math.log(0.25) + math.log(0.9)) / 4
    assert lr["log_loss"] == approx(expected)
    # rules answers plain numbers 1, 0, 0, 1: all right, and no probability to rank by
    rules = _row(credit, "rules")
    assert (rules["labelled"], rules["accuracy"]) == (4, 1.0)
    assert math.isnan(rules["auc"]) and math.isnan(rules["log_loss"])
    assert rules["agreement"] == approx(2 / 3)  # beside agreement, unchanged


def test_without_labels_the_figures_are_empty(tmp_path):
    credit = _credit(credit_archive(tmp_path / "archive"))
    assert credit.labelled == 0 and (credit.models["labelled"] == 0).all()
    assert credit.models["accuracy"].isna().all() and credit.models["auc"].isna().all()


def test_labels_of_requests_outside_the_window_are_noted(tmp_path):
    root = credit_archive(tmp_path / "archive")
    write_rows(root, "feedback", [label("elsewhen", "1", T0)])
    credit = _credit(root)
    assert credit.labelled == 0
    assert any("1 true label(s) of this service, none for a request" in n for n in credit.notes)


def test_the_first_label_by_time_wins_whatever_the_row_order():
    rows = pd.DataFrame(
        {
            "request_id": ["a", "a", "b", "c"],
            "label": ["0", "1", '"x"', "[1]"],
            "labelled_ms": [9, 3, 1, 1],
        }
    )
    truth = true_labels(rows)
    assert truth.to_dict() == {"a": 1, "b": "x"}  # a list is no label


def _rows(labels, values, outputs=None) -> pd.DataFrame:
    ids = [f"q{i}" for i in range(len(labels))]
    frame = pd.DataFrame({"request_id": ids, "label": labels, "value": values})
    if outputs is not None:
        frame["output"] = outputs
    return frame


def test_a_threshold_reads_the_value_as_the_probability_of_true():
    truth = pd.Series([True, False, True, False], index=["q0", "q1", "q2", "q3"], dtype=object)
    # --threshold 0.5 on plain numbers 0.9, 0.6, 0.4, 0.1: labels True, True, False, False
    rows = _rows([True, True, False, False], [0.9, 0.6, 0.4, 0.1], ["0.9", "0.6", "0.4", "0.1"])
    got = outcome_stats(rows, truth, thresholded=True)
    assert (got["labelled"], got["accuracy"], got["auc"]) == (4, 0.5, approx(0.75))
    loss = -(math.log(0.9) + math.log(0.4) + math.log(0.4) + math.log(0.9)) / 4
    assert got["log_loss"] == approx(loss)


def test_string_classes_take_the_later_one_as_positive():
    truth = pd.Series(["spam", "ham"], index=["q0", "q1"], dtype=object)
    got = outcome_stats(_rows(["spam", "spam"], [0.8, 0.7]), truth, thresholded=False)
    # P(spam) = 0.8 for the spam, 0.7 for the ham
    assert got["accuracy"] == 0.5 and got["auc"] == approx(1.0)
    assert got["log_loss"] == approx(-(math.log(0.8) + math.log(0.3)) / 2)


@pytest.mark.parametrize(
    ("labels", "values", "truth"),
    [
        ([0, 1, 2], [0.5, 0.6, 0.7], [0, 1, 2]),  # three classes: no positive class
        ([0, 1], [1.5, 0.6], [0, 1]),  # not probabilities
        ([0, 1], [math.nan, 0.6], [0, 1]),  # a label without a probability
    ],
)
def test_no_auc_or_log_loss_without_two_classes_and_probabilities(labels, values, truth):
    index = [f"q{i}" for i in range(len(truth))]
    got = outcome_stats(_rows(labels, values), pd.Series(truth, index=index), thresholded=False)
    assert got["accuracy"] == 1.0
    assert math.isnan(got["auc"]) and math.isnan(got["log_loss"])


def test_one_true_class_gives_log_loss_but_no_auc():
    truth = pd.Series([1, 1], index=["q0", "q1"], dtype=object)
    got = outcome_stats(_rows([1, 0], [0.9, 0.6]), truth, thresholded=False)
    assert math.isnan(got["auc"])
    assert got["log_loss"] == approx(-(math.log(0.9) + math.log(0.4)) / 2)


def test_a_string_label_is_not_the_integer_class():
    truth = pd.Series(["1"], index=["q0"], dtype=object)
    assert outcome_stats(_rows([1], [0.9]), truth, thresholded=False)["accuracy"] == 0.0


def test_the_report_shows_and_logs_the_figures(labelled, capsys, tmp_path):
    page = tmp_path / "r.html"
    assert cli.main(["report", "--archive", str(labelled), "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert "against the true labels of 4 request(s)" in out
    table = out.split("against the true labels", 1)[1]
    gbm = next(x for x in table.splitlines() if x.strip().startswith("gbm "))
    assert gbm.split() == ["gbm", "champion", "3", "66.7%", "1.0000", "0.9729", "-"]
    lr = next(x for x in table.splitlines() if x.strip().startswith("lr "))
    assert lr.split() == ["lr", "canary", "4", "25.0%", "1.0000", "0.6578", "66.7%"]
    assert "Models against the true labels" in page.read_text()
    names = {name: value for name, value, *_ in report.mlflow_metrics(_credit(labelled))}
    assert names["accuracy.lr"] == 0.25 and names["labelled.gbm"] == 3
    assert names["auc.gbm"] == approx(1.0) and "auc.rules" not in names


def test_without_labels_the_report_says_how_to_give_them(tmp_path, capsys):
    root = credit_archive(tmp_path / "archive")
    assert cli.main(["report", "--archive", str(root)]) == 0
    assert "no true labels for these requests (POST /v1/requests/{id}/feedback)" in (
        capsys.readouterr().out
    )
