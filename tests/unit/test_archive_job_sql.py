"""The archive job's SQL: Kafka tables whose Avro layout is the one the records are written in,
and inserts that fill every archive column."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest

from rendezvous import serde, topics
from rendezvous.archive import layout, tables
from rendezvous.kafka import KafkaConnection
from rendezvous.serde import Kind

pytestmark = pytest.mark.unit


def _flink_avro(sql_free: Any, named: dict[str, Any]) -> Any:
    """The Avro schema Flink derives from the exact SQL type of a wire schema: the same records
    and arrays, nullable types as ``["null", T]``, named references resolved."""
    if isinstance(sql_free, list):
        (inner,) = [t for t in sql_free if t != "null"]
        return ["null", _flink_avro(inner, named)]
    if isinstance(sql_free, dict):
        if sql_free["type"] == "record":
            return {
                "type": "record",
                "name": "r" + str(id(sql_free)),
                "fields": [
                    {"name": f["name"], "type": _flink_avro(f["type"], named)}
                    for f in sql_free["fields"]
                ],
            }
        if sql_free["type"] == "array":
            return {"type": "array", "items": _flink_avro(sql_free["items"], named)}
        return _flink_avro(sql_free["type"], named)
    if sql_free in named:
        return _flink_avro(named[sql_free], named)
    return sql_free


def _as_flink_reads(table: str) -> dict[str, Any]:
    batch = tables._batch_schema(table)
    flink = _flink_avro(batch, serde.named_schemas())
    flink["fields"].insert(0, {"name": "kind", "type": "int"})
    return fastavro.parse_schema(flink)


SAMPLES = {
    "feedback": {
        "request_id": "r1",
        "service": "credit",
        "label": "1",
        "labelled_ms": 1_700_086_400_000,
        "observed_ms": None,
        "source": "review",
    },
    "requests": {
        "request_id": "r1",
        "service": "credit",
        "received_ms": 1_700_000_000_000,
        "deadline_ms": 1_700_000_000_100,
        "features": '{"a": 1}',
        "payload": '{"a": 1}',
        "enriched_ms": 1_700_000_000_002,
        "reply_to": "p1",
        "policy": {"preference": ["gbm", "lr"], "sla_ms": 100, "grace_ms": 500, "version": 3},
        "error": None,
        "arm": "lr",
        "unsampled": ["shadow"],
    },
    "scores": {
        "request_id": "r1",
        "service": "credit",
        "model": "gbm",
        "version": "4",
        "role": "champion",
        "status": "ok",
        "output": "0.5",
        "error": None,
        "received_ms": 1,
        "deadline_ms": 101,
        "started_ms": 5,
        "scored_ms": 9,
    },
    "decisions": {
        "request_id": "r1",
        "service": "credit",
        "received_ms": 1,
        "deadline_ms": 101,
        "features": None,
        "policy_version": 3,
        "status": "ok",
        "model": "gbm",
        "version": "4",
        "role": "champion",
        "reason": "preferred",
        "output": "0.5",
        "decided_ms": 10,
        "latency_ms": 9,
        "scores": [
            {
                "model": "gbm",
                "version": "4",
                "role": "champion",
                "status": "ok",
                "output": "0.5",
                "error": None,
                "latency_ms": 8,
                "late": False,
            }
        ],
        "arm": "gbm",
        "unsampled": ["shadow"],
    },
}


@pytest.mark.parametrize("table", layout.TABLES)
def test_flink_reads_a_batch_as_it_was_written(table: str) -> None:
    kind = topics.ITEM_KIND[tables.SOURCES[table]]
    value = serde.encode_batch(kind, "b1", [SAMPLES[table], SAMPLES[table]])
    read = fastavro.schemaless_reader(io.BytesIO(value), _as_flink_reads(table), None)
    assert read["kind"] in (serde.BATCH_OF[kind] >> 1, -((serde.BATCH_OF[kind] + 1) >> 1))
    assert read["batch_id"] == "b1"
    assert read["items"] == [SAMPLES[table], SAMPLES[table]]


@pytest.mark.parametrize("table", layout.TABLES)
def test_a_heartbeat_reads_as_a_batch_with_no_rows(table: str) -> None:
    kind = topics.ITEM_KIND[tables.SOURCES[table]]
    value = serde.empty_batch(kind)
    assert serde.is_heartbeat(value)
    read = fastavro.schemaless_reader(io.BytesIO(value), _as_flink_reads(table), None)
    assert (read["batch_id"], read["items"]) == ("", [])
    assert serde.decode_items(value) == (kind, "", [])


def test_every_kind_byte_is_one_byte_of_avro() -> None:
    assert max(Kind) < 64  # a zigzag varint of one byte


@pytest.mark.parametrize("table", layout.TABLES)
def test_the_kafka_table_is_exact_in_nullability(table: str) -> None:
    ddl = tables.kafka_ddl(table, kafka=KafkaConnection("k:9092"), group="g", start="committed")
    assert "`kind` INT NOT NULL" in ddl
    assert "'properties.isolation.level' = 'read_committed'" in ddl
    assert f"'topic' = '{tables.SOURCES[table]}'" in ddl
    assert "`request_id` STRING NOT NULL" in ddl
    col = "`source`" if table == "feedback" else "`error`"  # a nullable field of each record
    assert f"{col} STRING," in ddl or f"{col} STRING>" in ddl or table == "decisions"


def test_an_enum_has_no_sql_type() -> None:
    with pytest.raises(ValueError, match="use a string"):
        tables.sql_type({"type": "enum", "name": "E", "symbols": ["a"]}, exact=True)


@pytest.mark.parametrize("table", layout.TABLES)
def test_the_insert_fills_every_column_in_order(table: str) -> None:
    sql = tables.insert_sql(table)
    head, select = sql.split("\nFROM ")[0].split("\n", 1)
    assert head == f"INSERT INTO `{table}`"
    names = [line.rsplit(" AS ", 1)[1].strip("`,") for line in select.splitlines()]
    assert names == list(layout.columns(table))
    assert f"FROM `kafka_{table}` AS b CROSS JOIN UNNEST(b.`items`)" in sql


def test_labels_are_partitioned_by_when_they_were_given() -> None:
    sql = tables.insert_sql("feedback")
    assert "TO_TIMESTAMP_LTZ(i.`labelled_ms`, 3), 'yyyy-MM-dd') AS `dt`" in sql
    assert "received_ms" not in sql
    assert "TO_TIMESTAMP_LTZ(i.`received_ms`, 3), 'HH') AS `hr`" in tables.insert_sql("scores")
