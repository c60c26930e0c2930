"""``rendezvous sql``: views over the archive's Parquet files, output formats, errors."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rendezvous import cli
from rendezvous.archive import layout
from rendezvous.archive.layout import ArchiveError, write_rows
from rendezvous.archive.sql import ArchiveSQL, run
from tests.unit.archive_data import HOUR, T0, credit_archive, score


@pytest.fixture
def archive(tmp_path):
    return credit_archive(tmp_path / "archive")


def rows(db: ArchiveSQL, query: str) -> list[tuple]:
    return db.con.sql(query).fetchall()


def test_views_read_the_files_with_partition_columns(archive):
    with ArchiveSQL(archive) as db:
        assert rows(db, "SELECT count(*) FROM scores") == [(13,)]
        assert rows(db, "SELECT count(*) FROM decisions") == [(5,)]
        assert rows(db, "SELECT count(*) FROM requests") == [(5,)]
        got = rows(db, "SELECT DISTINCT service, dt, hr FROM scores")
        assert got == [("credit", dt.date(2024, 5, 1), 10)]
        assert rows(db, "SELECT typeof(hr), typeof(dt) FROM decisions LIMIT 1") == [
            ("INTEGER", "DATE")
        ]
        late = rows(db, "SELECT request_id FROM scores WHERE model = 'gbm' AND late")
        assert late == [("r3",)]
        nested = rows(db, "SELECT len(scores) FROM decisions WHERE request_id = 'r1'")
        assert nested == [(0,)]


def test_view_columns_are_the_schema_then_the_partitions(archive):
    with ArchiveSQL(archive) as db:
        for table in layout.TABLES:
            described = [r[0] for r in rows(db, f"DESCRIBE {table}")]
            assert described == list(layout.columns(table))
            assert db.views[table] == layout.columns(table)


def test_missing_tables_are_empty_views_with_the_right_columns(tmp_path):
    with ArchiveSQL(tmp_path / "never-written") as db:
        # no replay view before a replay; labels is the first label of each request
        assert set(db.views) == {*layout.TABLES, "labels"}
        for table in layout.TABLES:
            assert rows(db, f"SELECT count(*) FROM {table}") == [(0,)]
            described = {r[0]: r[1] for r in rows(db, f"DESCRIBE {table}")}
            assert list(described) == list(layout.columns(table))
        types = {r[0]: r[1] for r in rows(db, "DESCRIBE scores")}
        assert types["received_ms"] == "BIGINT" and types["late"] == "BOOLEAN"
        assert types["dt"] == "DATE" and types["hr"] == "INTEGER"
        # a query that joins and filters on the columns works on the empty views
        joined = "SELECT s.model, count(*) FROM scores s JOIN decisions d USING (request_id)"
        assert rows(db, joined + " WHERE s.late GROUP BY 1") == []


def test_replay_view_appears_with_its_files(archive):
    replayed = score("r1", "gbm", "champion", "1", 5, replay_id="rp-1")
    write_rows(archive, "replay", [replayed], service="credit")
    with ArchiveSQL(archive) as db:
        assert db.views["replay"][-4:] == ("replay_id", "service", "dt", "hr")
        assert rows(db, "SELECT replay_id, request_id, hr FROM replay") == [("rp-1", "r1", 10)]


def test_flink_part_files_count_and_hidden_files_do_not(tmp_path):
    (written,) = write_rows(tmp_path, "scores", [score("a", "m", "champion", "1", 5)], service="s")
    written.rename(written.with_name("part-4f1e-0-0"))
    (written.parent / ".part-4f1e-0-1.inprogress.77").write_bytes(b"half written")
    (written.parent / "_SUCCESS").write_bytes(b"")
    write_rows(tmp_path, "scores", [score("b", "m", "champion", "1", 5, at=T0 + HOUR)], service="s")
    with ArchiveSQL(tmp_path) as db:
        assert rows(db, "SELECT request_id, hr FROM scores ORDER BY 1") == [("a", 10), ("b", 11)]


def test_a_column_missing_from_older_files_reads_as_null(tmp_path):
    folder = layout.partition_dir(tmp_path, "scores", "s", T0)
    folder.mkdir(parents=True)
    full = pa.Table.from_pylist(
        [score("a", "m", "champion", "1", 5)], layout.arrow_schema("scores")
    )
    pq.write_table(full.drop_columns(["error"]), folder / "part-old-0-0")
    with ArchiveSQL(tmp_path) as db:
        assert rows(db, "SELECT request_id, error FROM scores") == [("a", None)]
        assert db.views["scores"] == layout.columns("scores")


def _cells(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if "│" in line]


def test_table_format_prints_a_box_table(archive):
    out = io.StringIO()
    run(archive, "SELECT model, count(*) AS n FROM scores GROUP BY 1 ORDER BY 1", stdout=out)
    assert _cells(out.getvalue()) == [
        ["model", "n"],
        ["varchar", "int64"],
        ["gbm", "4"],
        ["lr", "5"],
        ["rules", "4"],
    ]


def test_table_format_fits_the_width(archive):
    out = io.StringIO()
    run(archive, "SELECT * FROM requests", stdout=out, width=80)
    lines = out.getvalue().splitlines()
    assert max(map(len, lines)) <= 80
    assert "5 rows" in lines[-2] or "5 rows" in lines[-1]


def test_csv_json_and_parquet_formats(archive, tmp_path):
    query = "SELECT request_id, model, latency_ms, dt FROM scores WHERE model = 'lr' ORDER BY 1, 3"
    out = io.StringIO()
    run(archive, query, fmt="csv", stdout=out)
    table = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(r["request_id"], r["latency_ms"]) for r in table] == [
        ("r1", "5"),
        ("r1", "50"),
        ("r2", "15"),
        ("r3", "25"),
        ("r4", "35"),
    ]
    assert table[0]["dt"] == "2024-05-01"

    out = io.StringIO()
    run(archive, query, fmt="json", stdout=out)
    objects = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(objects) == 5
    assert objects[0] == {"request_id": "r1", "model": "lr", "latency_ms": 5, "dt": "2024-05-01"}

    target = tmp_path / "lr.parquet"
    run(archive, query, fmt="parquet", output=target)
    assert pq.read_table(target).column("latency_ms").to_pylist() == [5, 50, 15, 25, 35]

    target = tmp_path / "lr.csv"
    run(archive, query, fmt="csv", output=target)
    assert target.read_text().splitlines()[0] == "request_id,model,latency_ms,dt"


def test_parquet_needs_an_output_file(archive):
    with pytest.raises(ArchiveError, match="--format parquet writes a binary file; pass --output"):
        run(archive, "SELECT 1", fmt="parquet")


def test_bad_sql_is_one_line_naming_the_views_and_columns(archive, capsys):
    code = cli.main(["sql", "SELECT modle FROM scores", "--archive", str(archive)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith('error: Binder Error: Referenced column "modle" not found')
    assert "Views over" in err
    assert "scores(request_id, model, version, role, status, output" in err
    assert "decisions(request_id, received_ms" in err and "requests(request_id" in err
    assert "service, dt, hr)" in err


def test_unknown_view_is_named(archive, capsys):
    assert cli.main(["sql", "SELECT * FROM score", "--archive", str(archive)]) == 2
    err = capsys.readouterr().err
    assert "Table with name score does not exist" in err and "scores(" in err


def test_cli_writes_the_chosen_format(archive, tmp_path, capsys):
    target = tmp_path / "out.json"
    query = "SELECT reason FROM decisions ORDER BY 1"
    argv = ["sql", query, "--archive", str(archive), "--format", "json", "--output", str(target)]
    assert cli.main(argv) == 0
    reasons = [json.loads(line)["reason"] for line in target.read_text().splitlines()]
    assert reasons[0] == "backstop: gbm failed, lr late" and len(reasons) == 5


def test_cli_defaults_to_the_stack_archive(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    credit_archive(home / "data" / "archive")
    monkeypatch.setenv("RDV_HOME", str(home))
    assert cli.main(["sql", "SELECT count(*) AS n FROM decisions", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n", "5"]


def test_cli_on_a_missing_archive_says_so_and_answers_empty(tmp_path, capsys):
    missing = tmp_path / "nothing"
    argv = ["sql", "SELECT count(*) AS n FROM scores", "--archive", str(missing), "--format", "csv"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["n", "0"]
    assert f"no archive at {missing} yet" in captured.err


def test_labels_keep_the_first_label_of_each_request(tmp_path):
    def label(rid: str, value: str, at: int, service: str = "credit") -> dict:
        return {"request_id": rid, "label": value, "labelled_ms": at, "service": service}

    write_rows(tmp_path, "feedback", [label("r1", "1", T0 + 5), label("r2", "0", T0)])
    # later files: a second label for r1, earlier in time on another hour; the same id elsewhere
    write_rows(tmp_path, "feedback", [label("r1", "0", T0 + 1), label("r2", "1", T0 + 2 * HOUR)])
    write_rows(tmp_path, "feedback", [label("r1", "1", T0 + 9, service="fraud")])
    with ArchiveSQL(tmp_path) as db:
        assert rows(db, "SELECT count(*) FROM feedback") == [(5,)]
        got = rows(db, "SELECT service, request_id, label, labelled_ms FROM labels ORDER BY 1, 2")
        assert db.views["labels"] == layout.columns("feedback")
    assert got == [
        ("credit", "r1", "0", T0 + 1),
        ("credit", "r2", "0", T0),
        ("fraud", "r1", "1", T0 + 9),
    ]


def test_a_label_is_partitioned_by_when_it_was_given(tmp_path):
    (path,) = write_rows(
        tmp_path,
        "feedback",
        [{"request_id": "r", "label": "1", "labelled_ms": T0 + 3 * HOUR}],
        service="credit",
    )
    assert path.parent == layout.partition_dir(tmp_path, "feedback", "credit", T0 + 3 * HOUR)
