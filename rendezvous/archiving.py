"""What the archive job writes: Kafka records turned into archive rows, and the tables' Flink
SQL definitions, both derived from the Avro schemas in ``schemas/archive/`` (pure: no pyflink).

Layout: ``<root>/<table>/service=<s>/dt=<YYYY-MM-DD>/hr=<HH>/part-*`` (Parquet), where dt and hr
are the UTC date and hour of the request's ``received_ms``.
"""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from typing import Any

from rendezvous.archive import layout

TABLES = ("requests", "scores", "decisions")
PARTITION_COLUMNS = ("service", "dt", "hr")


def avro_schema(table: str) -> dict[str, Any]:
    return layout.avro_schema(table)


def _sql_type(avro: Any) -> str:
    if isinstance(avro, list):  # a union with null: nullable, which every Flink SQL type is
        (inner,) = [t for t in avro if t != "null"]
        return _sql_type(inner)
    if isinstance(avro, dict):
        if avro["type"] == "array":
            return f"ARRAY<{_sql_type(avro['items'])}>"
        if avro["type"] == "record":
            cols = ", ".join(f"`{f['name']}` {_sql_type(f['type'])}" for f in avro["fields"])
            return f"ROW<{cols}>"
        return _sql_type(avro["type"])
    return {"string": "STRING", "long": "BIGINT", "int": "INT", "boolean": "BOOLEAN",
            "double": "DOUBLE"}[avro]  # fmt: skip


def columns(table: str) -> list[tuple[str, Any]]:
    """(name, Avro type) of every column, the partition columns last."""
    fields = [(f["name"], f["type"]) for f in avro_schema(table)["fields"]]
    return fields + [(name, "string") for name in PARTITION_COLUMNS]


def flink_ddl(archive_root: str, *, prefix: str = "", tables: tuple[str, ...] = TABLES) -> str:
    """CREATE TABLE statements for ``tables`` (filesystem connector, Parquet); by default the
    three the stream jobs write (``replay`` holds the scores of replay runs)."""
    out = []
    for table in tables:
        cols = ",\n".join(f"  `{name}` {_sql_type(t)}" for name, t in columns(table))
        out.append(
            f"CREATE TABLE IF NOT EXISTS `{prefix}{table}` (\n{cols}\n)"
            f" PARTITIONED BY ({', '.join(PARTITION_COLUMNS)}) WITH (\n"
            f"  'connector' = 'filesystem',\n"
            f"  'path' = '{archive_root.rstrip('/')}/{table}',\n"
            f"  'format' = 'parquet',\n"
            f"  'sink.partition-commit.policy.kind' = 'success-file'\n);"
        )
    return "\n\n".join(out) + "\n"


def partition(service: str, received_ms: int) -> tuple[str, str, str]:
    return (service, *_date_hour(received_ms // 3_600_000))


@functools.lru_cache(maxsize=64)
def _date_hour(hour: int) -> tuple[str, str]:
    """The UTC date and hour of an epoch hour (every archived row asks; few distinct hours)."""
    at = datetime.fromtimestamp(hour * 3600, tz=timezone.utc)
    return at.strftime("%Y-%m-%d"), at.strftime("%H")


def request_row(mi: dict[str, Any]) -> tuple:
    policy = mi["policy"]
    return (
        mi["request_id"], mi["received_ms"], mi["deadline_ms"], mi["payload"],
        None if mi.get("error") else mi["features"], mi["enriched_ms"], policy["version"],
        ",".join(policy["preference"]), policy["sla_ms"], mi.get("error"),
        *partition(mi["service"], mi["received_ms"]),
    )  # fmt: skip


def score_row(s: dict[str, Any]) -> tuple:
    return (
        s["request_id"], s["model"], s["version"], s["role"], s["status"], s.get("output"),
        s.get("error"), s["received_ms"], s["deadline_ms"], s["started_ms"], s["scored_ms"],
        s["scored_ms"] - s["received_ms"], s["scored_ms"] > s["deadline_ms"],
        *partition(s["service"], s["received_ms"]),
    )  # fmt: skip


def decision_row(d: dict[str, Any]) -> tuple:
    scores = [
        (
            s["model"],
            s["version"],
            s["role"],
            s["status"],
            s.get("output"),
            s.get("error"),
            s["latency_ms"],
            s["late"],
        )  # fmt: skip
        for s in d["scores"]
    ]
    chosen = next((s for s in d["scores"] if s["model"] == d.get("model")), None)
    return (
        d["request_id"], d["received_ms"], d["deadline_ms"], d["decided_ms"], d["latency_ms"],
        d["policy_version"], d["status"], d.get("model"), d.get("version"), d.get("role"),
        d["reason"], chosen.get("output") if chosen else None, scores,
        *partition(d["service"], d["received_ms"]),
    )  # fmt: skip


def replay_row(s: dict[str, Any], *, replay_id: str, sla_ms: int) -> tuple:
    """A ``replay`` row: a score made offline from an archived request (see
    :func:`rendezvous.scoring.score_record`). ``latency_ms`` is the model's own compute time
    (the request was received long ago) and ``late`` says whether that alone exceeds the SLA."""
    compute_ms = s["scored_ms"] - s["started_ms"]
    return (
        s["request_id"], s["model"], s["version"], s["role"], s["status"], s.get("output"),
        s.get("error"), s["received_ms"], s["deadline_ms"], s["started_ms"], s["scored_ms"],
        compute_ms, compute_ms > sla_ms, replay_id,
        *partition(s["service"], s["received_ms"]),
    )  # fmt: skip
