"""The A/B arms and the sampled shadows of a service, from its archived decisions: pure.

Per arm (the ``arm`` column of ``decisions``: the model the request's key picked; requests
without an arm are the row ``(none)``): how many requests, the share answered by the arm's own
model (the rest fell back: the arm's model was late or failed), the answer's latency
(``latency_ms``: decided - received) p50/p95, the error share, and, with true labels, the
accuracy of the answers served.

Per sampled model (named in ``unsampled`` of some decision): the requests it did not sample
and the share it did. A request a model did not sample has no score of that model at all, so
it counts in neither the model's late rate nor its error rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from rendezvous.archive.outcomes import outcome_stats

NO_ARM = "(none)"
ARM_COLUMNS = [
    "arm",
    "requests",
    "share",
    "answered_by_arm",
    "error_rate",
    "latency_p50",
    "latency_p95",
    "labelled",
    "accuracy",
]
SAMPLE_COLUMNS = ["model", "not_sampled", "sampled_share"]


def _quantiles(values: pd.Series, percents: Sequence[float]) -> list[float]:
    clean = values.dropna().to_numpy(dtype=float)
    if clean.size == 0:
        return [math.nan] * len(percents)
    return [float(q) for q in np.percentile(clean, percents)]


def arm_table(
    decisions: pd.DataFrame, truth: pd.Series | None = None, *, read_outputs=None
) -> pd.DataFrame:
    """One row per arm (ARM_COLUMNS); empty when no decision has an arm.

    ``decisions`` need ``request_id``, ``arm``, ``model``, ``status``, ``latency_ms`` and, for
    accuracy, ``output``; ``truth`` is the true label by request ID; ``read_outputs`` reads a
    Series of outputs into ``label``/``value`` columns (see :mod:`rendezvous.archive.metrics`).
    """
    if "arm" not in decisions.columns or decisions["arm"].isna().all():
        return pd.DataFrame(columns=ARM_COLUMNS)
    decisions = decisions.drop_duplicates("request_id")
    truth = pd.Series(dtype=object) if truth is None else truth
    arms = decisions["arm"].astype(object).where(decisions["arm"].notna(), NO_ARM)
    total = len(decisions)
    rows = []
    for arm in sorted(set(arms), key=lambda a: (a == NO_ARM, a)):
        mine = decisions[arms == arm]
        ok = mine[mine["status"] == "ok"]
        p50, p95 = _quantiles(ok["latency_ms"], (50, 95))
        stats = {"labelled": 0, "accuracy": math.nan}
        if read_outputs is not None and "output" in ok.columns and not truth.empty:
            read = ok[["request_id", "output"]].reset_index(drop=True)
            read = read.join(read_outputs(read["output"]))
            full = outcome_stats(read, truth, thresholded=False)
            stats = {"labelled": full["labelled"], "accuracy": full["accuracy"]}
        rows.append(
            {
                "arm": arm,
                "requests": len(mine),
                "share": len(mine) / total if total else math.nan,
                "answered_by_arm": float((mine["model"] == arm).mean())
                if arm != NO_ARM
                else math.nan,
                "error_rate": float((mine["status"] != "ok").mean()),
                "latency_p50": p50,
                "latency_p95": p95,
                **stats,
            }
        )
    return pd.DataFrame(rows, columns=ARM_COLUMNS)


def sample_table(decisions: pd.DataFrame) -> pd.DataFrame:
    """Per model some decision names as not sampled: how many requests it did not score by
    sampling, and the share of the decisions it did sample."""
    if "unsampled" not in decisions.columns:
        return pd.DataFrame(columns=SAMPLE_COLUMNS)
    decisions = decisions.drop_duplicates("request_id")
    counts: dict[str, int] = {}
    for names in decisions["unsampled"]:
        if names is None or (isinstance(names, float) and math.isnan(names)):
            continue
        for name in names:
            counts[str(name)] = counts.get(str(name), 0) + 1
    total = len(decisions)
    rows = [
        {"model": m, "not_sampled": n, "sampled_share": 1 - n / total if total else math.nan}
        for m, n in sorted(counts.items())
    ]
    return pd.DataFrame(rows, columns=SAMPLE_COLUMNS)
