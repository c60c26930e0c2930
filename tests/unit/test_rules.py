"""The business rules in udfs.rules: labels and confidences either side of their limits."""

from __future__ import annotations

import pytest

from udfs.rules import BENIGN, MALIGNANT, tumour_size_rule

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("radius", "concave", "label", "probability"),
    [
        (25.4, 0.08, MALIGNANT, 0.9),  # radius clear of its limit (16.8 x 1.1 = 18.48)
        (12.1, 0.21, MALIGNANT, 0.9),  # concave points clear of theirs (0.15 x 1.1 = 0.165)
        (17.2, 0.09, MALIGNANT, 0.6),  # just over the radius limit
        (13.0, 0.155, MALIGNANT, 0.6),  # just over the concave points limit
        (11.9, 0.06, BENIGN, 0.9),  # both clear below (15.12 and 0.135)
        (16.0, 0.06, BENIGN, 0.6),  # radius near its limit
        (11.9, 0.14, BENIGN, 0.6),  # concave points near theirs
        (16.8, 0.15, BENIGN, 0.6),  # at both limits: not over them
    ],
)
def test_the_rule_calls_large_or_irregular_tumours_malignant(radius, concave, label, probability):
    features = {"worst_radius": radius, "worst_concave_points": concave, "mean_area": 550.0}
    assert tumour_size_rule(features) == {"label": label, "probability": probability}


def test_the_limits_and_margin_are_parameters():
    features = {"worst_radius": 14.0, "worst_concave_points": 0.1}
    assert tumour_size_rule(features)["label"] == BENIGN
    strict = tumour_size_rule(features, radius_limit=12.0, margin=0.05)
    assert strict == {"label": MALIGNANT, "probability": 0.9}  # 14 > 12 x 1.05


def test_numbers_sent_as_text_are_read_as_numbers():
    features = {"worst_radius": "19.5", "worst_concave_points": "0.1"}
    assert tumour_size_rule(features) == {"label": MALIGNANT, "probability": 0.9}


def test_a_missing_feature_is_an_error_naming_it():
    with pytest.raises(KeyError, match="worst_concave_points"):
        tumour_size_rule({"worst_radius": 12.0})
