"""Business rules: models without ML, usable as ``callable: "udfs.rules:<name>"``.

A rule answers in the same shape as the classifiers it stands beside, so the rendezvous can
fall back to it: ``{"label": <class>, "probability": <confidence in that class>}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MALIGNANT, BENIGN = 0, 1  # the classes of sklearn's breast cancer data set


def tumour_size_rule(
    features: Mapping[str, Any],
    radius_limit: float = 16.8,
    concave_points_limit: float = 0.15,
    margin: float = 0.1,
) -> dict[str, Any]:
    """The demo's backstop: a large or very irregular tumour is called malignant.

    ``worst_radius`` above ``radius_limit`` or ``worst_concave_points`` above
    ``concave_points_limit`` means malignant (class 0), otherwise benign (class 1): about 92%
    accurate on the held-out data, close to the trained models (92-95%), in microseconds and
    with no model to load. The confidence is 0.9 when the deciding values are clear of their
    limits by more than ``margin`` (relative), 0.6 near a limit.
    """
    radius = float(features["worst_radius"])
    concave = float(features["worst_concave_points"])
    up, down = 1 + margin, 1 - margin
    if radius > radius_limit or concave > concave_points_limit:
        label = MALIGNANT
        clear = radius > radius_limit * up or concave > concave_points_limit * up
    else:
        label = BENIGN
        clear = radius < radius_limit * down and concave < concave_points_limit * down
    return {"label": label, "probability": 0.9 if clear else 0.6}
