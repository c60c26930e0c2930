"""One request looked up in the archive: whether it was decided, its answer, and whether it has
a label already. What the proxy's feedback endpoint asks before it accepts a label.

A request is known once its decision is archived: the rendezvous job writes the decision when
the request's batch closes (its deadline plus the service's grace), and the archive job commits
files on its checkpoints (every ``archive_commit_s``, 10 s by default). Until then only the
proxies know it, from the results they read. Only the decisions of the last ``lookback_days``
(by folder: the UTC date of ``received_ms``) are read, and only the labels given since the
request's own date, so that a lookup reads the few folders it can find the request in rather
than the whole archive; ``lookback_days=0`` reads every folder.

Each lookup lists the folders again (a file committed a second ago is found) and opens an
in-memory DuckDB of its own, so lookups can run in threads side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rendezvous.archive import layout
from rendezvous.archive.layout import ArchiveError
from rendezvous.archive.sql import literal

# The answer of a decision; for an error decision, the first ok score it collected (a late
# one), so that a label is still held to what the models answer.
_DECISION = (
    "SELECT service, received_ms, "
    "coalesce(output, list_filter(scores, lambda s: s.status = 'ok')[1].output) AS output "
    "FROM {source} WHERE request_id = ? ORDER BY decided_ms LIMIT 1"
)
_LABELLED = "SELECT count(*) FROM {source} WHERE request_id = ? AND service = ?"
# A decision as the result the proxy would have read for it (GET /v1/requests/{id}).
_ANSWER = (
    "SELECT request_id, service, received_ms, decided_ms, status, model, version, role, "
    "reason, output, arm FROM {source} WHERE request_id = ? ORDER BY decided_ms LIMIT 1"
)
_ANSWER_FIELDS = (
    "request_id",
    "service",
    "received_ms",
    "decided_ms",
    "status",
    "model",
    "version",
    "role",
    "reason",
    "output",
    "arm",
)


@dataclass(frozen=True, slots=True)
class ArchivedRequest:
    """What the archive knows of one request."""

    service: str
    received_ms: int
    output: str | None  # the answer's JSON; None when no model answered
    labelled: bool  # a label for it is archived already


class ArchiveLookup:
    """Looks requests up in the archive at ``root`` (see the module docstring)."""

    def __init__(self, root: Path | str, *, lookback_days: int = 30) -> None:
        if lookback_days < 0:
            raise ArchiveError(f"lookback_days must be >= 0 (0: no limit), got {lookback_days}")
        self.root = Path(root)
        self.lookback_days = lookback_days

    def describe(self) -> str:
        days = f"the last {self.lookback_days} days" if self.lookback_days else "all times"
        return f"the archive's decisions at {self.root} ({days})"

    def _since(self, now_ms: int) -> str | None:
        if not self.lookback_days:
            return None
        start = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc)
        return f"{start - timedelta(days=self.lookback_days):%Y-%m-%d}"

    def answer(self, request_id: str, *, now_ms: int) -> dict | None:
        """The archived decision of ``request_id`` as a result record (the fields the proxy's
        answer is made of), or None when none is archived."""
        import duckdb

        decisions = _files(self.root, layout.DECISIONS, self._since(now_ms))
        if not decisions:
            return None
        try:
            with duckdb.connect() as con:
                row = con.execute(_ANSWER.format(source=_read(decisions)), [request_id]).fetchone()
        except duckdb.Error as exc:
            raise ArchiveError(
                f"cannot read {self.describe()} to look up request {request_id}: "
                f"{str(exc).splitlines()[0]}"
            ) from None
        return None if row is None else dict(zip(_ANSWER_FIELDS, row, strict=True))

    def find(self, request_id: str, *, now_ms: int) -> ArchivedRequest | None:
        """The archived decision of ``request_id`` and whether it is labelled; None if none."""
        import duckdb

        decisions = _files(self.root, layout.DECISIONS, self._since(now_ms))
        if not decisions:
            return None
        try:
            with duckdb.connect() as con:
                row = con.execute(
                    _DECISION.format(source=_read(decisions)), [request_id]
                ).fetchone()
                if row is None:
                    return None
                service, received_ms, output = row
                day = layout.partition(service, received_ms)[1]
                labels = _files(self.root, layout.FEEDBACK, day, service)
                labelled = False
                if labels:
                    ((n,),) = con.execute(
                        _LABELLED.format(source=_read(labels)), [request_id, service]
                    ).fetchall()
                    labelled = n > 0
        except duckdb.Error as exc:
            raise ArchiveError(
                f"cannot read {self.describe()} to look up request {request_id}: "
                f"{str(exc).splitlines()[0]}"
            ) from None
        return ArchivedRequest(service, int(received_ms), output, labelled)


def _files(root: Path, table: str, since: str | None, service: str | None = None) -> list[Path]:
    """The data files of ``table`` (of ``service`` only, if given) in folders dated ``since``
    or later (``dt=`` folder names sort as dates)."""
    base = root / table
    found = layout.data_files(root, table).files
    out = []
    for path in found:
        parts = path.relative_to(base).parts  # service=<s>, dt=<d>, hr=<h>, file
        if service is not None and parts[0] != f"service={service}":
            continue
        if since is None or parts[1][3:] >= since:
            out.append(path)
    return out


def _read(files: list[Path]) -> str:
    paths = ", ".join(literal(str(p)) for p in files)
    hive = ", ".join(f"{literal(c)}: {t}" for c, t in layout.PARTITION_TYPES.items())
    return (
        f"read_parquet([{paths}], hive_partitioning = true, hive_types = {{{hive}}}, "
        f"union_by_name = true)"
    )
