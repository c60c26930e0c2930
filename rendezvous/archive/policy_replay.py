"""``rendezvous replay-policy``: what another preference order or SLA would have answered.

The archived decisions of a service are decided again by the rendezvous core itself
(:mod:`rendezvous.core`, pure and driven by recorded timestamps), with the archived scores of
each request and the new policy: every score in event-time order, then the deadline's timer.
Nothing is scored again; a model that did not score a request is silent in the new order too.

- A request's new deadline is ``received_ms + SLA - min(decision_lead_ms, SLA // 4)``, as the
  proxy sets it; a request whose client asked for a tighter deadline than its SLA
  (``X-Deadline-Ms``, seen as an archived deadline earlier than its archived SLA gives) keeps
  its own deadline where that is earlier. Without ``--sla-ms`` every request keeps its
  archived deadline.
- Requests that failed enrichment or reached it after their deadline are answered with the
  same error (there are no scores to decide on); orphan decisions (scores without a request)
  are left out.
- An answer *changes model* when the new answering model differs from the archived one (an
  error answer has none); its *reason changes* when the kind of reason differs: ``preferred``,
  ``fallback``, ``backstop``, ``no_answer``, or an error's own kind.
- Latency is ``decided_ms - received_ms`` of the answer, over the answers that are not errors.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rendezvous import core
from rendezvous.archive.layout import ArchiveError

if TYPE_CHECKING:
    import pandas as pd

    from rendezvous.settings import StackSettings

DEFAULT_LEAD_MS = 15  # rendezvous.proxy.settings.ProxySettings.decision_lead_ms

ANSWER_COLUMNS = [
    "request_id",
    "received_ms",
    "archived_model",
    "archived_reason",
    "archived_latency_ms",
    "model",
    "reason",
    "latency_ms",
    "deadline_ms",
]


@dataclass(frozen=True)
class NewPolicy:
    preference: tuple[str, ...]
    sla_ms: int | None  # None: every request keeps its archived deadline
    decision_lead_ms: int = DEFAULT_LEAD_MS


def parse_preference(text: str) -> tuple[str, ...]:
    """``a,b,c``: model names, most preferred first, each once."""
    names = tuple(n.strip() for n in text.split(","))
    if not text.strip() or any(not n for n in names):
        raise ArchiveError(
            f"--preference {text!r}: expected model names separated by commas, most preferred "
            "first (e.g. --preference challenger,champion,backstop)"
        )
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ArchiveError(f"--preference names {', '.join(twice)} more than once; name each once")
    return names


def new_deadline(
    received_ms: int,
    archived_deadline_ms: int,
    archived_sla_ms: int | None,
    policy: NewPolicy,
) -> int:
    """The deadline a request would have had under ``policy`` (see the module docstring)."""
    if policy.sla_ms is None:
        return archived_deadline_ms
    lead = policy.decision_lead_ms

    def by_sla(sla: int) -> int:
        return received_ms + sla - min(lead, sla // 4)

    deadline = by_sla(policy.sla_ms)
    if archived_sla_ms is not None and archived_deadline_ms < by_sla(archived_sla_ms):
        deadline = min(deadline, archived_deadline_ms)  # the client's own, tighter deadline
    return deadline


def reason_kind(reason: str | None) -> str:
    """``preferred``, ``fallback``, ``backstop``, ``no_answer``, or an error's own kind."""
    if not reason:
        return ""
    if reason == "preferred":
        return reason
    return reason.split(":", 1)[0].strip()


def decide(
    request: dict[str, Any], scores: Sequence[dict[str, Any]], preference: Sequence[str]
) -> dict[str, Any]:
    """The result the rendezvous core gives ``request`` (with its new ``deadline_ms`` and an
    optional ``error``) and these scores under ``preference``: the scores in event-time order
    up to the deadline, then the deadline's timer."""
    record = {
        **request,
        "reply_to": "",
        "policy": {"preference": list(preference), "sla_ms": 0, "grace_ms": 0, "version": 0},
    }
    state = core.Pending()
    results = list(core.on_request(state, record).results)
    deadline = record["deadline_ms"]
    for score in sorted(scores, key=lambda s: s["scored_ms"]):
        if results or score["scored_ms"] > deadline:
            break
        results += core.on_score(state, score).results
    if not results:
        results += core.on_timer(state, deadline).results
    return results[0]


def _error_of(reason: str) -> str | None:
    """The request's own error for a decision that never reached the models."""
    if reason.startswith("enrichment_failed: "):
        return reason[len("enrichment_failed: ") :]
    if reason.startswith("deadline_exceeded"):
        return reason
    return None


def replay(
    decisions: pd.DataFrame,
    scores: pd.DataFrame,
    requests: pd.DataFrame | None,
    policy: NewPolicy,
) -> pd.DataFrame:
    """One row per replayed decision (:data:`ANSWER_COLUMNS`), by received time."""
    import pandas as pd

    from rendezvous.archive.metrics import first_scores

    decided = decisions.drop_duplicates("request_id")
    decided = decided[~decided["reason"].str.startswith("orphan")]
    slas: dict[str, int] = {}
    if requests is not None and not requests.empty:
        slas = {
            str(r): int(s)
            for r, s in zip(requests["request_id"], requests["sla_ms"], strict=True)
            if s == s
        }
    by_request: dict[str, list[dict[str, Any]]] = {}
    for score in first_scores(scores).to_dict("records"):
        by_request.setdefault(str(score["request_id"]), []).append(score)
    rows = []
    for d in decided.sort_values(["received_ms", "request_id"]).to_dict("records"):
        rid = str(d["request_id"])
        deadline = new_deadline(int(d["received_ms"]), int(d["deadline_ms"]), slas.get(rid), policy)
        request = {
            "request_id": rid,
            "service": d.get("service", ""),
            "received_ms": int(d["received_ms"]),
            "deadline_ms": deadline,
            "error": _error_of(str(d["reason"])),
        }
        result = decide(request, by_request.get(rid, []), policy.preference)
        rows.append(
            {
                "request_id": rid,
                "received_ms": int(d["received_ms"]),
                "archived_model": d["model"] if isinstance(d["model"], str) else None,
                "archived_reason": d["reason"],
                "archived_latency_ms": int(d["latency_ms"]),
                "model": result["model"],
                "reason": result["reason"],
                "latency_ms": result["decided_ms"] - result["received_ms"],
                "deadline_ms": deadline,
            }
        )
    return pd.DataFrame(rows, columns=ANSWER_COLUMNS)


# ---- the summary -------------------------------------------------------------------------

LATENCY_PERCENTS = (50, 95, 99)


def _latency(values: Sequence[float]) -> dict[str, float | None]:
    import numpy as np

    clean = np.asarray([v for v in values if v == v], dtype=float)
    if clean.size == 0:
        return {"n": 0, "mean": None, **{f"p{p}": None for p in LATENCY_PERCENTS}, "max": None}
    out: dict[str, Any] = {"n": int(clean.size), "mean": float(clean.mean())}
    out.update({f"p{p}": float(np.percentile(clean, p)) for p in LATENCY_PERCENTS})
    out["max"] = float(clean.max())
    return out


def summarize(answers: pd.DataFrame) -> dict[str, Any]:
    """Counts of changes, the changes by kind, answers per model and latency, both ways."""
    archived_kind = answers["archived_reason"].map(reason_kind)
    new_kind = answers["reason"].map(reason_kind)
    model_changed = [
        a != b for a, b in zip(answers["archived_model"], answers["model"], strict=True)
    ]
    reason_changed = list(archived_kind != new_kind)
    transitions: dict[tuple[str, str], int] = {}
    for a_model, a_kind, n_model, n_kind, m, r in zip(
        answers["archived_model"],
        archived_kind,
        answers["model"],
        new_kind,
        model_changed,
        reason_changed,
        strict=True,
    ):
        if m or r:
            key = (f"{a_model or '(none)'} {a_kind}", f"{n_model or '(none)'} {n_kind}")
            transitions[key] = transitions.get(key, 0) + 1
    models = sorted({m for m in [*answers["archived_model"], *answers["model"]] if m is not None})
    by_model = [
        {
            "model": m,
            "archived": int((answers["archived_model"] == m).sum()),
            "new": int((answers["model"] == m).sum()),
        }
        for m in models
    ]
    by_model.append(
        {
            "model": None,
            "archived": int(answers["archived_model"].isna().sum()),
            "new": int(answers["model"].isna().sum()),
        }
    )
    ok_archived = answers.loc[answers["archived_model"].notna(), "archived_latency_ms"]
    ok_new = answers.loc[answers["model"].notna(), "latency_ms"]
    return {
        "decisions": len(answers),
        "model_changed": int(sum(model_changed)),
        "reason_changed": int(sum(reason_changed)),
        "transitions": [
            {"archived": a, "new": b, "count": n}
            for (a, b), n in sorted(transitions.items(), key=lambda t: (-t[1], t[0]))
        ],
        "by_model": by_model,
        "latency_ms": {"archived": _latency(list(ok_archived)), "new": _latency(list(ok_new))},
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _share(part: int, whole: int) -> str:
    return f"{part} of {whole}" + (f" ({100 * part / whole:.1f}%)" if whole else "")


def text(summary: dict[str, Any], *, header: Sequence[str]) -> str:
    """The summary as readable tables."""
    from rendezvous.archive.render import text_table

    n = summary["decisions"]
    lines = [
        *header,
        f"answers that change model:  {_share(summary['model_changed'], n)}",
        f"reasons that change:        {_share(summary['reason_changed'], n)}",
    ]
    if summary["transitions"]:
        rows = [[t["archived"], t["new"], str(t["count"])] for t in summary["transitions"]]
        lines += [
            "  changes (model and kind of reason):",
            text_table(["archived", "new", "answers"], rows, indent="    "),
        ]
    lines.append("answers by model:")
    rows = [
        [m["model"] or "(error)", str(m["archived"]), str(m["new"])] for m in summary["by_model"]
    ]
    lines.append(text_table(["model", "archived", "new"], rows, indent="    "))
    lat = summary["latency_ms"]
    lines.append("latency of the answers (ms, decided - received; errors left out):")
    rows = [
        [
            name,
            str(lat["archived"][key] if key == "n" else _ms(lat["archived"][key])),
            str(lat["new"][key] if key == "n" else _ms(lat["new"][key])),
        ]
        for name, key in [
            ("answers", "n"),
            ("mean", "mean"),
            *((f"p{p}", f"p{p}") for p in LATENCY_PERCENTS),
            ("max", "max"),
        ]
    ]
    lines.append(text_table(["", "archived", "new"], rows, indent="    "))
    return "\n".join(lines)


# ---- loading and the command line -------------------------------------------------------

_DECISIONS = (
    "SELECT service, request_id, received_ms, deadline_ms, latency_ms, status, model, reason, "
    "policy_version FROM decisions"
)
_SCORES = (
    "SELECT service, request_id, model, version, role, status, output, error, received_ms, "
    "deadline_ms, started_ms, scored_ms FROM scores"
)
_REQUESTS = "SELECT request_id, policy_version, preference, sla_ms FROM requests"


def load(root: Path, service: str, window: Any) -> tuple[pd.DataFrame, ...]:
    """The decisions, scores and requests of ``service`` in ``window``."""
    from rendezvous.archive.report import where_clause
    from rendezvous.archive.sql import ArchiveSQL

    where, params = where_clause(service, window)
    with ArchiveSQL(root) as db:
        decisions = db.frame(_DECISIONS + where, params)
        if decisions.empty:
            known = db.frame("SELECT DISTINCT service FROM decisions ORDER BY 1")["service"]
            raise ArchiveError(
                f"no decisions of {service!r} in {root} {window.describe()}; services with "
                f"decisions: {', '.join(known) if len(known) else 'none'}; check --archive, "
                "--service and --since/--until"
            )
        return (
            decisions,
            db.frame(_SCORES + where, params),
            db.frame(_REQUESTS + where, params),
        )


def _archived_policies(requests: pd.DataFrame) -> list[str]:
    if requests.empty:
        return []
    counted = requests.groupby(["policy_version", "preference", "sla_ms"]).size()
    return [
        f"  archived: policy v{v}: preference {' > '.join(p.split(','))}, SLA {s} ms ({n} requests)"
        for (v, p, s), n in counted.items()
    ]


def cmd_replay_policy(args: argparse.Namespace, settings: StackSettings) -> int:
    from rendezvous.archive.report import Window

    preference = parse_preference(args.preference)
    if args.sla_ms is not None and args.sla_ms < 1:
        raise ArchiveError(f"--sla-ms {args.sla_ms}: the SLA is a whole number of ms from 1 up")
    if args.decision_lead_ms < 0:
        raise ArchiveError(f"--decision-lead-ms {args.decision_lead_ms}: expected 0 or more")
    policy = NewPolicy(preference, args.sla_ms, args.decision_lead_ms)
    now = datetime.now(timezone.utc)
    root = Path(args.archive) if args.archive else settings.archive_dir
    window = Window.parse(args.since, args.until, now=now)
    decisions, scores, requests = load(root, args.service, window)
    answers = replay(decisions, scores, requests, policy)
    summary = summarize(answers)
    scored = set(scores["model"])
    silent = [m for m in preference if m not in scored]
    notes = [f"{m} has no scores in the window: in the new order it never answers" for m in silent]
    if args.json:
        document = {
            "service": args.service,
            "archive": str(root),
            "since": window.since.isoformat() if window.since else None,
            "until": window.until.isoformat() if window.until else None,
            "preference": list(preference),
            "sla_ms": args.sla_ms,
            "decision_lead_ms": args.decision_lead_ms,
            **summary,
            "notes": notes,
        }
        print(json.dumps(document, indent=2))
        return 0
    sla = f"SLA {args.sla_ms} ms" if args.sla_ms is not None else "the archived deadlines"
    header = [
        f"{args.service}: {summary['decisions']} decisions ({window.describe()}), decided again "
        f"with preference {' > '.join(preference)} and {sla}",
        *_archived_policies(requests),
        *(f"  note: {n}" for n in notes),
    ]
    print(text(summary, header=header))
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``replay-policy`` subcommand."""
    from rendezvous.archive.report import add_window_args

    p = subparsers.add_parser(
        "replay-policy",
        help="decide the archived requests again under another preference order or SLA",
        description="Run the rendezvous core again over a service's archived decisions and "
        "scores, with another preference order (and SLA): how many answers would change "
        "model, how many reasons would change (preferred -> fallback, ...), and the latency "
        "of the answers, archived and new. Nothing is scored again.",
    )
    p.add_argument("--service", required=True, help="the service whose decisions to replay")
    p.add_argument(
        "--preference",
        required=True,
        metavar="A,B,C",
        help="the new preference order: model names, most preferred first",
    )
    p.add_argument(
        "--sla-ms",
        type=int,
        metavar="N",
        help="the new SLA (default: every request keeps its archived deadline)",
    )
    p.add_argument(
        "--decision-lead-ms",
        type=int,
        default=DEFAULT_LEAD_MS,
        metavar="MS",
        help=f"how long before the SLA the join decides, as the proxy's decision_lead_ms "
        f"(default {DEFAULT_LEAD_MS})",
    )
    add_window_args(p)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=cmd_replay_policy)
    return p
