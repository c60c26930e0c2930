"""Scoring one record: model output, model errors, records of other services."""

from __future__ import annotations

import itertools

import pytest

from rendezvous import serde
from rendezvous.config import ModelSpec
from rendezvous.models import ModelLoadError, load_scorer
from rendezvous.scoring import score_record

pytestmark = pytest.mark.unit


def record(service="svc", error=None, features=None):
    return {
        "request_id": "r",
        "service": service,
        "received_ms": 100,
        "deadline_ms": 200,
        "features": serde.to_json(features or {"x": 1.0}),
        "error": error,
    }


def clock():
    ticks = itertools.count(110, 5)
    return lambda: next(ticks)


def test_callable_model_scores_with_its_params():
    scorer = load_scorer(
        ModelSpec("c", "champion", callable="udfs.zoo:constant", params={"value": 7}),
        tracking_uri=None,
    )
    s = score_record(scorer, "svc", record(), clock())
    assert (s["status"], serde.from_json(s["output"]), s["started_ms"], s["scored_ms"]) == (
        "ok",
        7,
        110,
        115,
    )
    assert (s["model"], s["role"], s["version"]) == ("c", "champion", "udfs.zoo:constant")


def test_model_exception_becomes_an_error_score():
    scorer = load_scorer(ModelSpec("f", "canary", callable="udfs.zoo:failing"), tracking_uri=None)
    s = score_record(scorer, "svc", record(), clock())
    assert s["status"] == "error" and s["output"] is None
    assert "ModelFailure: this model always fails" in s["error"]


def test_other_services_and_failed_enrichment_are_skipped():
    scorer = load_scorer(ModelSpec("e", "champion", callable="udfs.zoo:echo"), tracking_uri=None)
    assert score_record(scorer, "svc", record(service="other"), clock()) is None
    assert score_record(scorer, "svc", record(error="lookup failed"), clock()) is None


def test_unknown_callable_names_the_model_and_the_fix():
    with pytest.raises(ModelLoadError, match="model m: cannot import udfs.zoo:nope"):
        load_scorer(ModelSpec("m", "champion", callable="udfs.zoo:nope"), tracking_uri=None)


def test_mlflow_sklearn_model_from_a_folder_scores_like_the_trained_model(tmp_path):
    import mlflow
    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True, as_frame=True)
    x.columns = ["sl", "sw", "pl", "pw"]
    model = LogisticRegression(max_iter=500).fit(x, y)
    path = tmp_path / "model"
    mlflow.sklearn.save_model(
        model, str(path), signature=mlflow.models.infer_signature(x, model.predict(x))
    )
    scorer = load_scorer(ModelSpec("lr", "champion", uri=str(path)), tracking_uri=None)
    for i in (0, 60, 120):
        row = x.iloc[i].to_dict()
        out = scorer.score(row)
        proba = model.predict_proba(pd.DataFrame([row]))[0]
        assert (
            out["label"] == int(np.argmax(proba)) and abs(out["probability"] - proba.max()) < 1e-5
        )
