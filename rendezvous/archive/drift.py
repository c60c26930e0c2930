"""Drift against a model's own past: the canary as the stable baseline, and the inputs.

Pure: pandas in, pandas out. The canary's numeric outputs in the report's window are compared
with its outputs in a reference window (``--drift-reference``), on the reference's quantile
bins, so a moving canary says the traffic moved, apart from any disagreement with the first
choice (which the report measures as agreement). Each numeric input feature gets the same PSI,
its values in the window against the reference window's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rendezvous.archive.metrics import DRIFT_BINS, HOUR_MS, bin_edges, psi

CANARY = "canary"
FEATURE_COLUMNS = ["feature", "reference_n", "current_n", "psi"]


@dataclass(frozen=True)
class SelfDrift:
    """One canary against its own reference window: PSI per hour and over the window."""

    canary: str
    edges: np.ndarray
    hourly: pd.DataFrame  # hour (UTC), reference_n, canary_n, psi
    window_psi: float
    reference_n: int
    canary_n: int


def _values(read: pd.DataFrame, model: str) -> pd.DataFrame:
    ok = read[(read["model"] == model) & (read["status"] == "ok") & read["value"].notna()]
    return ok.assign(
        hour=pd.to_datetime(ok["received_ms"] // HOUR_MS * HOUR_MS, unit="ms", utc=True)
    )


def canary_self_drift(
    current: pd.DataFrame, reference: pd.DataFrame, bins: int = DRIFT_BINS
) -> list[SelfDrift]:
    """Per canary (role ``canary`` in ``current``), its values in ``current`` against its own
    values in ``reference`` (both from :func:`rendezvous.archive.metrics.read_scores`); a
    canary with no reference values is left out."""
    canaries = sorted(current.loc[current["role"] == CANARY, "model"].unique())
    out = []
    for canary in canaries:
        ref = _values(reference, canary)["value"].to_numpy(dtype=float) if len(reference) else []
        if len(ref) == 0:
            continue
        mine = _values(current, canary)
        edges = bin_edges(ref, bins)
        rows = [
            {
                "hour": hour,
                "reference_n": len(ref),
                "canary_n": len(group),
                "psi": psi(ref, group["value"].to_numpy(dtype=float), edges),
            }
            for hour, group in mine.groupby("hour", sort=True)
        ]
        out.append(
            SelfDrift(
                canary=canary,
                edges=edges,
                hourly=pd.DataFrame(rows, columns=["hour", "reference_n", "canary_n", "psi"]),
                window_psi=psi(ref, mine["value"].to_numpy(dtype=float), edges),
                reference_n=len(ref),
                canary_n=len(mine),
            )
        )
    return out


def numeric_features(features: Iterable[object]) -> pd.DataFrame:
    """One column per numeric input feature (booleans and strings left out), one row per
    request, from the ``features`` JSON strings of the ``requests`` table."""
    rows = []
    for text in features:
        try:
            record = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            record = None
        row = {}
        if isinstance(record, dict):
            for name, value in record.items():
                if isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                if math.isfinite(value):
                    row[name] = float(value)
        rows.append(row)
    return pd.DataFrame(rows)


def feature_drift(
    current: Iterable[object], reference: Iterable[object], bins: int = DRIFT_BINS
) -> pd.DataFrame:
    """Per numeric feature present in both windows: PSI of its values in ``current`` against
    ``reference`` (``features`` JSON strings of each window's requests), largest first."""
    now, then = numeric_features(current), numeric_features(reference)
    rows = []
    for name in sorted(set(now.columns) & set(then.columns)):
        ref = then[name].dropna().to_numpy()
        cur = now[name].dropna().to_numpy()
        if len(ref) == 0 or len(cur) == 0:
            continue
        rows.append(
            {
                "feature": name,
                "reference_n": len(ref),
                "current_n": len(cur),
                "psi": psi(ref, cur, bin_edges(ref, bins)),
            }
        )
    table = pd.DataFrame(rows, columns=FEATURE_COLUMNS)
    return table.sort_values(["psi", "feature"], ascending=[False, True], ignore_index=True)
