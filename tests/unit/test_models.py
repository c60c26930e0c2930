"""Scorers, the model zoo, the rule backstop and signature-derived inputs.

MLflow models are saved to temporary folders; registry tests use a SQLite registry in a
temporary folder (no server). The real tracking server is tested in tests/integration.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings

import pytest

from rendezvous import demo_models, models
from rendezvous.config import FieldSpec, ModelSpec
from rendezvous.models import (
    ModelLoadError,
    input_fields_from_signature,
    load_scorer,
    parse_model_uri,
    single_threaded_math,
)
from udfs import rules, zoo

pytestmark = pytest.mark.unit

FEATURE_FIELDS = tuple(FieldSpec(f, "double") for f in demo_models.FEATURES)


def callable_scorer(target: str, **params):
    return load_scorer(
        ModelSpec("m", "champion", callable=target, params=params), tracking_uri=None
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def inline(task):
    task()


# ---- the zoo and the rules -------------------------------------------------------------


def test_echo_returns_the_features():
    assert zoo.echo({"a": 1.0, "b": "x"}) == {"a": 1.0, "b": "x"}


def test_constant_returns_its_value():
    assert zoo.constant({"a": 1}) == 0.5
    assert zoo.constant({"a": 1}, value={"label": 1}) == {"label": 1}


def test_slow_sleeps_then_answers():
    t0 = time.perf_counter()
    assert zoo.slow({}, delay_ms=30, value=7) == 7
    assert time.perf_counter() - t0 >= 0.03


def test_failing_raises_its_message():
    with pytest.raises(zoo.ModelFailure, match="^boom$"):
        zoo.failing({}, message="boom")


def test_scripted_does_what_the_request_says():
    assert zoo.scripted({"x": 1.0}, value=3) == 3
    t0 = time.perf_counter()
    assert zoo.scripted({"delay_ms": 30.0}) == 0.5
    assert time.perf_counter() - t0 >= 0.03
    with pytest.raises(zoo.ModelFailure, match="asked this model to fail"):
        zoo.scripted({"fail": 1.0})


def test_flaky_fails_on_a_deterministic_share_of_inputs():
    inputs = [{"x": float(i), "y": i % 7} for i in range(600)]
    outcomes = []
    for features in inputs:
        try:
            zoo.flaky(features, every=3)
            outcomes.append(True)
        except zoo.ModelFailure:
            outcomes.append(False)
    # The same input always gives the same outcome, and it is the documented one.
    for features, ok in zip(inputs, outcomes, strict=True):
        assert ok == (zoo.failure_key(features) % 3 != 0)
        assert ok == (zoo.failure_key(dict(reversed(features.items()))) % 3 != 0)
    assert 150 < outcomes.count(False) < 250  # about one in three
    with pytest.raises(ValueError, match="every must be >= 1"):
        zoo.flaky({}, every=0)


def test_the_rule_backstop_answers_like_the_classifiers():
    big = {"worst_radius": 25.0, "worst_concave_points": 0.2}
    small = {"worst_radius": 11.0, "worst_concave_points": 0.05}
    borderline = {"worst_radius": 16.0, "worst_concave_points": 0.05}
    assert rules.tumour_size_rule(big) == {"label": rules.MALIGNANT, "probability": 0.9}
    assert rules.tumour_size_rule(small) == {"label": rules.BENIGN, "probability": 0.9}
    assert rules.tumour_size_rule(borderline) == {"label": rules.BENIGN, "probability": 0.6}
    assert rules.tumour_size_rule(big, radius_limit=30.0, concave_points_limit=0.3)["label"] == 1
    assert demo_models.backstop_accuracy() > 0.88


# ---- callables -------------------------------------------------------------------------


def test_a_callable_scorer_calls_the_function_with_its_params():
    scorer = callable_scorer("udfs.zoo:constant", value={"label": 1, "probability": 0.75})
    assert (scorer.name, scorer.role, scorer.version, scorer.kind) == (
        "m",
        "champion",
        "udfs.zoo:constant",
        "python",
    )
    assert scorer.score({"x": 1.0}) == {"label": 1, "probability": 0.75}
    assert callable_scorer("udfs.zoo:echo").score({"x": 1.0}) == {"x": 1.0}
    assert scorer.refresh() is False


def test_a_callable_scorer_lets_model_errors_through():
    with pytest.raises(zoo.ModelFailure, match="always fails"):
        callable_scorer("udfs.zoo:failing").score({})


def test_a_callable_output_must_be_json():
    with pytest.raises(TypeError, match="udfs.zoo:not_json returned a set that is not JSON"):
        callable_scorer("udfs.zoo:not_json").score({})


def test_params_the_function_does_not_take_fail_at_load_with_the_signature():
    with pytest.raises(ModelLoadError, match=r"udfs.zoo:constant\(features.*vlaue"):
        callable_scorer("udfs.zoo:constant", vlaue=1)


def test_a_missing_module_names_the_model_and_the_fix():
    with pytest.raises(
        ModelLoadError, match="model m: cannot import nope.nothing:f.*service's code key"
    ):
        callable_scorer("nope.nothing:f")


def test_a_closed_scorer_refuses_to_score():
    scorer = callable_scorer("udfs.zoo:echo")
    scorer.close()
    with pytest.raises(RuntimeError, match="model m is closed"):
        scorer.score({})


# ---- MLflow models in folders ----------------------------------------------------------


def save(estimator, path, **kwargs):
    import mlflow.sklearn
    from mlflow.models import infer_signature

    data = demo_models.demo_data()
    kwargs.setdefault("signature", infer_signature(data.x_train, estimator.predict(data.x_train)))
    mlflow.sklearn.save_model(
        estimator,
        str(path),
        pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True),
        skops_trusted_types=["sklearn.tree._tree.Tree"],
        **kwargs,
    )
    return str(path)


@pytest.fixture(scope="module")
def trained():
    return {alias: est for alias, (est, _) in demo_models.train_demo_models().items()}


@pytest.fixture(scope="module")
def folders(trained, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {alias: save(est, root / alias) for alias, est in trained.items()}


@pytest.mark.parametrize("compiled", [True, False], ids=["onnx", "sklearn"])
@pytest.mark.parametrize("alias", demo_models.ALIASES)
def test_a_saved_sklearn_model_scores_like_the_trained_one_on_the_fast_path(
    alias, compiled, trained, folders, monkeypatch
):
    """Compiled to ONNX by default (probabilities within float32 rounding of scikit-learn's),
    or on scikit-learn's own numpy path with RDV_SCORER_ONNX=0 (exactly scikit-learn's)."""
    if not compiled:
        monkeypatch.setenv("RDV_SCORER_ONNX", "0")
    scorer = load_scorer(ModelSpec(alias, alias, uri=folders[alias]), tracking_uri=None)
    assert (scorer.version, scorer.kind) == ("local", "onnx" if compiled else "sklearn")
    tolerance = models.ONNX_TOLERANCE if compiled else 1e-12
    x_test = demo_models.demo_data().x_test
    expected = trained[alias].predict_proba(x_test)
    rows = x_test.to_dict(orient="records")
    for i, features in enumerate(rows):
        out = scorer.score(features)
        assert out["label"] == int(expected[i].argmax())
        assert out["probability"] == pytest.approx(expected[i].max(), abs=tolerance)
        assert type(out["label"]) is int and type(out["probability"]) is float
    # Many rows in one call give what one row at a time gives: exactly on the ONNX path; on
    # scikit-learn's, a matrix product over many rows may round differently.
    many, one = scorer.score_many(rows), [scorer.score(r) for r in rows]
    assert [m["label"] for m in many] == [o["label"] for o in one]
    if compiled:
        assert many == one
    else:
        assert [m["probability"] for m in many] == pytest.approx(
            [o["probability"] for o in one], abs=1e-12
        )
    scorer.close()


def test_a_file_uri_and_numpy_fitted_models_work_too(tmp_path):
    from sklearn.linear_model import LogisticRegression

    data = demo_models.demo_data()
    model = LogisticRegression(max_iter=1000).fit(data.x_train.to_numpy(), data.y_train)
    path = save(model, tmp_path / "lr")
    scorer = load_scorer(ModelSpec("lr", "canary", uri=f"file://{path}"), tracking_uri=None)
    row = data.x_test.iloc[0]
    assert scorer.score(row.to_dict())["label"] == int(model.predict(row.to_numpy()[None, :])[0])


def test_a_regressor_answers_a_number(tmp_path):
    from sklearn.linear_model import LinearRegression

    data = demo_models.demo_data()
    model = LinearRegression().fit(data.x_train, data.x_train["worst_radius"] * 2)
    scorer = load_scorer(
        ModelSpec("r", "champion", uri=save(model, tmp_path / "r")), tracking_uri=None
    )
    out = scorer.score(data.x_test.iloc[0].to_dict())
    assert type(out) is float
    assert out == pytest.approx(data.x_test.iloc[0]["worst_radius"] * 2)


def test_a_missing_feature_is_a_scoring_error_naming_it(folders):
    scorer = load_scorer(ModelSpec("c", "champion", uri=folders["champion"]), tracking_uri=None)
    features = demo_models.demo_requests(1, seed=0)[0]
    del features["worst_radius"]
    with pytest.raises(ValueError, match="model c needs feature 'worst_radius'"):
        scorer.score(features)


@pytest.fixture(scope="module")
def pyfunc_folder(tmp_path_factory):
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(
        inputs=Schema(
            [
                ColSpec("double", "a"),
                ColSpec("float", "b"),
                ColSpec("long", "c"),
                ColSpec("integer", "d"),
                ColSpec("string", "e"),
                ColSpec("boolean", "f", required=False),
            ]
        ),
        outputs=Schema([ColSpec("double")]),
    )
    path = tmp_path_factory.mktemp("pyfunc") / "mixed"

    # MLflow suggests type hints, with its filters forced to "always": record and drop them.
    with warnings.catch_warnings(record=True):

        class Mixed(mlflow.pyfunc.PythonModel):  # string and boolean inputs: not the fast path
            def predict(self, context, model_input, params=None):
                return [float(len(model_input["e"].iloc[0]) + model_input["c"].iloc[0])]

        mlflow.pyfunc.save_model(
            str(path), python_model=Mixed(), signature=signature, pip_requirements=[]
        )
    return str(path)


def test_other_flavours_score_through_pyfunc_with_plain_outputs(pyfunc_folder):
    scorer = load_scorer(ModelSpec("p", "challenger", uri=pyfunc_folder), tracking_uri=None)
    assert scorer.kind == "pyfunc"
    out = scorer.score({"a": 1.0, "b": 2.0, "c": 3, "d": 4, "e": "abcd", "f": True})
    assert out == 7.0 and type(out) is float
    scorer.close()


def test_input_fields_come_from_the_signature(folders, pyfunc_folder):
    assert input_fields_from_signature(folders["champion"], None) == FEATURE_FIELDS
    assert input_fields_from_signature(pyfunc_folder, None) == (
        FieldSpec("a", "double"),
        FieldSpec("b", "double"),
        FieldSpec("c", "long"),
        FieldSpec("d", "long"),
        FieldSpec("e", "string"),
        FieldSpec("f", "boolean", required=False),
    )


def test_a_model_without_signature_cannot_give_input_fields(trained, tmp_path):
    path = save(trained["canary"], tmp_path / "nosig", signature=False)
    with pytest.raises(ModelLoadError, match="has no signature.*infer_signature"):
        input_fields_from_signature(path, None)


# ---- bad URIs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("models:/", "no model name"),
        ("models:/credit", "no version or alias"),
        ("models:/credit@", "an alias URI is models:/<name>@<alias>"),
        ("models:/credit/Production", "stages are deprecated"),
        ("runs:/abc", "a run URI is runs:/<run id>/<artifact path>"),
        ("s3://bucket/model", "only registry, run and local-folder URIs"),
    ],
)
def test_malformed_uris_name_the_model_and_the_expected_forms(uri, message):
    with pytest.raises(ModelLoadError, match=f"model m: cannot read the model URI.*{message}"):
        load_scorer(ModelSpec("m", "champion", uri=uri), tracking_uri=None)


def test_uri_forms():
    assert parse_model_uri("models:/credit@champion").alias == "champion"
    assert parse_model_uri("models:/credit/03").version == "3"
    assert parse_model_uri("models:/credit/latest").latest
    assert parse_model_uri("models:/m-0123").logged_model_id == "m-0123"
    ref = parse_model_uri("runs:/0a1b/model/sub")
    assert (ref.run_id, ref.path) == ("0a1b", "model/sub")
    assert parse_model_uri("file:///tmp/m").path == "/tmp/m"


def test_a_folder_that_is_not_a_model_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="model m: .*is not an MLflow model folder"):
        load_scorer(ModelSpec("m", "champion", uri=str(tmp_path)), tracking_uri=None)


def test_a_registry_uri_without_a_tracking_uri_is_refused(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for uri in ("models:/credit@champion", "runs:/0a1b/model", "models:/m-0a1b"):
        with pytest.raises(ModelLoadError, match="needs an MLflow registry, and no tracking URI"):
            load_scorer(ModelSpec("m", "champion", uri=uri), tracking_uri=None)


def test_an_unreachable_registry_says_how_to_start_it(monkeypatch):
    import socket

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(ModelLoadError, match="cannot reach the MLflow registry.*rendezvous up"):
            load_scorer(
                ModelSpec("m", "champion", uri="models:/credit@champion"),
                tracking_uri=f"http://127.0.0.1:{port}",
            )


# ---- a registry (SQLite, no server) ----------------------------------------------------


@pytest.fixture(scope="module")
def registry(folders, tmp_path_factory):
    """A SQLite registry with versions 1 (champion folder) and 2 (canary folder) of 'credit'."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("credit")
    for alias in ("champion", "canary"):
        version = client.create_model_version("credit", source=folders[alias]).version
        client.set_registered_model_alias("credit", alias, version)
    return uri, client


@pytest.fixture
def champion_alias(registry):
    uri, client = registry
    client.set_registered_model_alias("credit", "champion", "1")
    yield
    client.set_registered_model_alias("credit", "champion", "1")


def test_registry_references_resolve_to_versions(registry, champion_alias):
    uri, _ = registry
    versions = {}
    for ref in (
        "models:/credit@champion",
        "models:/credit@canary",
        "models:/credit/1",
        "models:/credit/latest",
    ):
        scorer = load_scorer(ModelSpec("m", "champion", uri=ref), tracking_uri=uri)
        assert scorer.kind == "onnx"
        versions[ref] = scorer.version
        scorer.close()
    assert list(versions.values()) == ["1", "2", "1", "2"]


def test_a_missing_alias_lists_the_aliases_and_the_fix(registry):
    uri, _ = registry
    with pytest.raises(ModelLoadError) as err:
        load_scorer(ModelSpec("m", "champion", uri="models:/credit@gold"), tracking_uri=uri)
    assert "model m: no alias 'gold' on registered model 'credit'" in err.value.message
    assert "canary -> 2, champion -> 1" in err.value.message
    assert "set it with MlflowClient().set_registered_model_alias('credit', 'gold', <version>)" in (
        err.value.message
    )
    # the hint says what promote does to aliases: it moves @champion only
    assert "`rendezvous promote` moves only @champion, to the version of the model it makes" in (
        err.value.message
    )


def test_a_missing_model_or_version_is_named(registry):
    uri, _ = registry
    with pytest.raises(ModelLoadError, match="no registered model 'debit'"):
        load_scorer(ModelSpec("m", "champion", uri="models:/debit@champion"), tracking_uri=uri)
    with pytest.raises(ModelLoadError, match="'credit' has no version '9'"):
        load_scorer(ModelSpec("m", "champion", uri="models:/credit/9"), tracking_uri=uri)


def test_refresh_follows_a_moved_alias_at_most_every_interval(registry, champion_alias, trained):
    uri, client = registry
    clock = FakeClock()
    scorer = load_scorer(
        ModelSpec("m", "champion", uri="models:/credit@champion"),
        tracking_uri=uri,
        follow_alias_s=30.0,
        clock=clock,
        run_in_background=inline,
    )
    features = demo_models.demo_requests(1, seed=3)[0]
    import pandas as pd

    def expected(alias):
        return float(trained[alias].predict_proba(pd.DataFrame([features])).max())

    assert scorer.version == "1"
    clock.now += 31
    assert scorer.refresh() is False  # checked: the alias did not move
    client.set_registered_model_alias("credit", "champion", "2")
    clock.now += 10
    assert scorer.refresh() is False  # too soon to check again
    assert scorer.score(features)["probability"] == pytest.approx(expected("champion"))
    clock.now += 25
    assert scorer.refresh() is True
    assert scorer.version == "2"
    assert scorer.score(features)["probability"] == pytest.approx(expected("canary"))
    clock.now += 31
    assert scorer.refresh() is False
    scorer.close()


def test_a_failed_alias_check_keeps_the_loaded_version(registry, champion_alias):
    uri, client = registry
    clock = FakeClock()
    scorer = load_scorer(
        ModelSpec("m", "champion", uri="models:/credit@champion"),
        tracking_uri=uri,
        clock=clock,
        run_in_background=inline,
    )
    client.delete_registered_model_alias("credit", "champion")
    clock.now += 3600
    assert scorer.refresh() is False
    assert scorer.version == "1" and "no alias 'champion'" in scorer.last_refresh_error
    assert scorer.score(demo_models.demo_requests(1)[0])["label"] in (0, 1)


def test_refresh_runs_the_check_in_the_background(registry, champion_alias):
    uri, client = registry
    clock = FakeClock()
    started = []
    scorer = load_scorer(
        ModelSpec("m", "champion", uri="models:/credit@champion"),
        tracking_uri=uri,
        clock=clock,
        run_in_background=started.append,  # queued, not run: scoring never waits for it
    )
    client.set_registered_model_alias("credit", "champion", "2")
    clock.now += 31
    assert scorer.refresh() is False and len(started) == 1
    clock.now += 31
    assert scorer.refresh() is False and len(started) == 1  # one check at a time
    started[0]()
    assert scorer.refresh() is True and scorer.version == "2"


def test_input_fields_from_a_registered_model(registry):
    uri, _ = registry
    assert input_fields_from_signature("models:/credit@canary", uri) == FEATURE_FIELDS


# ---- the demo models and the process ---------------------------------------------------


def test_demo_requests_are_held_out_rows():
    bodies = demo_models.demo_requests(50, seed=1)
    assert len(bodies) == 50 and bodies == demo_models.demo_requests(50, seed=1)
    held_out = demo_models.demo_data().x_test.to_dict(orient="records")
    assert all(body in held_out for body in bodies)
    assert all(set(b) == set(demo_models.FEATURES) for b in bodies)


def test_demo_service_config_is_a_valid_service():
    from rendezvous import config

    spec = config.parse({"services": {"breast_cancer": demo_models.demo_service_config()}}).service(
        "breast_cancer"
    )
    assert spec.sla_ms == demo_models.SLA_MS == 100
    assert spec.preference == ("champion", "canary", "backstop")
    assert spec.model("champion").uri == "models:/breast_cancer@champion"
    assert spec.model("backstop").callable == demo_models.BACKSTOP
    assert {m.role for m in spec.models} == {
        "champion",
        "challenger",
        "canary",
        "backstop",
        "decoy",
    }
    assert spec.input_fields is None and spec.input_from_model == "champion"


def test_single_threaded_math_respects_a_chosen_value(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    single_threaded_math()
    assert os.environ["OMP_NUM_THREADS"] == "3"
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"


def test_the_model_modules_do_not_load_pyflink():
    code = (
        "import sys, rendezvous.models, rendezvous.demo_models, udfs.zoo, udfs.rules;"
        "sys.exit('pyflink' in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
