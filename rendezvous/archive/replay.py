"""``rendezvous replay``: an offline shadow run of a model over the archived requests.

The archived ``requests`` of one service (as the live models saw them, after enrichment) are
scored by a model that need not be live, in a Flink batch job (``jobs/replay.py``); its scores
land in the ``replay`` table, tagged with a replay ID. The diff report then sets the run
against each live model of the service, request by request: matched, missing, status changes,
agreement and score deltas (``replay - live``). Replaying a live model's own version gives
agreement 1 and zero deltas: the check that replay is faithful.
"""

from __future__ import annotations

import argparse
import json
import re
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rendezvous.archive.layout import ArchiveError
from rendezvous.archive.report import Window, add_output_args, add_window_args

if TYPE_CHECKING:
    import pandas as pd

    from rendezvous.archive.metrics import OutputFields
    from rendezvous.settings import StackSettings

_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def model_spec(uri: str, *, name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The replayed model as the job takes it: a registry/run URI or a ``module:function``."""
    if not _NAME.match(name):
        raise ArchiveError(
            f"--name {name!r}: use 1-64 letters, digits, '_', '.' or '-' (it names the model "
            "in the replay table)"
        )
    if _CALLABLE.match(uri):
        return {"name": name, "role": "replay", "callable": uri, "params": params or {}}
    if params:
        raise ArchiveError(
            "--params applies to a Python callable (module:function); an MLflow model takes "
            f"none, so drop --params or point --model-uri at a callable (got {uri!r})"
        )
    from rendezvous.models import ModelLoadError, parse_model_uri

    try:
        parse_model_uri(uri, model=name)
    except ModelLoadError as exc:
        raise ArchiveError(f"--model-uri: {exc.message}") from None
    return {"name": name, "role": "replay", "uri": uri}


def new_replay_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def window_ms(window: Window) -> tuple[int | None, int | None]:
    def ms(at: datetime | None) -> int | None:
        return None if at is None else int(at.timestamp() * 1000)

    return ms(window.since), ms(window.until)


def compare(live: pd.DataFrame, replay: pd.DataFrame, fields: OutputFields) -> pd.DataFrame:
    """The replay against each live model of the service (one row per live model)."""
    import pandas as pd

    from rendezvous.archive.metrics import REPLAY_COLUMNS, compare_replay

    rows = []
    for model in sorted(live["model"].unique()):
        mine = live[live["model"] == model]
        as_model = replay.assign(model=model)
        rows.append(compare_replay(mine, as_model, fields))
    if not rows:
        return pd.DataFrame(columns=REPLAY_COLUMNS)
    return pd.concat(rows, ignore_index=True)


def diff_table(diff: pd.DataFrame) -> str:
    from rendezvous.archive import render

    headers = [
        "against",
        "live",
        "replayed",
        "matched",
        "missing",
        "status changed",
        "agreement",
        "delta mean",
        "delta p05",
        "delta p50",
        "delta p95",
    ]
    rows = [
        [
            r.model,
            render.count(r.live),
            render.count(r.replayed),
            render.count(r.matched),
            render.count(r.missing_in_replay),
            render.count(r.status_changed),
            render.percent(r.agreement),
            render.signed(r.delta_mean),
            render.signed(r.delta_p05),
            render.signed(r.delta_p50),
            render.signed(r.delta_p95),
        ]
        for r in diff.itertuples()
    ]
    return render.text_table(headers, rows)


_LIVE = (
    "SELECT request_id, model, version, status, output FROM scores WHERE service = ? "
    "AND request_id IN (SELECT request_id FROM replay WHERE replay_id = ?)"
)
_REPLAYED = (
    "SELECT request_id, model, version, status, output, latency_ms, late FROM replay "
    "WHERE replay_id = ?"
)


def _requests_to_replay(root: Path, service: str, window: Window) -> tuple[int, int]:
    from rendezvous.archive.report import where_clause
    from rendezvous.archive.sql import ArchiveSQL

    where, params = where_clause(service, window)
    with ArchiveSQL(root) as db:
        counts = db.frame(
            f"SELECT count(*) FILTER (WHERE error IS NULL) AS n, count(*) AS total "
            f"FROM requests{where}",
            params,
        )
        n, total = int(counts["n"][0]), int(counts["total"][0])
        if total == 0:
            known = db.frame("SELECT DISTINCT service FROM requests ORDER BY 1")["service"]
            raise ArchiveError(
                f"no archived requests of service {service!r} ({window.describe()}); services "
                f"in {root}: {', '.join(known) or 'none'}; check --service and --since/--until"
            )
        if n == 0:
            raise ArchiveError(
                f"all {total} archived requests of service {service!r} ({window.describe()}) "
                "failed enrichment, so there is nothing to score"
            )
    return n, total


def cmd_replay(args: argparse.Namespace, settings: StackSettings) -> int:
    from rendezvous.archive.metrics import OutputFields
    from rendezvous.archive.sql import ArchiveSQL
    from rendezvous.errors import StackError
    from rendezvous.stack import Stack
    from rendezvous.stack.flink import REPO_ROOT

    now = datetime.now(timezone.utc)
    root = Path(args.archive) if args.archive else settings.archive_dir
    window = Window.parse(args.since, args.until, now=now)
    try:
        params = json.loads(args.params) if args.params else None
    except json.JSONDecodeError as exc:
        raise ArchiveError(
            f"--params is not JSON ({exc}); write e.g. '{{\"value\": 0.5}}'"
        ) from None
    if params is not None and not isinstance(params, dict):
        raise ArchiveError("--params must be a JSON object of keyword arguments")
    spec = model_spec(args.model_uri, name=args.name, params=params)
    replay_id = args.replay_id or new_replay_id(now)
    if not _NAME.match(replay_id):
        raise ArchiveError(f"--replay-id {replay_id!r}: use letters, digits, '_', '.' or '-'")
    if args.parallelism < 1:
        raise ArchiveError(f"--parallelism must be at least 1, got {args.parallelism}")
    fields = OutputFields(label=args.label_field, value=args.output_field, threshold=args.threshold)

    n, total = _requests_to_replay(root, args.service, window)
    stack = Stack(settings)
    if not stack.flink.ready():
        raise StackError(f"no Flink cluster answers at {settings.flink_url}; run `rendezvous up`")
    since_ms, until_ms = window_ms(window)
    job_args = [
        "--archive",
        str(root),
        "--service",
        args.service,
        "--model",
        json.dumps(spec),
        "--replay-id",
        replay_id,
        "--tracking-uri",
        args.tracking_uri or settings.mlflow_url,
        "--parallelism",
        str(args.parallelism),
        *(["--since-ms", str(since_ms)] if since_ms is not None else []),
        *(["--until-ms", str(until_ms)] if until_ms is not None else []),
    ]
    print(
        f"replaying {n} archived requests of {args.service} ({window.describe()}"
        + (f"; {total - n} more failed enrichment" if total > n else "")
        + ") with "
        f"{args.model_uri} as {args.name!r}, replay {replay_id}, parallelism {args.parallelism} ..."
    )
    job = stack.flink.submit(
        REPO_ROOT / "jobs" / "replay.py", job_args, name_hint="the replay job", detached=False
    )
    with ArchiveSQL(root) as db:
        replayed = db.frame(_REPLAYED, [replay_id]) if "replay" in db.views else None
        if replayed is None or replayed.empty:
            raise ArchiveError(
                f"the replay job {job} finished but wrote no rows for replay {replay_id} "
                f"under {root / 'replay'}; see the job in the Flink UI ({settings.flink_url})"
            )
        live = db.frame(_LIVE, [args.service, replay_id])
    errors = int((replayed["status"] != "ok").sum())
    versions = ", ".join(sorted(replayed["version"].unique()))
    print(
        f"\nreplay {replay_id}: {len(replayed)} scores ({errors} errors) from {args.name} "
        f"version {versions}; model compute p50 {replayed['latency_ms'].median():.0f} ms"
    )
    print("\nagainst the live models on the same requests (deltas: replay - live):")
    print(diff_table(compare(live, replayed, fields)))
    print(f"\nrows: rendezvous sql \"SELECT * FROM replay WHERE replay_id = '{replay_id}'\"")
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "replay",
        help="score archived requests with another model (Flink batch) and diff with live",
        description="An offline shadow run: the archived requests of a service are scored by "
        "--model-uri in a Flink batch job, written to the replay table, and compared request "
        "by request with what each live model returned.",
    )
    p.add_argument("--service", required=True, help="the service whose requests to replay")
    p.add_argument(
        "--model-uri",
        required=True,
        metavar="URI",
        help="models:/name/3, models:/name@alias, runs:/<id>/model, or module:function",
    )
    p.add_argument("--params", metavar="JSON", help="keyword arguments of a module:function")
    p.add_argument("--name", default="replay", help="the model's name in the replay table")
    add_window_args(p)
    p.add_argument("--replay-id", help="tag of this run (default: the time and a random suffix)")
    p.add_argument("--parallelism", type=int, default=2, help="parallel scoring workers")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the stack's server)")
    add_output_args(p)
    p.set_defaults(func=cmd_replay)
    return p
