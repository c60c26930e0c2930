"""Where the archive's files are and what is in them.

Layout: ``<root>/<table>/service=<s>/dt=<YYYY-MM-DD>/hr=<HH>/<file>``, where ``dt`` and ``hr``
are the UTC date and hour of the row's ``received_ms`` (``feedback``: of its ``labelled_ms``, see
:func:`time_column`). ``service``, ``dt`` and ``hr`` are Hive
partition columns, spelled in the folder names and not stored in the files. A data file is
named ``*.parquet`` or ``part-*`` (Flink's file sink writes ``part-<uuid>-<n>-<n>``); names
starting with ``.`` or ``_`` are in-progress or bookkeeping files and are never read.

The columns of each table come from its Avro schema in ``schemas/archive/``; ``replay`` (the
scores of a replay run) has the columns of ``scores`` plus ``replay_id``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

from rendezvous.errors import RendezvousError

if TYPE_CHECKING:
    import pyarrow as pa

REQUESTS = "requests"
SCORES = "scores"
DECISIONS = "decisions"
REPLAY = "replay"
FEEDBACK = "feedback"

# Tables the archive job writes; ``replay`` exists only once a replay has run.
TABLES = (REQUESTS, SCORES, DECISIONS, FEEDBACK)
ALL_TABLES = (*TABLES, REPLAY)

# The column whose UTC date and hour partition a table, where it is not ``received_ms``: a
# label arrives long after its request, and need not know when that was received.
_TIME_COLUMNS = {FEEDBACK: "labelled_ms"}

# Hive partition columns and their SQL types.
PARTITION_TYPES = {"service": "VARCHAR", "dt": "DATE", "hr": "INTEGER"}
PARTITIONS = tuple(PARTITION_TYPES)

_PARTITION_DIR = re.compile(r"^service=[^/]+/dt=\d{4}-\d{2}-\d{2}/hr=\d{2}$")


class ArchiveError(RendezvousError):
    """The archive, a query over it or a report on it cannot be read or made."""

    code = "archive"


# ---- schemas -----------------------------------------------------------------------------


# In a replay the request was received long before it is scored: latency is compute time.
_REPLAY_DOCS = {
    "latency_ms": "scored_ms - started_ms: the model's own compute time",
    "late": "latency_ms > the service's SLA",
}


def avro_schema(table: str) -> dict[str, Any]:
    """The Avro record schema of ``table`` (``replay``: the scores' one plus ``replay_id``)."""
    _check_table(table)
    base = SCORES if table == REPLAY else table
    folder = resources.files("schemas").joinpath("archive")
    schema = orjson.loads(folder.joinpath(f"{base}.avsc").read_text())
    if table == REPLAY:
        replay_id = {"name": "replay_id", "type": "string", "doc": "which replay run"}
        fields = [
            {**f, "doc": _REPLAY_DOCS[f["name"]]} if f["name"] in _REPLAY_DOCS else f
            for f in schema["fields"]
        ]
        schema = {**schema, "name": "ArchivedReplayScore", "fields": [*fields, replay_id]}
    return schema


@cache
def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of the files of ``table``, derived from its Avro schema."""
    import pyarrow as pa

    from rendezvous import serde  # its schemas load on import: not for every CLI start

    fields = []
    for f in avro_schema(table)["fields"]:
        arrow_type, nullable = serde.fold_type(
            f["type"], _ArrowTypes(), path=f"{table}.{f['name']}"
        )
        fields.append(pa.field(f["name"], arrow_type, nullable=nullable))
    return pa.schema(fields)


@cache
def columns(table: str) -> tuple[str, ...]:
    """The columns a query sees: the file columns, then the partition columns."""
    return (*(f["name"] for f in avro_schema(table)["fields"]), *PARTITIONS)


_PRIMITIVES = {
    "string": "string",
    "long": "int64",
    "int": "int32",
    "boolean": "bool_",
    "double": "float64",
    "float": "float32",
    "bytes": "binary",
}


class _ArrowTypes:
    """The Arrow type of an Avro type, and whether it is nullable (in Arrow, a field's
    property): a :class:`rendezvous.serde.TypeFold`."""

    def primitive(self, name: str, path: str) -> tuple[pa.DataType, bool]:
        import pyarrow as pa

        if name not in _PRIMITIVES:
            self.unsupported(name, path)
        return getattr(pa, _PRIMITIVES[name])(), False

    def array(self, items: tuple[pa.DataType, bool], path: str) -> tuple[pa.DataType, bool]:
        import pyarrow as pa

        return pa.list_(pa.field("item", items[0], nullable=items[1])), False

    def record(
        self, fields: list[tuple[str, tuple[pa.DataType, bool]]], path: str
    ) -> tuple[pa.DataType, bool]:
        import pyarrow as pa

        return pa.struct([pa.field(n, t, nullable=null) for n, (t, null) in fields]), False

    def nullable(self, inner: tuple[pa.DataType, bool]) -> tuple[pa.DataType, bool]:
        return inner[0], True

    def unsupported(self, avro: Any, path: str) -> NoReturn:
        if isinstance(avro, list):
            raise ArchiveError(
                f"{path}: only unions of null and one type map to a Parquet column, got {avro}"
            )
        raise ArchiveError(f"{path}: Avro type {avro!r} has no Parquet mapping here")


def time_column(table: str) -> str:
    """The epoch-ms column whose UTC date and hour are a row's ``dt`` and ``hr``."""
    _check_table(table)
    return _TIME_COLUMNS.get(table, "received_ms")


def _check_table(table: str) -> None:
    if table not in ALL_TABLES:
        raise ArchiveError(
            f"unknown archive table {table!r}; expected one of {', '.join(ALL_TABLES)}"
        )


# ---- files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataFiles:
    """The readable files of one table, and the paths skipped because they break the layout."""

    files: tuple[Path, ...]
    ignored: tuple[Path, ...]


def data_files(root: Path, table: str) -> DataFiles:
    """The data files of ``table`` under ``root``, sorted; none when the table has no folder."""
    _check_table(table)
    base = Path(root) / table
    files: list[Path] = []
    ignored: list[Path] = []
    if not base.is_dir():
        return DataFiles((), ())
    for path in sorted(base.rglob("*")):
        if path.is_dir() or _hidden(path.relative_to(base)):
            continue
        if not _PARTITION_DIR.match(path.parent.relative_to(base).as_posix()):
            ignored.append(path)
        elif _is_data_file(path.name) and path.stat().st_size > 0:
            files.append(path)
    return DataFiles(tuple(files), tuple(ignored))


def _hidden(relative: Path) -> bool:
    return any(part.startswith((".", "_")) for part in relative.parts)


def _is_data_file(name: str) -> bool:
    return name.endswith(".parquet") or name.startswith("part-")


def partition(service: str, received_ms: int) -> tuple[str, str, str]:
    """The partition (service, dt, hr) of a row of ``service`` received at ``received_ms``."""
    return (service, *_date_hour(received_ms // 3_600_000))


@lru_cache(maxsize=64)
def _date_hour(hour: int) -> tuple[str, str]:
    """The UTC date and hour of an epoch hour (every archived row asks; few distinct hours)."""
    at = datetime.fromtimestamp(hour * 3600, tz=timezone.utc)
    return at.strftime("%Y-%m-%d"), at.strftime("%H")


def partition_dir(root: Path, table: str, service: str, received_ms: int) -> Path:
    """The folder of a row of ``service`` received at ``received_ms`` (UTC date and hour)."""
    service, dt, hr = partition(service, received_ms)
    return Path(root) / table / f"service={service}" / f"dt={dt}" / f"hr={hr}"


# ---- writing -----------------------------------------------------------------------------


def write_rows(
    root: Path | str,
    table: str,
    rows: Iterable[Mapping[str, Any]],
    *,
    service: str | None = None,
) -> list[Path]:
    """Write ``rows`` into the partitions of ``table`` under ``root``; return the new files.

    Each row holds the table's fields and its service, as a ``service`` key or through the
    ``service`` argument; its ``dt``/``hr`` partition comes from ``received_ms`` (or the table's
    :func:`time_column`). One new
    ``part-<uuid>.parquet`` file per partition; existing files are kept.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(table)
    at = time_column(table)
    groups: dict[Path, list[dict[str, Any]]] = {}
    for i, row in enumerate(rows):
        values = _checked_row(table, i, row, schema, service)
        where = partition_dir(Path(root), table, values.pop("service"), values[at])
        groups.setdefault(where, []).append(values)
    written = []
    for folder, group in groups.items():
        try:
            data = pa.Table.from_pylist(group, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ArchiveError(f"{table} rows do not match the table's schema: {exc}") from None
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"part-{uuid.uuid4().hex}.parquet"
        pq.write_table(data, path)
        written.append(path)
    return written


def _checked_row(
    table: str, index: int, row: Mapping[str, Any], schema: pa.Schema, service: str | None
) -> dict[str, Any]:
    where = f"{table} row {index}"
    unknown = sorted(set(row) - set(schema.names) - {"service"})
    if unknown:
        raise ArchiveError(
            f"{where}: unknown field {unknown[0]!r}; {table} has {', '.join(schema.names)} "
            f"(and the partition column service)"
        )
    defaults = {f["name"]: f["default"] for f in avro_schema(table)["fields"] if "default" in f}
    for field in schema:
        if not field.nullable and row.get(field.name, defaults.get(field.name)) is None:
            raise ArchiveError(f"{where}: field {field.name!r} ({field.type}) is required")
    values = {name: row.get(name, defaults.get(name)) for name in schema.names}
    values["service"] = row.get("service", service)
    if not values["service"]:
        raise ArchiveError(f"{where}: no service; add a 'service' key or pass service=")
    return values
