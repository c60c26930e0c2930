"""Comparisons of models over archived rows: pure functions, pandas DataFrames in and out.

Inputs are rows of the archive tables (``scores``, ``decisions``, ``replay``) for one service,
with the columns of ``rendezvous.archive.layout``. Nothing here reads files or the clock.

Conventions:

- A model's *score* of a request is its first one by ``scored_ms``; duplicates of the same
  (request, model) are dropped, so each model counts once per request.
- An output is read from its JSON: an object gives its label field (default ``label``) and
  its numeric field (default ``probability``); a plain number is its own label and value; a
  string or boolean is a label only. With a threshold ``T`` the label is ``value >= T``.
  Error scores have no output.
- Each request's *reference* is the first choice of the policy it was decided under (see
  :mod:`rendezvous.archive.reference`; the role ``champion`` only when no policy record
  says). Agreement compares labels of the requests both the model and the reference scored
  ok; deltas are ``model value - reference value`` on the same requests. A model is not
  compared on the requests it was the reference of. Below, "champion" names the reference.
- Quantiles interpolate linearly between the closest ranks (numpy's default).
- Latency quantiles use the ok scores; errors count in the error rate only.

Against the true outcome (the archive's ``labels``, when any): accuracy, and for binary
classifiers AUC and log-loss, per model; see :mod:`rendezvous.archive.outcomes`.

Canary drift is the population stability index (PSI) of each canary's values (on the
requests it was not the reference of) against the reference's values, per UTC hour of
``received_ms`` and over the whole window. Binning: the bin edges are the deciles of the
reference's values over the whole window (so every hour is measured against the same bins); the outer bins are open-ended, a bin holds ``edge[i-1] <= v <
edge[i]``, and equal deciles merge (discrete outputs give fewer bins). A bin that one side
leaves empty counts as a share of 0.0001 so that the logarithm stays finite.
``PSI = sum((canary_share - champion_share) * ln(canary_share / champion_share))``.

One module past 400 lines, on purpose: the model table, the drift and the replay comparison
share the conventions above and the helpers that implement them (first scores, reading
outputs, agreement, delta statistics); apart, each would import the others' internals.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd

from rendezvous.archive.arms import ARM_COLUMNS, SAMPLE_COLUMNS, arm_table, sample_table
from rendezvous.archive.layout import ArchiveError
from rendezvous.archive.outcomes import OUTCOME_COLUMNS, outcome_stats, true_labels
from rendezvous.archive.reference import FROM_ROLE, by_policy, first_choices

CHAMPION = "champion"
CANARY = "canary"
ROLE_ORDER = {"champion": 0, "canary": 1, "challenger": 2, "backstop": 3, "decoy": 4}

DRIFT_BINS = 10
PSI_FLOOR = 1e-4
HOUR_MS = 3_600_000

SCORE_COLUMNS = ("request_id", "model", "role", "status", "output", "latency_ms", "late")
DECISION_COLUMNS = ("request_id", "model", "reason")


@dataclass(frozen=True)
class OutputFields:
    """How to read a label and a number from an output (see the module docstring)."""

    label: str = "label"
    value: str = "probability"
    threshold: float | None = None


# ---- outputs -----------------------------------------------------------------------------


def read_output(text: str | None, fields: OutputFields) -> tuple[Hashable | None, float]:
    """(label, value) of one JSON output; (None, nan) when it has neither."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None, math.nan
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None, math.nan
    if isinstance(parsed, dict):
        label, value = _hashable(parsed.get(fields.label)), _number(parsed.get(fields.value))
    elif isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
        label, value = parsed, float(parsed)
    else:
        label, value = _hashable(parsed), math.nan
    if fields.threshold is not None:
        label = None if math.isnan(value) else bool(value >= fields.threshold)
    return label, value


def read_outputs(outputs: pd.Series, fields: OutputFields) -> pd.DataFrame:
    """The ``label`` (object) and ``value`` (float) of each output, on the same index."""
    pairs = [read_output(text, fields) for text in outputs]
    labels = pd.Series([p[0] for p in pairs], index=outputs.index, dtype=object)
    values = pd.Series([p[1] for p in pairs], index=outputs.index, dtype=float)
    return pd.DataFrame({"label": labels, "value": values})


def output_notes(outputs: Iterable[str | None], fields: OutputFields) -> list[str]:
    """Why agreement or deltas would come out empty: output objects lack the chosen fields."""
    objects = [o for o in (_load(text) for text in outputs) if isinstance(o, dict)]
    if not objects:
        return []
    keys = ", ".join(sorted({k for o in objects for k in o})) or "none"
    notes = []
    if fields.threshold is None and not any(fields.label in o for o in objects):
        notes.append(
            f"no output object has the label field {fields.label!r} (fields: {keys}), so "
            f"agreement is empty; pass --label-field NAME or --threshold T"
        )
    if not any(not math.isnan(_number(o.get(fields.value))) for o in objects):
        notes.append(
            f"no output object has a number in {fields.value!r} (fields: {keys}), so deltas "
            f"and drift are empty; pass --output-field NAME"
        )
    return notes


def _load(text: str | None) -> object:
    if not isinstance(text, str):
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _hashable(value: object) -> Hashable | None:
    if isinstance(value, (dict, list)):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return value  # type: ignore[return-value]


def _number(value: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return math.nan


# ---- scores ------------------------------------------------------------------------------


def require_columns(frame: pd.DataFrame, needed: Sequence[str], what: str) -> None:
    """Fail with the missing column names when ``frame`` lacks some of ``needed``."""
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ArchiveError(
            f"{what} lacks the column(s) {', '.join(missing)}; select them from the archive "
            f"(it has {', '.join(map(str, frame.columns)) or 'no columns'})"
        )


def first_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (request, model): the first by ``scored_ms`` when the column is there."""
    keys = [c for c in ("service", "request_id", "model") if c in scores.columns]
    if "scored_ms" in scores.columns:
        scores = scores.sort_values("scored_ms", kind="stable")
    return scores.drop_duplicates(keys, keep="first").sort_index()


def read_scores(scores: pd.DataFrame, fields: OutputFields) -> pd.DataFrame:
    """First scores with the ``label`` and ``value`` of their outputs (none for errors)."""
    require_columns(scores, SCORE_COLUMNS, "the scores")
    first = first_scores(scores).reset_index(drop=True)
    ok_outputs = first["output"].where(first["status"] == "ok", None)
    return first.join(read_outputs(ok_outputs, fields))


def champion_scores(read: pd.DataFrame, references: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per request, the reference's model, label and value: the score of the model named in
    ``references`` (request_id, reference; see :mod:`rendezvous.archive.reference`), or
    without them the score with the role ``champion``."""
    if references is None:
        champ = read[read["role"] == CHAMPION]
    else:
        named = read.merge(references[["request_id", "reference"]], on="request_id")
        champ = named[named["model"] == named["reference"]]
    champ = champ.drop_duplicates("request_id")
    return champ[["request_id", "model", "label", "value"]].rename(
        columns={"model": "champion", "label": "champion_label", "value": "champion_value"}
    )


def _pairs(read: pd.DataFrame, references: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each other model's ok score next to the reference's score of the same request."""
    ok = read[read["status"] == "ok"]
    pairs = ok.merge(champion_scores(read, references), on="request_id", how="inner")
    pairs = pairs[pairs["model"] != pairs["champion"]]
    return pairs.assign(delta=pairs["value"] - pairs["champion_value"])


def _quantiles(values: pd.Series, percents: Sequence[float]) -> list[float]:
    clean = values.dropna().to_numpy(dtype=float)
    if clean.size == 0:
        return [math.nan] * len(percents)
    return [float(q) for q in np.percentile(clean, percents)]


def _agreement(pairs: pd.DataFrame) -> tuple[int, float]:
    both = pairs[pairs["label"].notna() & pairs["champion_label"].notna()]
    if both.empty:
        return 0, math.nan
    same = [a == b for a, b in zip(both["label"], both["champion_label"], strict=True)]
    return len(both), float(np.mean(same))


DELTA_COLUMNS = ["deltas", "delta_mean", "delta_p05", "delta_p50", "delta_p95"]


def _delta_stats(deltas: pd.Series) -> dict[str, float]:
    """Count, mean and p05/p50/p95 of the deltas: the values of :data:`DELTA_COLUMNS`."""
    clean = deltas.dropna()
    p05, p50, p95 = _quantiles(clean, (5, 50, 95))
    mean = float(clean.mean()) if len(clean) else math.nan
    return {
        "deltas": len(clean),
        "delta_mean": mean,
        "delta_p05": p05,
        "delta_p50": p50,
        "delta_p95": p95,
    }


# ---- the model table ---------------------------------------------------------------------


def model_table(
    read: pd.DataFrame,
    decisions: pd.DataFrame,
    truth: pd.Series | None = None,
    *,
    thresholded: bool = False,
    references: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per model of one service: reliability, agreement, the true outcome, deltas, wins.

    ``read`` comes from :func:`read_scores`; ``decisions`` are the service's decisions;
    ``truth`` the true label by request ID (:func:`rendezvous.archive.outcomes.true_labels`),
    ``thresholded`` whether labels come from ``--threshold``, and ``references`` each
    request's reference (the role ``champion`` without them).
    """
    truth = pd.Series(dtype=object) if truth is None else truth
    require_columns(decisions, DECISION_COLUMNS, "the decisions")
    decisions = decisions.drop_duplicates("request_id")
    pairs = _pairs(read, references)
    roles = _roles(read, decisions)
    champions = set(champion_scores(read, references)["champion"])
    rows = []
    for model in sorted(roles, key=lambda m: (ROLE_ORDER.get(roles[m], 9), m)):
        mine = read[read["model"] == model]
        ok = mine[mine["status"] == "ok"]
        compared, agreement = _agreement(pairs[pairs["model"] == model])
        p50, p95, p99 = _quantiles(ok["latency_ms"], (50, 95, 99))
        answered = int((decisions["model"] == model).sum())
        # Only a reference of every request it scored has nothing to be compared with.
        is_champion = model in champions and not compared
        rows.append(
            {
                "model": model,
                "role": roles[model],
                "scores": len(mine),
                "error_rate": _share(mine["status"] != "ok"),
                "late_rate": _share(mine["late"].astype(bool)),
                "latency_p50": p50,
                "latency_p95": p95,
                "latency_p99": p99,
                "compared": math.nan if is_champion else compared,
                "agreement": math.nan if is_champion else agreement,
                **outcome_stats(ok, truth, thresholded=thresholded),
                **_delta_stats(pairs.loc[pairs["model"] == model, "delta"]),
                "answered": answered,
                "win_rate": answered / len(decisions) if len(decisions) else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=MODEL_COLUMNS)


MODEL_COLUMNS = [
    "model",
    "role",
    "scores",
    "error_rate",
    "late_rate",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "compared",
    "agreement",
    *OUTCOME_COLUMNS,
    *DELTA_COLUMNS,
    "answered",
    "win_rate",
]


def _roles(read: pd.DataFrame, decisions: pd.DataFrame) -> dict[str, str]:
    """Each model's most frequent role in the scores, else in the decisions."""
    roles: dict[str, str] = {}
    for frame in (decisions, read):
        known = frame.dropna(subset=["model"])
        if "role" not in known.columns:
            continue
        for model, group in known.groupby("model"):
            named = group["role"].dropna()
            roles[str(model)] = str(named.mode().iloc[0]) if len(named) else ""
    return roles


def _share(flags: pd.Series) -> float:
    return float(flags.mean()) if len(flags) else math.nan


def reason_counts(decisions: pd.DataFrame) -> pd.DataFrame:
    """How often each (answering model, reason) occurs; model is None for error answers."""
    require_columns(decisions, DECISION_COLUMNS, "the decisions")
    decisions = decisions.drop_duplicates("request_id")
    counts = (
        decisions.assign(model=decisions["model"].astype(object))
        .groupby(["model", "reason"], dropna=False)
        .size()
        .reset_index(name="count")
    )
    counts["model"] = counts["model"].astype(object).where(counts["model"].notna(), None)
    return counts.sort_values(["count", "reason"], ascending=[False, True], ignore_index=True)


# ---- drift -------------------------------------------------------------------------------


def bin_edges(reference: Sequence[float] | np.ndarray, bins: int = DRIFT_BINS) -> np.ndarray:
    """Interior bin edges: the quantiles at 1/bins ... (bins-1)/bins of ``reference``, merged."""
    values = np.asarray(reference, dtype=float)
    if values.size == 0:
        raise ArchiveError("bin_edges needs at least one reference value")
    if bins < 2:
        raise ArchiveError(f"PSI needs at least 2 bins, got {bins}")
    return np.unique(np.quantile(values, np.arange(1, bins) / bins))


def bin_shares(values: Sequence[float] | np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The share of ``values`` in each bin: v < e0, e0 <= v < e1, ..., v >= e_last."""
    values = np.asarray(values, dtype=float)
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return counts / values.size


def psi(
    reference: Sequence[float] | np.ndarray,
    current: Sequence[float] | np.ndarray,
    edges: np.ndarray,
    *,
    floor: float = PSI_FLOOR,
) -> float:
    """Population stability index of ``current`` against ``reference`` over ``edges``."""
    if len(reference) == 0 or len(current) == 0:
        return math.nan
    expected = np.maximum(bin_shares(reference, edges), floor)
    actual = np.maximum(bin_shares(current, edges), floor)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


@dataclass(frozen=True)
class Drift:
    """One canary against the champion: PSI per hour and over the window."""

    canary: str
    edges: np.ndarray
    hourly: pd.DataFrame  # hour (UTC), champion_n, canary_n, psi
    window_psi: float
    champion_n: int
    canary_n: int


def canary_drift(
    read: pd.DataFrame, bins: int = DRIFT_BINS, references: pd.DataFrame | None = None
) -> list[Drift]:
    """PSI of each canary's values against the reference's, per hour and over the window; a
    canary's values on the requests it was the reference of are left out."""
    require_columns(read, ("received_ms", "value"), "the scores")
    valued = read[(read["status"] == "ok") & read["value"].notna()]
    valued = valued.assign(
        hour=pd.to_datetime(valued["received_ms"] // HOUR_MS * HOUR_MS, unit="ms", utc=True)
    )
    if references is None:
        is_reference = valued["role"] == CHAMPION
    else:
        ref = valued["request_id"].map(references.set_index("request_id")["reference"])
        is_reference = valued["model"] == ref
    champion = valued[is_reference]
    others = valued[~is_reference]
    canaries = sorted(others.loc[others["role"] == CANARY, "model"].unique())
    if champion.empty:
        return []
    edges = bin_edges(champion["value"], bins)
    drifts = []
    for canary in canaries:
        mine = others[others["model"] == canary]
        hours = sorted(set(champion["hour"]) | set(mine["hour"]))
        rows = []
        for hour in hours:
            ref = champion.loc[champion["hour"] == hour, "value"].to_numpy()
            cur = mine.loc[mine["hour"] == hour, "value"].to_numpy()
            rows.append(
                {
                    "hour": hour,
                    "champion_n": len(ref),
                    "canary_n": len(cur),
                    "psi": psi(ref, cur, edges),
                }
            )
        drifts.append(
            Drift(
                canary=canary,
                edges=edges,
                hourly=pd.DataFrame(rows, columns=["hour", "champion_n", "canary_n", "psi"]),
                window_psi=psi(champion["value"].to_numpy(), mine["value"].to_numpy(), edges),
                champion_n=len(champion),
                canary_n=len(mine),
            )
        )
    return drifts


# ---- one service -------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceReport:
    """Everything the report shows for one service."""

    service: str
    champion: str | None
    requests: int
    decisions: int
    models: pd.DataFrame  # MODEL_COLUMNS, one row per model
    reasons: pd.DataFrame  # model, reason, count
    deltas: pd.DataFrame  # model, delta: each model's per-request deltas to the champion
    values: pd.DataFrame  # model, role, value: the ok values of the champion and canaries
    drift: list[Drift] = field(default_factory=list)
    notes: tuple[str, ...] = ()
    labelled: int = 0  # requests (of the window's) with a true label
    # (policy version, its first choice, requests) that the comparison used; version None for
    # requests compared with the role ``champion`` for want of a policy record, or with a
    # reference given by the caller
    first_choices: tuple[tuple[int | None, str, int], ...] = ()
    # the A/B arms and the sampled models (see rendezvous.archive.arms); empty without them
    arms: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ARM_COLUMNS))
    samples: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SAMPLE_COLUMNS))
    # drift against the past (see rendezvous.archive.drift): each canary against its own
    # reference window, and each numeric input feature; ``drift_reference`` says which window
    self_drift: tuple[Any, ...] = ()
    feature_drift: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["feature", "reference_n", "current_n", "psi"])
    )
    drift_reference: str = ""


def service_report(
    service: str,
    scores: pd.DataFrame,
    decisions: pd.DataFrame,
    fields: OutputFields = OutputFields(),
    *,
    bins: int = DRIFT_BINS,
    labels: pd.DataFrame | None = None,
    requests: pd.DataFrame | None = None,
    reference: str | None = None,
) -> ServiceReport:
    """The comparison of every model of ``service`` against the first choice of each
    request's policy and, with ``labels`` (rows of the ``labels`` view: request_id, label,
    labelled_ms), the true outcome.

    ``requests`` (request_id, policy_version, preference: rows of the ``requests`` table) and
    the decisions' ``policy_version`` say each request's first choice (see
    :mod:`rendezvous.archive.reference`); ``reference`` names one model to compare every
    request with instead.
    """
    read = read_scores(scores, fields)
    truth = true_labels(labels)
    request_ids = sorted(set(read["request_id"]) | set(decisions["request_id"]))
    if reference is not None:
        references = pd.DataFrame(
            {
                "request_id": request_ids,
                "reference": reference,
                "policy_version": pd.array([None] * len(request_ids), dtype="Int64"),
                "source": "given",
            }
        )
    else:
        references = first_choices(read, decisions, requests)
    champions = champion_scores(read, references)["champion"]
    notes = output_notes(read.loc[read["status"] == "ok", "output"], fields)
    if champions.empty:
        notes.append(
            "no score of a first choice (the first model of the policy in force, or the role "
            "'champion'), so there is nothing to compare against"
        )
    fell_back = int((references["source"] == FROM_ROLE).sum())
    if fell_back and reference is None:
        notes.append(
            f"{fell_back} request(s) without a policy record (no requests row, no decision "
            f"of a known version): compared with the role 'champion'"
        )
    pairs = _pairs(read, references)
    is_reference = read["model"] == read["request_id"].map(
        references.set_index("request_id")["reference"]
    )
    shown = read[(is_reference | (read["role"] == CANARY)) & read["value"].notna()]
    requests = set(read["request_id"]) | set(decisions["request_id"])
    labelled = len(requests & set(truth.index))
    if len(truth) and not labelled:
        notes.append(
            f"{len(truth)} true label(s) of this service, none for a request in the window; "
            f"widen --since/--until"
        )
    return ServiceReport(
        service=service,
        champion=str(champions.mode().iloc[0]) if not champions.empty else None,
        requests=len(requests),
        decisions=int(decisions["request_id"].nunique()),
        models=model_table(
            read,
            decisions,
            truth,
            thresholded=fields.threshold is not None,
            references=references,
        ),
        reasons=reason_counts(decisions),
        deltas=pairs.loc[pairs["delta"].notna(), ["model", "delta"]].reset_index(drop=True),
        values=shown[["model", "role", "value"]].reset_index(drop=True),
        drift=canary_drift(read, bins, references),
        notes=tuple(notes),
        labelled=labelled,
        first_choices=tuple(by_policy(references)) if reference is None else (),
        arms=arm_table(decisions, truth, read_outputs=lambda o: read_outputs(o, fields)),
        samples=sample_table(decisions),
    )


def build_reports(
    scores: pd.DataFrame,
    decisions: pd.DataFrame,
    fields: OutputFields = OutputFields(),
    *,
    bins: int = DRIFT_BINS,
    labels: pd.DataFrame | None = None,
    requests: pd.DataFrame | None = None,
) -> list[ServiceReport]:
    """One :class:`ServiceReport` per service found in ``scores`` or ``decisions``; ``labels``
    (rows of the ``labels`` view, with ``service``) give each its true outcomes, ``requests``
    (with ``service``, ``policy_version`` and ``preference``) each request's first choice."""
    require_columns(scores, ("service",), "the scores")
    require_columns(decisions, ("service",), "the decisions")
    if labels is not None:
        require_columns(labels, ("service", "request_id", "label"), "the labels")
    services = sorted(set(scores["service"]) | set(decisions["service"]))
    return [
        service_report(
            s,
            scores[scores["service"] == s],
            decisions[decisions["service"] == s],
            fields,
            bins=bins,
            labels=None if labels is None else labels[labels["service"] == s],
            requests=None if requests is None else requests[requests["service"] == s],
        )
        for s in services
    ]


# ---- replay ------------------------------------------------------------------------------

REPLAY_COLUMNS = [
    "model",
    "live",
    "replayed",
    "matched",
    "missing_in_replay",
    "missing_in_live",
    "status_changed",
    "compared",
    "agreement",
    *DELTA_COLUMNS,
]


def compare_replay(
    live: pd.DataFrame, replay: pd.DataFrame, fields: OutputFields = OutputFields()
) -> pd.DataFrame:
    """Per model, a replay's scores against the live scores of the same requests.

    Both frames need ``request_id``, ``model``, ``status`` and ``output`` (rows of ``scores``
    and ``replay``). ``missing_in_replay`` counts requests a model scored live but not in the
    replay, ``missing_in_live`` the reverse; ``status_changed`` counts matched requests whose
    status differs (ok vs error); agreement and deltas (``replay - live``) cover the matched
    requests that are ok on both sides.
    """
    needed = ("request_id", "model", "status", "output")
    require_columns(live, needed, "the live scores")
    require_columns(replay, needed, "the replay scores")
    sides = {}
    for name, frame in (("live", live), ("replay", replay)):
        first = first_scores(frame).reset_index(drop=True)
        ok = first["output"].where(first["status"] == "ok", None)
        read = first[["request_id", "model", "status"]].join(read_outputs(ok, fields))
        sides[name] = read
    merged = sides["live"].merge(
        sides["replay"],
        on=["request_id", "model"],
        how="outer",
        suffixes=("_live", "_replay"),
        indicator=True,
    )
    rows = []
    for model in sorted(merged["model"].unique()):
        mine = merged[merged["model"] == model]
        both = mine[mine["_merge"] == "both"]
        ok = both[(both["status_live"] == "ok") & (both["status_replay"] == "ok")]
        compared, agreement = _agreement(
            ok.rename(columns={"label_replay": "label", "label_live": "champion_label"})
        )
        rows.append(
            {
                "model": model,
                "live": int((mine["_merge"] != "right_only").sum()),
                "replayed": int((mine["_merge"] != "left_only").sum()),
                "matched": len(both),
                "missing_in_replay": int((mine["_merge"] == "left_only").sum()),
                "missing_in_live": int((mine["_merge"] == "right_only").sum()),
                "status_changed": int((both["status_live"] != both["status_replay"]).sum()),
                "compared": compared,
                "agreement": agreement,
                **_delta_stats(ok["value_replay"] - ok["value_live"]),
            }
        )
    return pd.DataFrame(rows, columns=REPLAY_COLUMNS)
