"""SQL over the archive with an embedded DuckDB: ``rendezvous sql "SELECT ..."``.

:class:`ArchiveSQL` opens an in-memory DuckDB with one view per table (``requests``,
``scores``, ``decisions``, and ``replay`` once a replay has run) over the Parquet files, with
the partition columns ``service`` (VARCHAR), ``dt`` (DATE) and ``hr`` (INTEGER) last. A table
with no files yet is an empty view with the same columns, so queries never fail just because
nothing was archived. The file list is read once, when the views are made.

The view ``labels`` is ``feedback`` with one row per (service, request): the first label by
``labelled_ms`` (then by the label's JSON, so that a tie is decided the same way every time).
A label given twice, or written twice to the topic, counts once, and the first one wins.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rendezvous.archive import layout
from rendezvous.archive.layout import ArchiveError

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from rendezvous.settings import StackSettings

FORMATS = ("table", "csv", "json", "parquet")
_COPY_OPTIONS = {
    "csv": "FORMAT csv, HEADER true",
    "json": "FORMAT json",
    "parquet": "FORMAT parquet",
}


LABELS = "labels"
# The first label of each request; a tie on labelled_ms goes to the smallest label JSON.
LABELS_VIEW = (
    f"CREATE VIEW {LABELS} AS SELECT * FROM {layout.FEEDBACK} QUALIFY row_number() OVER "
    "(PARTITION BY service, request_id ORDER BY labelled_ms, label, source NULLS LAST) = 1"
)


class ArchiveSQL:
    """An in-memory DuckDB connection with a view per archive table; use as a context manager."""

    def __init__(self, root: Path | str) -> None:
        import duckdb

        self.root = Path(root)
        self.con: duckdb.DuckDBPyConnection = duckdb.connect()
        self.views: dict[str, tuple[str, ...]] = {}
        self.ignored: list[Path] = []
        for table in layout.ALL_TABLES:
            found = layout.data_files(self.root, table)
            self.ignored.extend(found.ignored)
            if table == layout.REPLAY and not found.files:
                continue  # ``replay`` exists only once a replay has run
            self.views[table] = self._create_view(table, found.files)
        self.con.execute(LABELS_VIEW)
        self.views[LABELS] = self.views[layout.FEEDBACK]

    def __enter__(self) -> ArchiveSQL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    # ---- queries ---------------------------------------------------------------------

    def relation(self, query: str) -> duckdb.DuckDBPyRelation | None:
        """Run ``query``; its result relation, or None for a statement without one."""
        import duckdb

        try:
            return self.con.sql(query)
        except duckdb.Error as exc:
            raise ArchiveError(f"{_one_line(exc)} {self.describe()}") from None

    def frame(self, query: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """The result of a parameterised ``query`` as a pandas DataFrame."""
        import duckdb

        try:
            return self.con.execute(query, list(params)).df()
        except duckdb.Error as exc:
            raise ArchiveError(f"{_one_line(exc)} {self.describe()}") from None

    def describe(self) -> str:
        """One line naming the views and their columns."""
        views = "; ".join(f"{name}({', '.join(cols)})" for name, cols in self.views.items())
        return f"Views over {self.root}: {views}"

    # ---- views -----------------------------------------------------------------------

    def _create_view(self, table: str, files: Sequence[Path]) -> tuple[str, ...]:
        schema_columns = layout.arrow_schema(table).names
        types = dict(zip(schema_columns, self._sql_types(table), strict=True))
        if not files:
            select = ", ".join(f"CAST(NULL AS {types[c]}) AS {ident(c)}" for c in schema_columns)
            partitions = ", ".join(
                f"CAST(NULL AS {t}) AS {c}" for c, t in layout.PARTITION_TYPES.items()
            )
            self.con.execute(f"CREATE VIEW {table} AS SELECT {select}, {partitions} WHERE false")
            return layout.columns(table)
        source = _read_parquet(files)
        in_files = [
            row[0]
            for row in self.con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
            if row[0] not in layout.PARTITIONS
        ]
        # Schema columns first (typed NULLs when no file has them yet), then any extra ones.
        select = [
            ident(c) if c in in_files else f"CAST(NULL AS {types[c]}) AS {ident(c)}"
            for c in schema_columns
        ]
        extra = [c for c in in_files if c not in types]
        ordered = [*select, *map(ident, extra), *layout.PARTITIONS]
        self.con.execute(f"CREATE VIEW {table} AS SELECT {', '.join(ordered)} FROM {source}")
        return (*schema_columns, *extra, *layout.PARTITIONS)

    def _sql_types(self, table: str) -> list[str]:
        empty = layout.arrow_schema(table).empty_table()
        return [str(t) for t in self.con.from_arrow(empty).dtypes]


def _read_parquet(files: Sequence[Path]) -> str:
    paths = ", ".join(literal(str(p)) for p in files)
    hive_types = ", ".join(f"{literal(c)}: {t}" for c, t in layout.PARTITION_TYPES.items())
    return (
        f"read_parquet([{paths}], hive_partitioning = true, hive_types = {{{hive_types}}}, "
        f"union_by_name = true)"
    )


def literal(text: str) -> str:
    """``text`` as an SQL string literal (the same in DuckDB and Flink SQL)."""
    return "'" + text.replace("'", "''") + "'"


def ident(name: str, *, quote: str = '"') -> str:
    """``name`` as a quoted SQL identifier: in DuckDB's double quotes, or with ``quote="`"`` in
    Flink SQL's backticks."""
    return quote + name.replace(quote, quote * 2) + quote


def _one_line(exc: Exception) -> str:
    """DuckDB's message without the caret drawing, on one line."""
    lines = []
    for line in str(exc).splitlines():
        if line.startswith("LINE "):
            break
        if line.strip():
            lines.append(line.strip())
    text = " ".join(lines)
    return text if text.endswith((".", "!", "?")) else text + "."


# ---- output ------------------------------------------------------------------------------


def run(
    root: Path | str,
    query: str,
    *,
    fmt: str = "table",
    output: Path | None = None,
    stdout: TextIO | None = None,
    width: int | None = None,
) -> None:
    """Run ``query`` over the archive at ``root`` and print or write its result.

    ``table`` renders a box table (long results show their first and last rows); ``csv``
    (with a header), ``json`` (one object per line) and ``parquet`` write every row, to
    ``output`` or, except for Parquet, to ``stdout``.
    """
    if fmt not in FORMATS:
        raise ArchiveError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "parquet" and output is None:
        raise ArchiveError("--format parquet writes a binary file; pass --output FILE")
    stdout = sys.stdout if stdout is None else stdout
    with ArchiveSQL(root) as db:
        rel = db.relation(query)
        if rel is None:
            if fmt != "table":
                raise ArchiveError(f"--format {fmt} needs a query that returns rows (a SELECT)")
            return
        if fmt == "table":
            text = render_table(rel, width=width or shutil.get_terminal_size((120, 40)).columns)
            _emit_text(text, output, stdout)
        else:
            _copy(db, rel, fmt, output, stdout)


def render_table(rel: duckdb.DuckDBPyRelation, *, width: int) -> str:
    """DuckDB's box rendering of ``rel``, at most ``width`` characters wide."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        rel.show(max_width=width)
    return buffer.getvalue()


def _emit_text(text: str, output: Path | None, stdout: TextIO) -> None:
    if output is None:
        stdout.write(text)
    else:
        Path(output).write_text(text)


def _copy(
    db: ArchiveSQL, rel: duckdb.DuckDBPyRelation, fmt: str, output: Path | None, stdout: TextIO
) -> None:
    rel.create_view("_rdv_result", replace=True)
    with tempfile.TemporaryDirectory(prefix="rdv-sql-") as tmp:
        target = Path(output) if output is not None else Path(tmp) / f"result.{fmt}"
        db.relation(
            f"COPY (SELECT * FROM _rdv_result) TO {literal(str(target))} ({_COPY_OPTIONS[fmt]})"
        )
        if output is None:
            with target.open() as src:
                shutil.copyfileobj(src, stdout)


# ---- command line ------------------------------------------------------------------------


def cmd_sql(args: argparse.Namespace, settings: StackSettings) -> int:
    """``rendezvous sql``: run one query over the archive."""
    root = Path(args.archive) if args.archive else settings.archive_dir
    if not root.is_dir():
        print(f"note: no archive at {root} yet; every view is empty", file=sys.stderr)
    run(root, args.query, fmt=args.format, output=args.output)
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``sql`` subcommand; its handler is ``cmd_sql(args, settings)``."""
    p = subparsers.add_parser(
        "sql",
        help="run SQL over the archive (views requests, scores, decisions, feedback, labels, "
        "replay)",
        description="Run one SQL query (DuckDB dialect) over the archived Parquet files. Views: "
        "requests, scores, decisions, feedback (every label received), labels (the first label "
        "of each request), and replay once a replay has run; each has the partition columns "
        "service, dt (DATE) and hr (INTEGER). Outputs, payloads and labels are JSON strings: "
        "use json_extract(output, '$.label') and friends.",
    )
    p.add_argument("query", help='the SQL, e.g. "SELECT model, count(*) FROM scores GROUP BY 1"')
    p.add_argument("--archive", metavar="PATH", help="archive root (default: the stack's)")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table (default, for the terminal), csv, json (one object per line) or parquet",
    )
    p.add_argument("--output", type=Path, metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=cmd_sql)
    return p
