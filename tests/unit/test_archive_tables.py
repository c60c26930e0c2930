"""The archive's tables in Flink SQL: the filesystem tables, the replay job's query and rows,
and the one Avro type walk behind the Flink SQL and Arrow types."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pyarrow as pa
import pytest

from rendezvous import serde
from rendezvous.archive import layout, tables
from rendezvous.archive.layout import ArchiveError
from rendezvous.archive.sql import ident, literal

pytestmark = pytest.mark.unit

LATE_EVENING = 1_714_607_999_000  # 2024-05-01T23:59:59.000Z


# ---- the filesystem tables ---------------------------------------------------------------


def _columns(ddl: str) -> list[tuple[str, str]]:
    body = ddl.split(" (\n", 1)[1].split("\n)", 1)[0]
    return [tuple(line.strip().rstrip(",").split(" ", 1)) for line in body.splitlines()]


@pytest.mark.parametrize("table", layout.ALL_TABLES)
def test_a_filesystem_table_has_the_layout_columns_partitioned_last(table: str) -> None:
    ddl = tables.filesystem_ddl("/data/archive/", table)
    assert ddl.startswith(f"CREATE TABLE IF NOT EXISTS `{table}` (\n")
    assert [name.strip("`") for name, _ in _columns(ddl)] == list(layout.columns(table))
    assert _columns(ddl)[-3:] == [("`service`", "STRING"), ("`dt`", "STRING"), ("`hr`", "STRING")]
    assert ") PARTITIONED BY (service, dt, hr) WITH (\n" in ddl
    assert f"'path' = '/data/archive/{table}'" in ddl
    assert "'format' = 'parquet'" in ddl and "NOT NULL" not in ddl


def test_the_ddl_script_is_one_statement_per_table() -> None:
    script = tables.flink_ddl("/a", prefix="x_")
    statements = [s for s in script.split(";\n") if s.strip()]
    assert [s.strip() for s in statements] == [
        tables.filesystem_ddl("/a", t, prefix="x_") for t in layout.TABLES
    ]
    assert script.endswith(");\n") and "`x_replay`" not in script


def test_a_quote_in_the_archive_path_stays_inside_the_literal() -> None:
    ddl = tables.filesystem_ddl("/data/o'brien", "scores")
    assert "'path' = '/data/o''brien/scores'" in ddl


def test_every_stream_table_reads_from_a_kafka_table_of_its_own() -> None:
    assert set(tables.SOURCES) == set(layout.TABLES)
    assert len(set(tables.SOURCES.values())) == len(layout.TABLES)


# ---- the replay job ----------------------------------------------------------------------


def test_select_requests_without_a_window_reads_every_partition() -> None:
    assert tables.select_requests("credit", None, None) == (
        "SELECT request_id, service, received_ms, deadline_ms, features, sla_ms FROM requests "
        "WHERE service = 'credit' AND error IS NULL AND features IS NOT NULL"
    )


def test_select_requests_prunes_by_the_utc_days_of_the_window() -> None:
    sql = tables.select_requests("credit", 1_700_000_000_000, LATE_EVENING)
    assert "received_ms >= 1700000000000" in sql and "dt >= '2023-11-14'" in sql
    assert f"received_ms < {LATE_EVENING}" in sql and "dt <= '2024-05-01'" in sql


def test_select_requests_quotes_the_service() -> None:
    assert "service = 'o''brien'" in tables.select_requests("o'brien", None, None)


def test_a_replay_row_has_a_value_for_every_replay_column() -> None:
    s = {
        "request_id": "q1",
        "service": "credit",
        "model": "m",
        "version": "3",
        "role": "replay",
        "status": "error",
        "output": None,
        "error": "boom",
        "received_ms": LATE_EVENING,
        "deadline_ms": LATE_EVENING + 25,
        "started_ms": 10,
        "scored_ms": 15,
    }
    row = dict(
        zip(layout.columns("replay"), tables.replay_row(s, replay_id="r", sla_ms=25), strict=True)
    )
    assert (row["latency_ms"], row["late"], row["error"]) == (5, False, "boom")
    assert (row["service"], row["dt"], row["hr"]) == ("credit", "2024-05-01", "23")


# ---- partitions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("received_ms", "expected"),
    [
        (0, ("s", "1970-01-01", "00")),
        (LATE_EVENING, ("s", "2024-05-01", "23")),
        (LATE_EVENING + 1_000, ("s", "2024-05-02", "00")),
        (-1, ("s", "1969-12-31", "23")),
    ],
)
def test_the_partition_is_the_utc_date_and_hour(received_ms: int, expected: tuple) -> None:
    assert layout.partition("s", received_ms) == expected
    folder = layout.partition_dir("/r", "scores", "s", received_ms)
    assert folder.as_posix() == f"/r/scores/service=s/dt={expected[1]}/hr={expected[2]}"


# ---- quoting -----------------------------------------------------------------------------


def test_quoting_doubles_the_quote_character() -> None:
    assert literal("it's") == "'it''s'"
    assert ident('a"b') == '"a""b"'
    assert ident("a`b", quote="`") == "`a``b`"


# ---- the Avro type walk ------------------------------------------------------------------

NESTED = {
    "type": "record",
    "name": "R",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "note", "type": ["null", "string"]},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "policy", "type": "ns.Policy"},
    ],
}
NAMED = {
    "ns.Policy": {"type": "record", "name": "Policy", "fields": [{"name": "v", "type": "int"}]}
}


def test_sql_types_of_a_nested_record() -> None:
    assert tables.sql_type(NESTED, named=NAMED) == (
        "ROW<`id` STRING, `at` BIGINT, `note` STRING, `tags` ARRAY<STRING>, `policy` ROW<`v` INT>>"
    )
    assert tables.sql_type(NESTED, named=NAMED, exact=True) == (
        "ROW<`id` STRING NOT NULL, `at` BIGINT NOT NULL, `note` STRING, "
        "`tags` ARRAY<STRING NOT NULL> NOT NULL, `policy` ROW<`v` INT NOT NULL> NOT NULL> NOT NULL"
    )


def test_an_unknown_name_has_no_sql_type() -> None:
    with pytest.raises(ValueError, match="no Flink SQL type"):
        tables.sql_type("ns.Missing")


class _Shape(serde.TypeFold[Any]):
    """Folds a type into plain data, to see what the walk hands each step."""

    def primitive(self, name: str, path: str) -> Any:
        return (name, path)

    def array(self, items: Any, path: str) -> Any:
        return ["array", items]

    def record(self, fields: list[tuple[str, Any]], path: str) -> Any:
        return dict(fields)

    def nullable(self, inner: Any) -> Any:
        return ("nullable", inner)


def test_the_walk_names_each_place_in_the_schema() -> None:
    assert serde.fold_type(NESTED, _Shape(), named=NAMED, path="t") == {
        "id": ("string", "t.id"),
        "at": ("long", "t.at"),
        "note": ("nullable", ("string", "t.note")),
        "tags": ["array", ("string", "t.tags.item")],
        "policy": {"v": ("int", "t.policy.v")},
    }


@pytest.mark.parametrize(
    "avro",
    [
        ["null", "string", "long"],
        {"type": "enum", "name": "E", "symbols": ["a"]},
        {"type": "map", "values": "string"},
        "ns.Missing",
    ],
)
def test_the_walk_refuses_what_has_no_counterpart(avro: Any) -> None:
    with pytest.raises(serde.SerdeError, match=re.escape("t.f: Avro type")):
        serde.fold_type(avro, _Shape(), path="t.f")


def test_the_arrow_schema_of_a_bad_type_names_its_place(monkeypatch) -> None:
    bad = {
        "type": "record",
        "name": "X",
        "fields": [{"name": "xs", "type": {"type": "array", "items": ["int", "string"]}}],
    }
    monkeypatch.setattr(layout, "avro_schema", lambda table: bad)
    layout.arrow_schema.cache_clear()
    try:
        with pytest.raises(ArchiveError, match=re.escape("scores.xs.item: only unions of null")):
            layout.arrow_schema("scores")
    finally:
        layout.arrow_schema.cache_clear()


def test_arrow_and_flink_sql_agree_on_nullability() -> None:
    for table in layout.ALL_TABLES:
        ddl = tables.filesystem_ddl("/a", table)
        exact = {
            f["name"]: tables.sql_type(f["type"], exact=True)
            for f in layout.avro_schema(table)["fields"]
        }
        for field in layout.arrow_schema(table):
            assert field.nullable == (not exact[field.name].endswith("NOT NULL")), field.name
            assert f"`{field.name}` " in ddl
        assert isinstance(layout.arrow_schema(table), pa.Schema)


def test_the_tables_module_does_not_load_pyflink() -> None:
    code = (
        "import json, sys, rendezvous.archive.tables; print(json.dumps('pyflink' in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) is False
