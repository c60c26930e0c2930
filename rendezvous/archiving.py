"""What the archive job writes: the tables' Flink SQL definitions, derived from the Avro schemas
in ``schemas/archive/``, and the SQL that reads them from Kafka (pure: no pyflink).

Layout: ``<root>/<table>/service=<s>/dt=<YYYY-MM-DD>/hr=<HH>/part-*`` (Parquet), where dt and hr
are the UTC date and hour of the request's ``received_ms``.
"""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from typing import Any

from rendezvous import serde, topics
from rendezvous.archive import layout

TABLES = ("requests", "scores", "decisions")
PARTITION_COLUMNS = ("service", "dt", "hr")


def avro_schema(table: str) -> dict[str, Any]:
    return layout.avro_schema(table)


_PRIMITIVE_SQL = {"string": "STRING", "long": "BIGINT", "int": "INT", "boolean": "BOOLEAN",
                  "double": "DOUBLE", "bytes": "BYTES"}  # fmt: skip


def sql_type(avro: Any, *, named: dict[str, Any] | None = None, exact: bool = False) -> str:
    """The Flink SQL type of an Avro type.

    ``exact``: a type outside a union with null is ``NOT NULL``, so that the Avro schema Flink
    derives from the SQL type is the one the records were written with and its Avro format reads
    them byte for byte; otherwise every type is nullable (what the archive's tables declare).
    ``named``: named types by full name, for schemas that refer to them.
    """
    named = named or {}
    suffix = " NOT NULL" if exact else ""
    if isinstance(avro, list):  # a union with null: nullable
        (inner,) = [t for t in avro if t != "null"]
        return sql_type(inner, named=named, exact=exact).removesuffix(" NOT NULL")
    if isinstance(avro, dict):
        kind = avro["type"]
        if kind == "array":
            return f"ARRAY<{sql_type(avro['items'], named=named, exact=exact)}>{suffix}"
        if kind == "record":
            cols = ", ".join(
                f"`{f['name']}` {sql_type(f['type'], named=named, exact=exact)}"
                for f in avro["fields"]
            )
            return f"ROW<{cols}>{suffix}"
        if kind == "enum":
            raise ValueError(f"Avro enum {avro['name']} has no Flink SQL type; use a string")
        return sql_type(kind, named=named, exact=exact)
    if avro in _PRIMITIVE_SQL:
        return _PRIMITIVE_SQL[avro] + suffix
    return sql_type(named[avro], named=named, exact=exact)


def columns(table: str) -> list[tuple[str, Any]]:
    """(name, Avro type) of every column, the partition columns last."""
    fields = [(f["name"], f["type"]) for f in avro_schema(table)["fields"]]
    return fields + [(name, "string") for name in PARTITION_COLUMNS]


def flink_ddl(archive_root: str, *, prefix: str = "", tables: tuple[str, ...] = TABLES) -> str:
    """CREATE TABLE statements for ``tables`` (filesystem connector, Parquet); by default the
    three the stream jobs write (``replay`` holds the scores of replay runs)."""
    out = []
    for table in tables:
        cols = ",\n".join(f"  `{name}` {sql_type(t)}" for name, t in columns(table))
        out.append(
            f"CREATE TABLE IF NOT EXISTS `{prefix}{table}` (\n{cols}\n)"
            f" PARTITIONED BY ({', '.join(PARTITION_COLUMNS)}) WITH (\n"
            f"  'connector' = 'filesystem',\n"
            f"  'path' = '{archive_root.rstrip('/')}/{table}',\n"
            f"  'format' = 'parquet',\n"
            f"  'sink.partition-commit.policy.kind' = 'success-file'\n);"
        )
    return "\n\n".join(out) + "\n"


# ---- the archive job: Kafka topics -> tables, in Flink SQL --------------------------------

# The topic each table is read from. Each holds batches of one record kind (heartbeats are
# empty batches), written transactionally by the job that produces them.
SOURCES = {"requests": topics.MODEL_INPUT, "scores": topics.SCORES, "decisions": topics.DECISIONS}

# Columns computed from the record rather than copied from its field of the same name.
_DERIVED = {
    "requests": {
        "features": "CASE WHEN i.`error` IS NULL THEN i.`features` END",
        "policy_version": "i.`policy`.`version`",
        "preference": "ARRAY_JOIN(i.`policy`.`preference`, ',')",
        "sla_ms": "i.`policy`.`sla_ms`",
    },
    "scores": {
        "latency_ms": "i.`scored_ms` - i.`received_ms`",
        "late": "i.`scored_ms` > i.`deadline_ms`",
    },
    "decisions": {},
}
# The job runs with the UTC session time zone: dt and hr are the UTC date and hour.
_PARTITION_SQL = {
    "service": "i.`service`",
    "dt": "DATE_FORMAT(TO_TIMESTAMP_LTZ(i.`received_ms`, 3), 'yyyy-MM-dd')",
    "hr": "DATE_FORMAT(TO_TIMESTAMP_LTZ(i.`received_ms`, 3), 'HH')",
}
_STARTUP = {
    "committed": {"scan.startup.mode": "group-offsets", "properties.auto.offset.reset": "earliest"},
    "earliest": {"scan.startup.mode": "earliest-offset"},
    "latest": {"scan.startup.mode": "latest-offset"},
}


def _batch_schema(table: str) -> dict[str, Any]:
    return serde.raw_schema(serde.BATCH_OF[topics.ITEM_KIND[SOURCES[table]]])


def _item_fields(table: str) -> list[str]:
    items = _batch_schema(table)["fields"][1]["type"]["items"]
    return [f["name"] for f in serde.named_schemas()[items]["fields"]]


def kafka_ddl(table: str, *, bootstrap: str, group: str, start: str = "committed") -> str:
    """The Kafka table that ``table`` is read from, in Flink SQL's Avro format.

    Its columns are the batch record's fields, exact in nullability (see :func:`sql_type`), after
    a ``kind`` column: the kind byte in front of every value (see :mod:`rendezvous.serde`) is
    below 64, so it reads as a one-byte Avro int. Only committed records are read, so a record
    re-sent after an upstream job's recovery is read once."""
    named = serde.named_schemas()
    cols = ["  `kind` INT NOT NULL"] + [
        f"  `{f['name']}` {sql_type(f['type'], named=named, exact=True)}"
        for f in _batch_schema(table)["fields"]
    ]
    options = {
        "connector": "kafka",
        "topic": SOURCES[table],
        "properties.bootstrap.servers": bootstrap,
        "properties.group.id": group,
        "properties.isolation.level": "read_committed",
        # Not latency critical: let the broker gather up to 1 MB or 500 ms per fetch.
        "properties.fetch.min.bytes": str(1 << 20),
        "properties.fetch.max.wait.ms": "500",
        "properties.client.id.prefix": group,
        "scan.topic-partition-discovery.interval": "10 s",
        # Flink's Avro format behind a kind check: a value that is not a batch of this kind
        # is skipped and counted instead of failing the job (java/, BatchAvroFormatFactory).
        "format": "rdv-batch",
        "rdv-batch.kind": str(int(serde.BATCH_OF[topics.ITEM_KIND[SOURCES[table]]])),
        **_STARTUP[start],
    }
    with_ = ",\n".join(f"  '{k}' = '{v}'" for k, v in options.items())
    return (
        f"CREATE TEMPORARY TABLE `kafka_{table}` (\n" + ",\n".join(cols) + f"\n) WITH (\n{with_}\n)"
    )


def insert_sql(table: str) -> str:
    """Every item of every batch on the table's topic, as a row of ``table``."""
    fields = _item_fields(table)
    exprs = []
    for name, _ in columns(table):
        expr = _DERIVED[table].get(name) or _PARTITION_SQL.get(name)
        if expr is None:
            if name not in fields:
                raise ValueError(f"archive column {table}.{name} is no field of its record")
            expr = f"i.`{name}`"
        exprs.append(f"{expr} AS `{name}`")
    aliases = ", ".join(f"`{f}`" for f in fields)
    return (
        f"INSERT INTO `{table}`\nSELECT " + ",\n  ".join(exprs)
        + f"\nFROM `kafka_{table}` AS b CROSS JOIN UNNEST(b.`items`) AS i ({aliases})"
    )  # fmt: skip


def partition(service: str, received_ms: int) -> tuple[str, str, str]:
    return (service, *_date_hour(received_ms // 3_600_000))


@functools.lru_cache(maxsize=64)
def _date_hour(hour: int) -> tuple[str, str]:
    """The UTC date and hour of an epoch hour (every archived row asks; few distinct hours)."""
    at = datetime.fromtimestamp(hour * 3600, tz=timezone.utc)
    return at.strftime("%Y-%m-%d"), at.strftime("%H")


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
