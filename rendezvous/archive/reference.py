"""What each archived request is compared against: the first choice of the policy it was
decided under.

Pure: pandas in, pandas out. After ``rendezvous promote`` the model that answers first is no
longer the one with the configuration's role ``champion``, so agreement, deltas and drift are
measured against the first model of the preference order in force for each request, taken
from the records themselves (a window that spans a promotion judges each request by the policy
then in force):

1. the request's own row in ``requests`` (the decoy archives the policy version and the
   preference order the enrich job stamped on it);
2. else the request's decision (``decisions.policy_version``) and the first choice of that
   version as other records show it: a ``requests`` row of the same version, or a decision of
   that version answered for the reason ``preferred`` (only the first choice answers so);
3. else the score with the role ``champion``, the configuration's reference (an archive with
   no policy records, such as one written before the decoy archived preferences).
"""

from __future__ import annotations

import pandas as pd

CHAMPION = "champion"

# Where a request's reference came from (the ``source`` column).
FROM_REQUEST = "request"
FROM_VERSION = "policy version"
FROM_ROLE = "role champion"

REFERENCE_COLUMNS = ["request_id", "reference", "policy_version", "source"]


def first_of(preference: object) -> str | None:
    """The first model of a comma-separated preference order; None when there is none."""
    if not isinstance(preference, str):
        return None
    first = preference.split(",", 1)[0].strip()
    return first or None


def version_first_choices(
    decisions: pd.DataFrame, requests: pd.DataFrame | None = None
) -> dict[int, str]:
    """Policy version -> its first choice, from ``requests`` rows and ``preferred`` decisions.

    The most frequent one wins should records disagree (they do not unless a service was
    defined again under the same name and versions).
    """
    seen: list[tuple[int, str]] = []
    if requests is not None and not requests.empty:
        for version, preference in zip(
            requests["policy_version"], requests["preference"], strict=True
        ):
            first = first_of(preference)
            if first is not None and _known(version):
                seen.append((int(version), first))
    if "policy_version" in decisions.columns:
        preferred = decisions[(decisions["reason"] == "preferred") & decisions["model"].notna()]
        for version, model in zip(preferred["policy_version"], preferred["model"], strict=True):
            if _known(version):
                seen.append((int(version), str(model)))
    if not seen:
        return {}
    frame = pd.DataFrame(seen, columns=["version", "model"])
    return {
        int(version): str(group["model"].mode().sort_values().iloc[0])
        for version, group in frame.groupby("version")
    }


def _known(version: object) -> bool:
    """A policy version a request was decided under (not missing, not an orphan's -1)."""
    return version is not None and version == version and int(version) >= 0  # type: ignore[operator]


def first_choices(
    scores: pd.DataFrame,
    decisions: pd.DataFrame,
    requests: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per request of ``scores`` or ``decisions`` with a known reference:
    :data:`REFERENCE_COLUMNS` (see the module docstring for the order of the sources)."""
    rows: dict[str, tuple[str, int | None, str]] = {}
    if requests is not None and not requests.empty:
        for rid, version, preference in zip(
            requests["request_id"], requests["policy_version"], requests["preference"], strict=True
        ):
            first = first_of(preference)
            if first is not None and rid not in rows:
                rows[str(rid)] = (first, int(version) if _known(version) else None, FROM_REQUEST)
    by_version = version_first_choices(decisions, requests)
    if "policy_version" in decisions.columns:
        for rid, version in zip(decisions["request_id"], decisions["policy_version"], strict=True):
            if str(rid) in rows or not _known(version) or int(version) not in by_version:
                continue
            rows[str(rid)] = (by_version[int(version)], int(version), FROM_VERSION)
    if "role" in scores.columns:
        champions = scores[scores["role"] == CHAMPION]
        for rid, model in zip(champions["request_id"], champions["model"], strict=True):
            if str(rid) not in rows:
                rows[str(rid)] = (str(model), None, FROM_ROLE)
    frame = pd.DataFrame(
        [(rid, *row) for rid, row in rows.items()], columns=REFERENCE_COLUMNS
    ).astype({"policy_version": "Int64"})
    return frame


def by_policy(references: pd.DataFrame) -> list[tuple[int | None, str, int]]:
    """(policy version, first choice, requests) of the references, by version; the
    configuration's role (no version) last."""
    counted = (
        references.groupby(["policy_version", "reference"], dropna=False)
        .size()
        .reset_index(name="n")
    )
    out = [
        (None if pd.isna(v) else int(v), str(m), int(n))
        for v, m, n in zip(
            counted["policy_version"], counted["reference"], counted["n"], strict=True
        )
    ]
    return sorted(out, key=lambda t: (t[0] is None, t[0] if t[0] is not None else 0, t[1]))
