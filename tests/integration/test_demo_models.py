"""The demo models against the stack's real MLflow tracking server: register, load, follow."""

from __future__ import annotations

import uuid

import pytest

from rendezvous import demo_models
from rendezvous.config import FieldSpec, ModelSpec
from rendezvous.models import (
    DEFAULT_FOLLOW_ALIAS_S,
    ModelLoadError,
    input_fields_from_signature,
    load_scorer,
)

pytestmark = pytest.mark.mlflow


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def held_out_accuracy(scorer) -> float:
    data = demo_models.demo_data()
    labels = [scorer.score(row)["label"] for row in data.x_test.to_dict(orient="records")]
    return float((data.y_test.to_numpy() == labels).mean())


@pytest.fixture
def registered_name(stack):
    from mlflow import MlflowClient

    name = f"test-demo-{uuid.uuid4().hex[:10]}"
    yield name
    client = MlflowClient(stack.settings.mlflow_url, registry_uri=stack.settings.mlflow_url)
    client.delete_registered_model(name)


def test_demo_models_register_load_and_follow_their_aliases(stack, registered_name):
    import mlflow
    from mlflow import MlflowClient

    url, name = stack.settings.mlflow_url, registered_name
    client = MlflowClient(url, registry_uri=url)
    global_uri = mlflow.get_tracking_uri()

    first = demo_models.register_demo_models(url, name=name)
    assert mlflow.get_tracking_uri() == global_uri  # the process-wide URI is left alone
    models = first["models"]
    assert {a: models[a]["version"] for a in demo_models.ALIASES} == {
        "champion": "1",
        "challenger": "2",
        "canary": "3",
    }
    assert models["backstop"]["callable"] == demo_models.BACKSTOP
    assert all(models[a]["accuracy"] > 0.9 for a in (*demo_models.ALIASES, "backstop"))

    clock = FakeClock()
    scorers = {
        alias: load_scorer(
            ModelSpec(alias, alias, uri=f"models:/{name}@{alias}"),
            tracking_uri=url,
            clock=clock,
            run_in_background=lambda task: task(),
        )
        for alias in demo_models.ALIASES
    }
    for alias, scorer in scorers.items():
        assert (scorer.version, scorer.kind) == (models[alias]["version"], "onnx")
        assert held_out_accuracy(scorer) == pytest.approx(models[alias]["accuracy"], abs=1e-4)

    # Registering again makes new versions and moves every alias to them.
    second = demo_models.register_demo_models(url, name=name)
    again = {a: second["models"][a]["version"] for a in demo_models.ALIASES}
    assert again == {"champion": "4", "challenger": "5", "canary": "6"}
    assert dict(client.get_registered_model(name).aliases) == again

    clock.now += DEFAULT_FOLLOW_ALIAS_S + 1
    for alias, scorer in scorers.items():
        assert scorer.refresh() is True
        assert scorer.version == again[alias]
        scorer.close()

    fields = input_fields_from_signature(f"models:/{name}@champion", url)
    assert fields == tuple(FieldSpec(f, "double") for f in demo_models.FEATURES)

    run_uri = f"runs:/{second['models']['canary']['run_id']}/model"
    by_run = load_scorer(ModelSpec("canary", "canary", uri=run_uri), tracking_uri=url)
    assert (by_run.version, by_run.kind) == ("6", "onnx")
    assert by_run.refresh() is False  # a run cannot move
    by_run.close()


def test_a_missing_alias_on_the_server_names_the_fix(stack, registered_name):
    from mlflow import MlflowClient

    url = stack.settings.mlflow_url
    MlflowClient(url, registry_uri=url).create_registered_model(registered_name)
    with pytest.raises(
        ModelLoadError, match=f"no alias 'champion' on registered model '{registered_name}'"
    ):
        load_scorer(
            ModelSpec("m", "champion", uri=f"models:/{registered_name}@champion"), tracking_uri=url
        )


def test_the_proxy_validates_bodies_against_the_champion_signature(stack, registered_name):
    from rendezvous import config
    from rendezvous.proxy.app import resolve_signature_inputs
    from rendezvous.proxy.validation import Validator

    demo_models.register_demo_models(stack.settings.mlflow_url, name=registered_name)
    service = demo_models.demo_service_config(registered_name)
    service["input"] = {"from_model": "champion"}
    cfg = resolve_signature_inputs(
        config.parse({"services": {"bc": service}}), stack.settings.mlflow_url
    )
    spec = cfg.service("bc")
    assert {f.name for f in spec.input_fields} == set(demo_models.FEATURES)
    assert all(f.type == "double" for f in spec.input_fields)
    body = demo_models.demo_requests(1, seed=1)[0]
    Validator(spec)(body)  # a good body passes
    body.pop("worst_radius")
    with pytest.raises(Exception, match="worst_radius"):
        Validator(spec)(body)


def test_config_check_resolve_asks_the_registry_for_each_model(
    stack, stack_env, registered_name, tmp_path
):
    import os
    import subprocess
    import sys

    import yaml

    demo_models.register_demo_models(stack.settings.mlflow_url, name=registered_name)
    service = demo_models.demo_service_config(registered_name)
    path = tmp_path / "services.yaml"
    path.write_text(yaml.safe_dump({"services": {"bc": service}}))

    def check() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "rendezvous.cli", "config", "check", "--resolve", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **stack_env},
        )

    ok = check()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "valid, and its models, callables and tables resolve" in ok.stdout

    service["models"][1]["uri"] = f"models:/{registered_name}@nosuch"  # the challenger
    service["models"].append(
        {"name": "gone", "role": "challenger", "uri": "models:/nosuch-model@x"}
    )
    path.write_text(yaml.safe_dump({"services": {"bc": service}}))
    bad = check()
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"{path}: services.bc.models[1].uri: ")
    assert f"no alias 'nosuch' on registered model '{registered_name}'" in lines[0]
    assert lines[1].startswith(f"{path}: services.bc.models[5].uri: ")
    assert "nosuch-model" in lines[1]
