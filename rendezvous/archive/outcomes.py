"""Models against the true outcome: accuracy, and for binary classifiers AUC and log-loss.

Pure: pandas in, numbers out. The true labels are the archive's ``labels`` view (the first label
of each request, see :mod:`rendezvous.archive.sql`), joined to a model's first ok scores by
request ID; a label is JSON (``1``, ``"fraud"``, ``true``) and is compared with the label the
report reads from each output (see :mod:`rendezvous.archive.metrics`).

- ``labelled``: the requests the model scored ok, with a label read from its output, that have
  a true label. Error scores and outputs without a label are not counted (the error rate and
  the notes say so).
- ``accuracy``: the share of those whose label equals the true one (JSON equality, so ``1`` is
  ``1.0`` and ``true``, but not ``"1"``).
- ``auc`` and ``log_loss`` (scikit-learn's ``roc_auc_score`` and ``log_loss``), for a binary
  classifier only: the model's outputs are objects with a probability in [0, 1] beside the
  label (a plain number is a label, or with ``--threshold`` a probability), and the
  true and predicted labels together hold exactly two classes. The *positive* class is the
  greater of the two (``1`` of 0/1, ``true``, the later string in sort order). The project's
  classifiers answer the probability of the class they predict, so the probability of the
  positive class is ``p`` when they predict it and ``1 - p`` otherwise. With ``--threshold T``
  the value is read as the probability of ``true`` itself, and the labels are ``value >= T``.
  AUC needs both classes among the true labels. Otherwise both are NaN: a multi-class model
  tells only its predicted class's probability, which defines neither.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

import numpy as np
import orjson
import pandas as pd

OUTCOME_COLUMNS = ["labelled", "accuracy", "auc", "log_loss"]
LABEL_COLUMNS = ("request_id", "label")


def true_labels(labels: pd.DataFrame | None) -> pd.Series:
    """Request ID -> true label (parsed JSON), the first one per request by ``labelled_ms``."""
    if labels is None or labels.empty:
        return pd.Series(dtype=object)
    if "labelled_ms" in labels.columns:
        labels = labels.sort_values(["labelled_ms", "label"], kind="stable")
    first = labels.drop_duplicates("request_id", keep="first")
    values = [_parse(text) for text in first["label"]]
    return pd.Series(values, index=first["request_id"].to_numpy(), dtype=object).dropna()


def _parse(text: Any) -> Hashable | None:
    if not isinstance(text, str):
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return None if isinstance(value, (dict, list)) else value


def outcome_stats(rows: pd.DataFrame, truth: pd.Series, *, thresholded: bool) -> dict[str, Any]:
    """The :data:`OUTCOME_COLUMNS` of one model: ``rows`` are its first ok scores, with the
    ``request_id``, ``label`` and ``value`` read from each output."""
    nothing = {"labelled": 0, "accuracy": math.nan, "auc": math.nan, "log_loss": math.nan}
    if truth.empty or rows.empty:
        return nothing
    rows = rows[rows["label"].notna() & rows["request_id"].isin(truth.index)]
    if rows.empty:
        return nothing
    predicted = list(rows["label"])
    actual = list(truth.loc[rows["request_id"]])
    right = [p == a for p, a in zip(predicted, actual, strict=True)]
    # A plain-number output is its own label and value: a probability only with a threshold.
    objects = "output" not in rows.columns or all(map(_is_object, rows["output"]))
    if thresholded or objects:
        auc, loss = _probabilistic(predicted, actual, rows["value"].to_numpy(float), thresholded)
    else:
        auc, loss = math.nan, math.nan
    return {
        "labelled": len(rows),
        "accuracy": float(np.mean(right)),
        "auc": auc,
        "log_loss": loss,
    }


def _is_object(text: Any) -> bool:
    return isinstance(text, str) and text.lstrip().startswith("{")


def _probabilistic(
    predicted: list[Any], actual: list[Any], values: np.ndarray, thresholded: bool
) -> tuple[float, float]:
    if not len(values) or not np.all(np.isfinite(values)):
        return math.nan, math.nan
    if values.min() < 0 or values.max() > 1:
        return math.nan, math.nan  # not probabilities
    if thresholded:
        positive: Any = True
        p_positive = values
    else:
        classes = _classes([*predicted, *actual])
        if classes is None:
            return math.nan, math.nan
        positive = classes[1]
        is_positive = np.array([p == positive for p in predicted])
        p_positive = np.where(is_positive, values, 1 - values)
    y = np.array([a == positive for a in actual])

    from sklearn.metrics import log_loss, roc_auc_score

    auc = float(roc_auc_score(y, p_positive)) if 0 < y.sum() < len(y) else math.nan
    loss = float(log_loss(y, np.clip(p_positive, 1e-15, 1 - 1e-15), labels=[False, True]))
    return auc, loss


def _classes(labels: list[Any]) -> tuple[Any, Any] | None:
    """The two classes of a binary problem, lower first; None for more or fewer."""
    distinct: list[Any] = []
    for label in labels:
        if not any(label == d for d in distinct):
            distinct.append(label)
    if len(distinct) != 2:
        return None
    try:
        low, high = sorted(distinct)
    except TypeError:  # mixed types that do not compare: no order, no positive class
        return None
    return low, high
