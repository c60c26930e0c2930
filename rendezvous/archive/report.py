"""``rendezvous report``: every model against the first choice, and canary drift, from the archive.

The first choice of a request is the first model of the policy it was decided under (the
archived ``requests`` and ``decisions`` say which), so the comparison follows promotions.

Reads the ``scores`` and ``decisions`` of a time window (on ``received_ms``, ``--until``
exclusive), and the true labels of those requests (the ``labels`` view, whenever they were
given), with :class:`rendezvous.archive.sql.ArchiveSQL`, computes the figures with the pure
functions of :mod:`rendezvous.archive.metrics`, prints a summary, and optionally writes a
self-contained HTML page and logs one MLflow run per service.

:func:`compare_replay` (a replay run against the live scores of the same requests) is exposed
here for the ``replay`` command.
"""

from __future__ import annotations

import argparse
import importlib
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rendezvous.archive.layout import ArchiveError

if TYPE_CHECKING:
    import pandas as pd

    from rendezvous.archive.metrics import (
        OutputFields,
        ServiceReport,
        build_reports,
        compare_replay,
        psi,
    )
    from rendezvous.settings import StackSettings

# Imported on first use, so that building the CLI parser stays fast.
_LAZY = {
    "OutputFields": "metrics",
    "ServiceReport": "metrics",
    "build_reports": "metrics",
    "compare_replay": "metrics",
    "psi": "metrics",
}

__all__ = [
    "OutputFields",
    "ServiceReport",
    "Window",
    "add_cli",
    "build_reports",
    "cmd_report",
    "compare_replay",
    "load",
    "load_labels",
    "log_to_mlflow",
    "mlflow_metrics",
    "parse_time",
    "psi",
    "summary",
]

DEFAULT_EXPERIMENT = "rendezvous-reports"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"rendezvous.archive.{module}"), name)


# ---- the window --------------------------------------------------------------------------

_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, *, now: datetime, flag: str = "--since") -> datetime:
    """An ISO date or time (UTC unless it says otherwise), or an age before ``now`` (``2h``)."""
    stripped = text.strip()
    age = _AGE.fullmatch(stripped)
    if age:
        return now - timedelta(seconds=float(age[1]) * _UNIT_S[age[2]])
    iso = stripped[:-1] + "+00:00" if stripped[-1:] in ("Z", "z") else stripped
    try:
        at = datetime.fromisoformat(iso)
    except ValueError:
        raise ArchiveError(
            f"{flag} {text!r} is not a time: expected an ISO date or time (2024-05-01, "
            f"2024-05-01T13:00, 2024-05-01T13:00+02:00; UTC when no offset) or an age such as "
            f"30m, 2h, 7d, 1w"
        ) from None
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


@dataclass(frozen=True)
class Window:
    """Received between ``since`` (inclusive) and ``until`` (exclusive); None is unbounded."""

    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def parse(cls, since: str | None, until: str | None, *, now: datetime) -> Window:
        window = cls(
            parse_time(since, now=now, flag="--since") if since else None,
            parse_time(until, now=now, flag="--until") if until else None,
        )
        if window.since and window.until and window.since >= window.until:
            raise ArchiveError(
                f"--since {window.since:%Y-%m-%dT%H:%M:%SZ} is not before --until "
                f"{window.until:%Y-%m-%dT%H:%M:%SZ}; swap them or widen the window"
            )
        return window

    def describe(self) -> str:
        if not self.since and not self.until:
            return "all times"
        since = f"{self.since:%Y-%m-%d %H:%M:%S}" if self.since else "the start"
        until = f"{self.until:%Y-%m-%d %H:%M:%S}" if self.until else "now"
        return f"received from {since} to {until} UTC"


# ---- loading -----------------------------------------------------------------------------

_SCORES = (
    "SELECT service, request_id, model, version, role, status, output, latency_ms, late, "
    "received_ms, scored_ms FROM scores"
)
_DECISIONS = (
    "SELECT service, request_id, model, role, status, reason, received_ms, decided_ms, "
    "latency_ms, deadline_ms, policy_version, output, arm, unsampled FROM decisions"
)
_POLICIES = "SELECT service, request_id, policy_version, preference, sla_ms FROM requests"


def where_clause(service: str | None, window: Window) -> tuple[str, list[Any]]:
    """A WHERE clause on service and received_ms, with dt bounds so DuckDB skips folders."""
    clauses, params = [], []
    if service:
        clauses.append("service = ?")
        params.append(service)
    if window.since:
        clauses += ["dt >= CAST(? AS DATE)", "received_ms >= ?"]
        params += [f"{window.since:%Y-%m-%d}", int(window.since.timestamp() * 1000)]
    if window.until:
        clauses += ["dt <= CAST(? AS DATE)", "received_ms < ?"]
        params += [f"{window.until:%Y-%m-%d}", int(window.until.timestamp() * 1000)]
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def load(root: Path, *, service: str | None, window: Window) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scores and decisions in the window; an error naming what exists when there are none."""
    from rendezvous.archive.sql import ArchiveSQL

    where, params = where_clause(service, window)
    with ArchiveSQL(root) as db:
        scores = db.frame(_SCORES + where, params)
        decisions = db.frame(_DECISIONS + where, params)
        if scores.empty and decisions.empty:
            known = db.frame("SELECT DISTINCT service FROM scores ORDER BY 1")["service"]
            raise ArchiveError(
                f"no scores or decisions in {root}"
                + (f" for service {service!r}" if service else "")
                + f" {window.describe()}; services in the archive: "
                + (", ".join(known) if len(known) else "none")
                + "; check --archive, --service and --since/--until"
            )
    return scores, decisions


def load_policies(root: Path, *, service: str | None, window: Window) -> pd.DataFrame:
    """The policy each request of the window was accepted under (the ``requests`` table:
    policy_version, preference, sla_ms): what says each request's first choice."""
    from rendezvous.archive.sql import ArchiveSQL

    where, params = where_clause(service, window)
    with ArchiveSQL(root) as db:
        return db.frame(_POLICIES + where, params)


_FEATURES = "SELECT service, request_id, features FROM requests"
DEFAULT_DRIFT_REFERENCE = "first:24h"


def drift_reference_window(root: Path, spec: str, *, service: str | None, now: datetime) -> Window:
    """The reference window of ``--drift-reference``: ``first:SPAN`` (the archive's first
    SPAN of the service, from its earliest archived score) or ``SINCE/UNTIL`` (times or ages
    as --since takes them)."""
    from rendezvous.archive.evidence import parse_window
    from rendezvous.archive.sql import ArchiveSQL

    text = spec.strip()
    if text.startswith("first:"):
        try:
            span = parse_window(text.removeprefix("first:"))
        except ArchiveError:
            raise ArchiveError(
                f"--drift-reference {spec!r}: expected first:SPAN (first:24h, first:7d) or "
                "SINCE/UNTIL (2024-05-01/2024-05-02, 14d/7d)"
            ) from None
        where, params = where_clause(service, Window())
        with ArchiveSQL(root) as db:
            earliest = db.frame("SELECT min(received_ms) AS t FROM scores" + where, params)["t"]
        start = earliest.iloc[0] if len(earliest) else None
        if start is None or start != start:
            return Window(now, now)  # nothing archived: an empty reference
        since = datetime.fromtimestamp(int(start) / 1000, tz=timezone.utc)
        return Window(since, since + span)
    since, sep, until = text.partition("/")
    if not sep or not since or not until:
        raise ArchiveError(
            f"--drift-reference {spec!r}: expected first:SPAN (first:24h, first:7d) or "
            "SINCE/UNTIL (2024-05-01/2024-05-02, 14d/7d)"
        )
    window = Window(
        parse_time(since, now=now, flag="--drift-reference"),
        parse_time(until, now=now, flag="--drift-reference"),
    )
    if window.since >= window.until:
        raise ArchiveError(f"--drift-reference {spec!r}: the start is not before the end")
    return window


def load_reference(
    root: Path, *, service: str | None, window: Window
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scores and the requests' features of the drift reference window (empty frames when
    it holds none)."""
    from rendezvous.archive.sql import ArchiveSQL

    where, params = where_clause(service, window)
    with ArchiveSQL(root) as db:
        return db.frame(_SCORES + where, params), db.frame(_FEATURES + where, params)


def with_self_drift(
    reports: Sequence[ServiceReport],
    *,
    current: tuple[pd.DataFrame, pd.DataFrame],
    reference: tuple[pd.DataFrame, pd.DataFrame],
    fields: Any,
    described: str,
) -> list[ServiceReport]:
    """``reports`` with each canary's drift against its own reference window and each
    numeric input feature's (``current`` and ``reference``: scores and request features)."""
    from dataclasses import replace

    from rendezvous.archive import drift
    from rendezvous.archive.metrics import read_scores

    out = []
    for r in reports:

        def of(frame: pd.DataFrame, service: str = r.service) -> pd.DataFrame:
            return frame[frame["service"] == service] if len(frame) else frame

        now_scores, now_features = (of(f) for f in current)
        ref_scores, ref_features = (of(f) for f in reference)
        selves = drift.canary_self_drift(
            read_scores(now_scores, fields), read_scores(ref_scores, fields)
        )
        features = drift.feature_drift(now_features["features"], ref_features["features"])
        out.append(
            replace(r, self_drift=tuple(selves), feature_drift=features, drift_reference=described)
        )
    return out


_LABELS = "SELECT service, request_id, label, labelled_ms FROM labels"


def load_labels(root: Path, *, service: str | None, window: Window) -> pd.DataFrame:
    """The first label of each request of the window's services. A label comes after its
    request, at any time: only the folders from the window's first day on are read, up to now
    (a label given after ``--until`` still counts for a request received before it)."""
    from rendezvous.archive.sql import ArchiveSQL

    clauses, params = [], []
    if service:
        clauses.append("service = ?")
        params.append(service)
    if window.since:
        clauses.append("dt >= CAST(? AS DATE)")
        params.append(f"{window.since:%Y-%m-%d}")
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    with ArchiveSQL(root) as db:
        return db.frame(_LABELS + where, params)


# ---- the summary -------------------------------------------------------------------------


def summary(reports: Sequence[ServiceReport], *, root: Path, window: Window) -> str:
    """The terminal summary of every service."""
    from rendezvous.archive import render

    lines = [f"Archive {root}, {window.describe()}"]
    for r in reports:
        lines += [
            "",
            f"{r.service}: {r.requests} requests, {r.decisions} decisions, "
            f"compared with {render.first_choice_text(r)}",
            render.text_table(*render.model_rows(r.models)),
            f"  {render.outcome_title(r)}" if r.labelled else f"  {render.NO_LABELS}",
            *(
                [render.text_table(*render.outcome_rows(r.models), indent="    ")]
                if r.labelled
                else []
            ),
            *(
                ["  A/B arms (by the split's key; answered = by the arm's own model):"]
                + [render.text_table(*render.arm_rows(r.arms), indent="    ")]
                if len(r.arms)
                else []
            ),
            *(
                ["  sampled models (requests not sampled are neither late nor errors):"]
                + [render.text_table(*render.sample_rows(r.samples), indent="    ")]
                if len(r.samples)
                else []
            ),
            "  decisions by reason:",
            render.text_table(*render.reason_rows(r.reasons), indent="    ")
            if len(r.reasons)
            else "    (no decisions)",
        ]
        for drift in r.drift:
            lines += [
                f"  canary drift of {drift.canary} (PSI over the first choice's deciles; "
                f"< {render.PSI_WATCH} stable, > {render.PSI_SHIFTED} shifted):",
                render.text_table(*render.drift_rows(drift), indent="    "),
            ]
        for drift in r.self_drift:
            lines += [
                f"  canary {drift.canary} against its own outputs in the reference window, "
                f"{r.drift_reference} (PSI):",
                render.text_table(*render.self_drift_rows(drift), indent="    "),
            ]
        if len(r.feature_drift):
            lines += [
                f"  input features against the reference window, {r.drift_reference} "
                "(PSI, largest first):",
                render.text_table(*render.feature_drift_rows(r.feature_drift), indent="    "),
            ]
        lines += [f"  note: {n}" for n in r.notes]
    return "\n".join(lines)


# ---- MLflow ------------------------------------------------------------------------------

_METRICS = (
    "agreement",
    "labelled",
    "accuracy",
    "auc",
    "log_loss",
    "delta_mean",
    "delta_p05",
    "delta_p50",
    "delta_p95",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "error_rate",
    "late_rate",
    "win_rate",
)
_ARM_METRICS = ("share", "answered_by_arm", "latency_p50", "latency_p95", "accuracy")
_UNSAFE = re.compile(r"[^\w\-. /]")


def mlflow_metrics(report: ServiceReport) -> list[tuple[str, float, int, int | None]]:
    """(name, value, step, timestamp ms) of one service's run; missing figures are left out.

    Per model ``<figure>.<model>`` (``agreement.lr``, ``accuracy.lr``, ``auc.gbm``,
    ``latency_p95.gbm``, ...); per A/B arm ``arm_<figure>.<arm>`` (``arm_share.gbm``,
    ``arm_answered_by_arm.lr``, ``arm_accuracy.lr``, ...); per canary
    ``psi.<canary>`` over the window, and ``psi_hourly.<canary>`` with one step per hour,
    stamped with the hour; ``psi_self.<canary>`` against the canary's own reference window
    and ``psi_feature.<feature>`` per numeric input feature.
    """
    out: list[tuple[str, float, int, int | None]] = []
    for row in report.models.to_dict("records"):
        model = _UNSAFE.sub("_", str(row["model"]))
        out += [
            (f"{name}.{model}", float(row[name]), 0, None)
            for name in _METRICS
            if row[name] == row[name]  # not NaN
        ]
    for row in report.arms.to_dict("records"):
        arm = _UNSAFE.sub("_", str(row["arm"]))
        out += [
            (f"arm_{name}.{arm}", float(row[name]), 0, None)
            for name in _ARM_METRICS
            if row[name] == row[name]  # not NaN
        ]
    for drift in report.drift:
        canary = _UNSAFE.sub("_", drift.canary)
        if drift.window_psi == drift.window_psi:
            out.append((f"psi.{canary}", drift.window_psi, 0, None))
        for step, hour in enumerate(drift.hourly.dropna(subset=["psi"]).itertuples()):
            stamp = int(hour.hour.timestamp() * 1000)
            out.append((f"psi_hourly.{canary}", float(hour.psi), step, stamp))
    for drift in report.self_drift:
        canary = _UNSAFE.sub("_", drift.canary)
        if drift.window_psi == drift.window_psi:
            out.append((f"psi_self.{canary}", drift.window_psi, 0, None))
    for row in report.feature_drift.to_dict("records"):
        if row["psi"] == row["psi"]:
            out.append(
                (f"psi_feature.{_UNSAFE.sub('_', str(row['feature']))}", row["psi"], 0, None)
            )
    return out


def log_to_mlflow(
    reports: Sequence[ServiceReport],
    *,
    tracking_uri: str,
    experiment: str,
    params: dict[str, str],
    html: dict[str, str],
    now_ms: int,
) -> list[str]:
    """One run per service with its figures, ``params`` and its HTML page; the run ids."""
    _probe_tracking(tracking_uri)
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        run_ids = []
        for r in reports:
            run_id = client.create_run(experiment_id, run_name=f"report {r.service}").info.run_id
            try:
                metrics = [
                    Metric(name, value, now_ms if stamp is None else stamp, step)
                    for name, value, step, stamp in mlflow_metrics(r)
                ]
                run_params = {**params, "service": r.service, "champion": r.champion or ""}
                client.log_batch(run_id, metrics, [Param(k, v) for k, v in run_params.items()])
                with tempfile.TemporaryDirectory(prefix="rdv-report-") as tmp:
                    page = Path(tmp) / "report.html"
                    page.write_text(html[r.service])
                    client.log_artifact(run_id, str(page))
            except BaseException:
                client.set_terminated(run_id, "FAILED")
                raise
            client.set_terminated(run_id)
            run_ids.append(run_id)
    except MlflowException as exc:
        raise ArchiveError(f"MLflow at {tracking_uri} refused the report: {exc.message}") from None
    return run_ids


def _probe_tracking(uri: str) -> None:
    """Fail fast, not after MLflow's retries, when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import httpx

    try:
        httpx.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        raise ArchiveError(
            f"no MLflow tracking server answers at {uri} ({exc}); run `rendezvous up` or pass "
            f"--tracking-uri"
        ) from None


# ---- command line ------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace, settings: StackSettings) -> int:
    """``rendezvous report``: print the comparison; write HTML and log to MLflow when asked."""
    from rendezvous.archive import render
    from rendezvous.archive.metrics import OutputFields, build_reports

    now = datetime.now(timezone.utc)
    root = Path(args.archive) if args.archive else settings.archive_dir
    window = Window.parse(args.since, args.until, now=now)
    fields = OutputFields(label=args.label_field, value=args.output_field, threshold=args.threshold)
    uri = args.tracking_uri or settings.mlflow_url
    if args.mlflow:
        _probe_tracking(uri)  # before the work, not after it
    scores, decisions = load(root, service=args.service, window=window)
    labels = load_labels(root, service=args.service, window=window)
    policies = load_policies(root, service=args.service, window=window)
    reports = build_reports(scores, decisions, fields, labels=labels, requests=policies)
    reference = drift_reference_window(root, args.drift_reference, service=args.service, now=now)
    features = load_reference(root, service=args.service, window=window)[1]
    reports = with_self_drift(
        reports,
        current=(scores, features),
        reference=load_reference(root, service=args.service, window=reference),
        fields=fields,
        described=reference.describe(),
    )
    print(summary(reports, root=root, window=window))

    title = "Rendezvous model report"
    subtitle = f"Archive {root}, {window.describe()}"
    if args.html:
        Path(args.html).write_text(render.page(reports, title=title, subtitle=subtitle))
        print(f"\nHTML report written to {args.html}")
    if args.mlflow:
        params = _run_params(root, window, fields)
        pages = {
            r.service: render.page([r], title=f"{title}: {r.service}", subtitle=subtitle)
            for r in reports
        }
        run_ids = log_to_mlflow(
            reports,
            tracking_uri=uri,
            experiment=args.experiment,
            params=params,
            html=pages,
            now_ms=int(now.timestamp() * 1000),
        )
        print(f"\nMLflow runs in experiment {args.experiment!r} at {uri}: {', '.join(run_ids)}")
    return 0


def _run_params(root: Path, window: Window, fields: OutputFields) -> dict[str, str]:
    def stamp(at: datetime | None) -> str:
        return f"{at:%Y-%m-%dT%H:%M:%SZ}" if at else ""

    return {
        "archive": str(root),
        "since": stamp(window.since),
        "until": stamp(window.until),
        "label_field": fields.label,
        "output_field": fields.value,
        "threshold": "" if fields.threshold is None else str(fields.threshold),
    }


def add_window_args(p: argparse.ArgumentParser) -> None:
    """--since, --until and --archive, shared by the commands that read the archive."""
    p.add_argument("--since", metavar="T", help="from T: ISO date/time (UTC) or an age: 2h, 7d")
    p.add_argument("--until", metavar="T", help="before T (exclusive), same forms as --since")
    p.add_argument("--archive", metavar="PATH", help="archive root (default: the stack's)")


def add_output_args(p: argparse.ArgumentParser) -> None:
    """How outputs are read (see :class:`OutputFields`): --label-field, --output-field and
    --threshold."""
    p.add_argument("--label-field", default="label", help="output field compared for agreement")
    p.add_argument(
        "--output-field",
        default="probability",
        help="numeric output field for deltas and drift (default: probability)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        metavar="T",
        help="label = value >= T instead of the label field (for probabilities)",
    )


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``report`` subcommand; its handler is ``cmd_report(args, settings)``."""
    p = subparsers.add_parser(
        "report",
        help="compare every model with the first choice and measure canary drift, from the archive",
        description="Per model against the first choice of the policy each request was "
        "decided under (after `rendezvous promote`, the promoted model): agreement, score deltas, latency, error "
        "and late rates, wins and fallback reasons; against the true labels (POST "
        "/v1/requests/{id}/feedback, topic rdv.feedback): accuracy, and AUC and log-loss for "
        "binary classifiers, with the number of labelled requests; per canary: PSI against "
        "the first choice per hour. Outputs are JSON: an object's label field is compared for "
        "agreement and with the true label, its numeric field for deltas and drift; a plain "
        "number is both.",
    )
    p.add_argument("--service", help="only this service (default: every service)")
    add_window_args(p)
    p.add_argument(
        "--drift-reference",
        default=DEFAULT_DRIFT_REFERENCE,
        metavar="WINDOW",
        help="what each canary's outputs and the input features are compared with: first:SPAN "
        "(the archive's first SPAN of the service; default first:24h) or SINCE/UNTIL",
    )
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report")
    add_output_args(p)
    p.add_argument("--mlflow", action="store_true", help="log one MLflow run per service")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the stack's server)")
    p.add_argument(
        "--experiment",
        default=DEFAULT_EXPERIMENT,
        help=f"MLflow experiment (default: {DEFAULT_EXPERIMENT})",
    )
    p.set_defaults(func=cmd_report)
    return p
