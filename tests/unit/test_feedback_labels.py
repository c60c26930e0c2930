"""Feedback bodies and the label type rule (pure), and looking requests up in the archive."""

from __future__ import annotations

import pytest

from rendezvous.archive.layout import ArchiveError, write_rows
from rendezvous.archive.lookup import ArchiveLookup
from rendezvous.proxy.errors import LabelTypeMismatch, SchemaViolation
from rendezvous.proxy.labels import FeedbackBody, check_label, encoded, parse_feedback
from tests.unit.archive_data import HOUR, T0, decision, out

DAY = 24 * HOUR

# ---- the body ----------------------------------------------------------------------------


def test_a_body_with_every_field() -> None:
    body = {"label": 1, "observed_ms": T0, "source": "review queue"}
    assert parse_feedback(body) == FeedbackBody(1, T0, "review queue")
    assert parse_feedback({"label": "fraud"}) == FeedbackBody("fraud")
    assert parse_feedback({"label": False, "observed_ms": 5.0}).observed_ms == 5


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({}, "label", "'label' is required, got nothing"),
        ({"label": None}, "label", "'label' is required, got null"),
        ({"label": [1]}, "label", "got a list"),
        ({"label": {"a": 1}}, "label", "got an object"),
        ({"label": 1, "lable": 2}, "lable", "no field(s) 'lable'"),
        ({"label": 1, "observed_ms": -1}, "observed_ms", "an integer from 0 to"),
        ({"label": 1, "observed_ms": 2**53}, "observed_ms", "an integer from 0 to"),
        ({"label": 1, "observed_ms": 1.5}, "observed_ms", "got 1.5"),
        ({"label": 1, "observed_ms": "2024"}, "observed_ms", 'got "2024"'),
        ({"label": 1, "observed_ms": True}, "observed_ms", "got true"),
        ({"label": 1, "source": 3}, "source", "must be a string"),
        ({"label": 1, "source": "x" * 201}, "source", "at most 200"),
        ([1], None, "must be a JSON object"),
    ],
)
def test_a_bad_body_names_its_field_and_the_fix(body, field, says) -> None:
    with pytest.raises(SchemaViolation) as caught:
        parse_feedback(body)
    assert caught.value.field == field and caught.value.status == 422
    assert says in caught.value.message
    assert "send" in caught.value.message or "remove" in caught.value.message


# ---- the type rule -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "answer", "stored"),
    [
        (0, out(1, 0.9), 0),  # a class the answer did not predict is a valid label
        (1.0, out(1, 0.9), 1),  # an integral number is taken as an integer
        ("spam", out("ham", 0.6), "spam"),
        (True, out(False, 0.6), True),
        (42, "41.5", 42.0),  # a regressor's number: an integer is taken as a float
        (41.9, "41.5", 41.9),
        (3, "7", 3),  # a plain integer output
        ("late", None, "late"),  # no answer: any scalar
        (7, '{"probability": 0.3}', 7),  # no label in the output
        (2.5, '"unparsable', 2.5),
    ],
)
def test_a_label_of_the_answers_type_is_taken(label, answer, stored) -> None:
    got = check_label(label, answer, request_id="r1", service="credit")
    assert got == stored and type(got) is type(stored)


@pytest.mark.parametrize(
    ("label", "answer", "says"),
    [
        ("1", out(1, 0.9), "must be an integer, as the service answered it (label 1), got string"),
        (1.5, out(1, 0.9), "must be an integer"),
        (True, out(1, 0.9), "got boolean true"),
        (1, out("ham", 0.6), 'must be a string, as the service answered it (label "ham")'),
        (1, out(True, 0.6), "must be a boolean"),
        ("41", "41.5", "must be a number"),
        (False, "41.5", "must be a number"),
    ],
)
def test_a_label_of_another_type_is_refused_naming_the_field(label, answer, says) -> None:
    with pytest.raises(LabelTypeMismatch) as caught:
        check_label(label, answer, request_id="r1", service="credit")
    exc = caught.value
    assert (exc.status, exc.code, exc.field, exc.request_id) == (422, "label_type", "label", "r1")
    assert says in exc.message and "send " in exc.message and "'credit'" in exc.message


def test_the_label_is_stored_as_json() -> None:
    assert [encoded(v) for v in (1, "a", True, 2.5)] == ["1", '"a"', "true", "2.5"]


# ---- the archive lookup ------------------------------------------------------------------


def _label(rid: str, at: int) -> dict:
    return {"request_id": rid, "label": "1", "labelled_ms": at}


def test_a_lookup_finds_the_decision_and_its_label(tmp_path) -> None:
    write_rows(
        tmp_path,
        "decisions",
        [decision("r1", "gbm", "preferred", output=out(1, 0.9))],
        service="credit",
    )
    write_rows(
        tmp_path, "decisions", [decision("r2", None, "no_answer: all failed")], service="credit"
    )
    lookup = ArchiveLookup(tmp_path, lookback_days=30)
    found = lookup.find("r1", now_ms=T0 + HOUR)
    assert (found.service, found.received_ms, found.output, found.labelled) == (
        "credit",
        T0,
        out(1, 0.9),
        False,
    )
    assert lookup.find("r2", now_ms=T0).output is None
    assert lookup.find("nope", now_ms=T0) is None

    write_rows(tmp_path, "feedback", [_label("r1", T0 + 2 * DAY)], service="credit")
    write_rows(tmp_path, "feedback", [_label("r2", T0)], service="fraud")  # another service
    assert lookup.find("r1", now_ms=T0 + 3 * DAY).labelled
    assert not lookup.find("r2", now_ms=T0).labelled


def test_an_error_decision_is_held_to_its_first_ok_score(tmp_path) -> None:
    row = decision("r1", None, "no_answer: gbm late")
    row["scores"] = [
        {
            "model": "gbm",
            "version": "1",
            "role": "champion",
            "status": "error",
            "output": None,
            "error": "boom",
            "latency_ms": 5,
            "late": False,
        },
        {
            "model": "lr",
            "version": "1",
            "role": "canary",
            "status": "ok",
            "output": out("ham", 0.7),
            "error": None,
            "latency_ms": 90,
            "late": True,
        },
    ]
    write_rows(tmp_path, "decisions", [row], service="mail")
    assert ArchiveLookup(tmp_path).find("r1", now_ms=T0).output == out("ham", 0.7)


def test_decisions_older_than_the_lookback_are_not_read(tmp_path) -> None:
    write_rows(tmp_path, "decisions", [decision("r1", "gbm", "preferred")], service="credit")
    assert ArchiveLookup(tmp_path, lookback_days=2).find("r1", now_ms=T0 + 2 * DAY) is not None
    assert ArchiveLookup(tmp_path, lookback_days=2).find("r1", now_ms=T0 + 3 * DAY) is None
    assert ArchiveLookup(tmp_path, lookback_days=0).find("r1", now_ms=T0 + 999 * DAY)


def test_no_archive_knows_no_request_and_a_broken_file_is_an_error(tmp_path) -> None:
    assert ArchiveLookup(tmp_path / "missing").find("r1", now_ms=T0) is None
    (path,) = write_rows(tmp_path, "decisions", [decision("r1", "gbm", "x")], service="credit")
    path.write_bytes(b"not parquet at all")
    with pytest.raises(ArchiveError, match="cannot read the archive's decisions"):
        ArchiveLookup(tmp_path).find("r1", now_ms=T0)
    with pytest.raises(ArchiveError, match="lookback_days"):
        ArchiveLookup(tmp_path, lookback_days=-1)
