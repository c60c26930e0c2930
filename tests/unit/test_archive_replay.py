"""``rendezvous replay``, the parts without a cluster: the model it replays, the rows it
writes and the diff against each live model."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pandas as pd
import pytest

from rendezvous import cli
from rendezvous.archive import layout, tables
from rendezvous.archive.layout import ArchiveError
from rendezvous.archive.metrics import OutputFields
from rendezvous.archive.replay import compare, diff_table, model_spec, new_replay_id
from tests.unit.archive_data import score

pytestmark = pytest.mark.unit


def test_model_spec_tells_a_callable_from_an_mlflow_uri():
    assert model_spec("udfs.zoo:constant", name="c", params={"value": 1}) == {
        "name": "c",
        "role": "replay",
        "callable": "udfs.zoo:constant",
        "params": {"value": 1},
    }
    for uri in ("models:/credit/3", "models:/credit@champion", "runs:/abc123/model"):
        assert model_spec(uri, name="replay") == {"name": "replay", "role": "replay", "uri": uri}


@pytest.mark.parametrize(
    ("uri", "name", "params", "message"),
    [
        ("models:/", "replay", None, "--model-uri: .*no model name"),
        ("models:/credit/3", "replay", {"value": 1}, "--params applies to a Python callable"),
        ("udfs.zoo:constant", "bad name!", None, "--name 'bad name!'"),
    ],
)
def test_model_spec_refuses_with_the_fix(uri, name, params, message):
    with pytest.raises(ArchiveError, match=message):
        model_spec(uri, name=name, params=params)


def test_replay_id_is_sortable_by_time_and_unique():
    at = datetime(2026, 5, 1, 13, 4, 5, tzinfo=timezone.utc)
    first, second = new_replay_id(at), new_replay_id(at)
    assert re.fullmatch(r"20260501T130405Z-[0-9a-f]{6}", first) and first != second


def test_replay_row_has_the_replay_columns_and_compute_time_latency():
    s = {
        "request_id": "q1",
        "service": "credit",
        "model": "m",
        "version": "3",
        "role": "replay",
        "status": "ok",
        "output": "0.5",
        "error": None,
        "received_ms": 1_700_000_000_000,
        "deadline_ms": 1_700_000_000_025,
        "started_ms": 1_800_000_000_000,
        "scored_ms": 1_800_000_000_030,
    }
    row = dict(
        zip(layout.columns("replay"), tables.replay_row(s, replay_id="r1", sla_ms=25), strict=True)
    )
    assert row["latency_ms"] == 30 and row["late"] is True  # 30 ms of compute > 25 ms SLA
    assert (row["replay_id"], row["service"], row["dt"], row["hr"]) == (
        "r1",
        "credit",
        "2023-11-14",
        "22",
    )  # partitioned by when the request was received, like the live scores
    fields = {f["name"]: f for f in layout.avro_schema("replay")["fields"]}
    assert "compute time" in fields["latency_ms"]["doc"]


def test_flink_ddl_of_the_replay_table():
    ddl = tables.flink_ddl("/data/archive", tables=("replay",))
    assert "CREATE TABLE IF NOT EXISTS `replay`" in ddl and "'path' = '/data/archive/replay'" in ddl
    assert "`replay_id` STRING" in ddl and "`requests`" not in ddl


def test_compare_sets_the_replay_against_each_live_model():
    live = pd.DataFrame(
        [
            score("q1", "gbm", "champion", "0.9", 5),
            score("q2", "gbm", "champion", "0.2", 5),
            score("q1", "lr", "canary", "0.5", 5),
            score("q2", "lr", "canary", "0.3", 5),
        ]
    )
    replay = pd.DataFrame(
        [
            score("q1", "new", "replay", "0.8", 5, replay_id="x"),
            score("q2", "new", "replay", "0.2", 5, replay_id="x"),
        ]
    )
    diff = compare(live, replay, OutputFields()).set_index("model")
    assert list(diff.index) == ["gbm", "lr"]
    # against gbm: deltas -0.1 and 0 -> mean -0.05; labels 0.8 vs 0.9 differ, 0.2 = 0.2
    assert diff.loc["gbm", "matched"] == 2 and diff.loc["gbm", "agreement"] == 0.5
    assert diff.loc["gbm", "delta_mean"] == pytest.approx(-0.05)
    # against lr: +0.3 and -0.1 -> mean +0.1, no label in common
    assert diff.loc["lr", "delta_mean"] == pytest.approx(0.1)
    assert diff.loc["lr", "agreement"] == 0.0
    table = diff_table(diff.reset_index())
    assert "against" in table.splitlines()[0] and "gbm" in table and "50.0%" in table


def test_compare_with_no_live_scores_is_empty():
    replay = pd.DataFrame([score("q1", "new", "replay", "0.8", 5, replay_id="x")])
    live = replay.iloc[0:0]
    assert compare(live, replay, OutputFields()).empty


def test_cli_refuses_params_that_are_not_an_object(tmp_path, capsys):
    code = cli.main(
        [
            "replay",
            "--service",
            "s",
            "--model-uri",
            "udfs.zoo:constant",
            "--params",
            "[1]",
            "--archive",
            str(tmp_path),
        ]
    )
    assert code != 0
    assert "--params must be a JSON object" in capsys.readouterr().err


def test_cli_names_the_services_there_are(tmp_path, capsys):
    code = cli.main(
        [
            "replay",
            "--service",
            "nope",
            "--model-uri",
            "udfs.zoo:constant",
            "--archive",
            str(tmp_path),
        ]
    )
    assert code != 0
    assert "no archived requests of service 'nope' (all times)" in capsys.readouterr().err
