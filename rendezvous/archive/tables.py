"""The archive's tables in Flink SQL (pure: no pyflink): what the archive job writes, read from
which Kafka table, and what the replay job reads and writes.

The tables and their layout on disk are those of :mod:`rendezvous.archive.layout`: each a
filesystem table of Parquet files, partitioned by ``service``, ``dt`` and ``hr`` (the UTC date
and hour of the request's ``received_ms``, or of a label's ``labelled_ms``), with the columns of
its Avro schema in ``schemas/archive/``.
"""

from __future__ import annotations

from typing import Any, NoReturn

from rendezvous import serde, topics
from rendezvous.archive import layout
from rendezvous.archive.sql import ident, literal
from rendezvous.kafka import KafkaConnection

_PRIMITIVE_SQL = {
    "string": "STRING",
    "long": "BIGINT",
    "int": "INT",
    "boolean": "BOOLEAN",
    "double": "DOUBLE",
    "bytes": "BYTES",
}


def _name(name: str) -> str:
    """A Flink SQL identifier, in backticks."""
    return ident(name, quote="`")


class _SqlTypes(serde.TypeFold[str]):
    def __init__(self, exact: bool) -> None:
        self.suffix = " NOT NULL" if exact else ""

    def primitive(self, name: str, path: str) -> str:
        if name not in _PRIMITIVE_SQL:
            self.unsupported(name, path)
        return _PRIMITIVE_SQL[name] + self.suffix

    def array(self, items: str, path: str) -> str:
        return f"ARRAY<{items}>{self.suffix}"

    def record(self, fields: list[tuple[str, str]], path: str) -> str:
        return f"ROW<{', '.join(f'{_name(n)} {t}' for n, t in fields)}>{self.suffix}"

    def nullable(self, inner: str) -> str:
        return inner.removesuffix(" NOT NULL")

    def unsupported(self, avro: Any, path: str) -> NoReturn:
        if isinstance(avro, dict) and avro.get("type") == "enum":
            raise ValueError(f"Avro enum {avro['name']} has no Flink SQL type; use a string")
        raise ValueError(f"Avro type {avro!r} has no Flink SQL type")


def sql_type(avro: Any, *, named: dict[str, Any] | None = None, exact: bool = False) -> str:
    """The Flink SQL type of an Avro type.

    ``exact``: a type outside a union with null is ``NOT NULL``, so that the Avro schema Flink
    derives from the SQL type is the one the records were written with and its Avro format reads
    them byte for byte; otherwise every type is nullable (what the archive's tables declare).
    ``named``: named types by full name, for schemas that refer to them.
    """
    return serde.fold_type(avro, _SqlTypes(exact), named=named)


def filesystem_ddl(archive_root: str, table: str, *, prefix: str = "") -> str:
    """The CREATE TABLE statement of ``table`` under ``archive_root`` (filesystem connector,
    Parquet), named ``prefix + table``; its columns are :func:`layout.columns`, the partition
    columns as strings."""
    fields = [(f["name"], sql_type(f["type"])) for f in layout.avro_schema(table)["fields"]]
    cols = [*fields, *((name, sql_type("string")) for name in layout.PARTITIONS)]
    body = ",\n".join(f"  {_name(name)} {t}" for name, t in cols)
    options = {
        "connector": "filesystem",
        "path": f"{archive_root.rstrip('/')}/{table}",
        "format": "parquet",
        "sink.partition-commit.policy.kind": "success-file",
    }
    return (
        f"CREATE TABLE IF NOT EXISTS {_name(prefix + table)} (\n{body}\n)"
        f" PARTITIONED BY ({', '.join(layout.PARTITIONS)}) WITH (\n{_with(options)}\n)"
    )


def flink_ddl(
    archive_root: str, *, prefix: str = "", tables: tuple[str, ...] = layout.TABLES
) -> str:
    """A script of :func:`filesystem_ddl` statements for ``tables``; by default the three the
    stream jobs write (``replay`` holds the scores of replay runs)."""
    ddl = (filesystem_ddl(archive_root, table, prefix=prefix) + ";" for table in tables)
    return "\n\n".join(ddl) + "\n"


def _with(options: dict[str, str]) -> str:
    return ",\n".join(f"  {literal(k)} = {literal(v)}" for k, v in options.items())


# ---- the archive job: Kafka topics -> tables ---------------------------------------------

# The topic each table is read from. Each holds batches of one record kind (heartbeats are
# empty batches), written transactionally by the job that produces them.
SOURCES = {
    layout.REQUESTS: topics.MODEL_INPUT,
    layout.SCORES: topics.SCORES,
    layout.DECISIONS: topics.DECISIONS,
    layout.FEEDBACK: topics.FEEDBACK,
}

# Columns computed from the record rather than copied from its field of the same name.
_DERIVED = {
    layout.REQUESTS: {
        "features": "CASE WHEN i.`error` IS NULL THEN i.`features` END",
        "policy_version": "i.`policy`.`version`",
        "preference": "ARRAY_JOIN(i.`policy`.`preference`, ',')",
        "sla_ms": "i.`policy`.`sla_ms`",
    },
    layout.SCORES: {
        "latency_ms": "i.`scored_ms` - i.`received_ms`",
        "late": "i.`scored_ms` > i.`deadline_ms`",
    },
    layout.DECISIONS: {},
    layout.FEEDBACK: {},
}


def _partition_sql(table: str) -> dict[str, str]:
    """The partition columns of ``table``'s rows. The job runs with the UTC session time zone:
    dt and hr are the UTC date and hour of the table's time column."""
    at = f"TO_TIMESTAMP_LTZ(i.{_name(layout.time_column(table))}, 3)"
    return {
        "service": "i.`service`",
        "dt": f"DATE_FORMAT({at}, 'yyyy-MM-dd')",
        "hr": f"DATE_FORMAT({at}, 'HH')",
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


def kafka_ddl(table: str, *, kafka: KafkaConnection, group: str, start: str = "committed") -> str:
    """The Kafka table ``kafka_<table>`` that ``table`` is read from, in Flink SQL's Avro format.

    Its columns are the batch record's fields, exact in nullability (see :func:`sql_type`), after
    a ``kind`` column: the kind byte in front of every value (see :mod:`rendezvous.serde`) is
    below 64, so it reads as a one-byte Avro int. Only committed records are read, so a record
    re-sent after an upstream job's recovery is read once."""
    named = serde.named_schemas()
    cols = ["  `kind` INT NOT NULL"] + [
        f"  {_name(f['name'])} {sql_type(f['type'], named=named, exact=True)}"
        for f in _batch_schema(table)["fields"]
    ]
    options = {
        "connector": "kafka",
        "topic": SOURCES[table],
        **kafka.sql_options(),
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
    return (
        f"CREATE TEMPORARY TABLE {_name('kafka_' + table)} (\n"
        + ",\n".join(cols)
        + f"\n) WITH (\n{_with(options)}\n)"
    )


def insert_sql(table: str) -> str:
    """Every item of every batch in ``kafka_<table>``, as a row of ``table``."""
    fields = _item_fields(table)
    partitions = _partition_sql(table)
    exprs = []
    for name in layout.columns(table):
        expr = _DERIVED[table].get(name) or partitions.get(name)
        if expr is None:
            if name not in fields:
                raise ValueError(f"archive column {table}.{name} is no field of its record")
            expr = f"i.{_name(name)}"
        exprs.append(f"{expr} AS {_name(name)}")
    aliases = ", ".join(map(_name, fields))
    return (
        f"INSERT INTO {_name(table)}\nSELECT "
        + ",\n  ".join(exprs)
        + f"\nFROM {_name('kafka_' + table)} AS b CROSS JOIN UNNEST(b.`items`) AS i ({aliases})"
    )


# ---- the replay job: requests -> replay --------------------------------------------------


def select_requests(service: str, since_ms: int | None, until_ms: int | None) -> str:
    """The archived requests of ``service`` received in [since, until) that reached the models."""
    where = [f"service = {literal(service)}", "error IS NULL", "features IS NOT NULL"]
    if since_ms is not None:
        where.append(f"received_ms >= {int(since_ms)}")
        # Partition pruning: no folder before the window's first day is read.
        where.append(f"dt >= {literal(layout.partition(service, since_ms)[1])}")
    if until_ms is not None:
        where.append(f"received_ms < {int(until_ms)}")
        where.append(f"dt <= {literal(layout.partition(service, until_ms)[1])}")
    return (
        "SELECT request_id, service, received_ms, deadline_ms, features, sla_ms FROM requests "
        f"WHERE {' AND '.join(where)}"
    )


def replay_row(s: dict[str, Any], *, replay_id: str, sla_ms: int) -> tuple:
    """A ``replay`` row, in the order of :func:`layout.columns`: a score made offline from an
    archived request (see :func:`rendezvous.scoring.score_record`). ``latency_ms`` is the
    model's own compute time (the request was received long ago) and ``late`` says whether that
    alone exceeds the SLA."""
    compute_ms = s["scored_ms"] - s["started_ms"]
    return (
        s["request_id"],
        s["model"],
        s["version"],
        s["role"],
        s["status"],
        s.get("output"),
        s.get("error"),
        s["received_ms"],
        s["deadline_ms"],
        s["started_ms"],
        s["scored_ms"],
        compute_ms,
        compute_ms > sla_ms,
        replay_id,
        *layout.partition(s["service"], s["received_ms"]),
    )
