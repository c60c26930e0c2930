"""`rendezvous promote` against the stack's MLflow: ``@champion`` in the registry follows the
first choice, goes back on an undo, and each change is a run in ``rendezvous-promotions``."""

from __future__ import annotations

import uuid

import pytest

from rendezvous import cli
from rendezvous.models import promotion

pytestmark = [pytest.mark.kafka, pytest.mark.mlflow]

CONFIG = """
version: 6
services:
  {name}:
    sla_ms: 200
    models:
      - {{name: champ, role: champion, uri: "models:/{model}@champion"}}
      - {{name: shadow, role: challenger, uri: "models:/{model}@challenger"}}
      - {{name: backstop, role: backstop, callable: "udfs.zoo:constant"}}
    input:
      x: double
"""


def test_champion_alias_follows_promote_and_undo(stack, stack_env, monkeypatch, capsys, tmp_path):
    from mlflow.tracking import MlflowClient

    for key, value in stack_env.items():
        monkeypatch.setenv(key, value)
    client = MlflowClient(stack.settings.mlflow_url, registry_uri=stack.settings.mlflow_url)
    name, model = "svc" + uuid.uuid4().hex[:8], "reg" + uuid.uuid4().hex[:8]
    client.create_registered_model(model)
    # Versions 1 and 2 of one run's artifact (nothing loads them: no job runs here).
    experiment_id = client.create_experiment("e" + model)
    logged = client.create_run(experiment_id)
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    client.log_artifact(logged.info.run_id, str(tmp_path / "MLmodel"), artifact_path="model")
    for _ in range(2):
        client.create_model_version(
            model, source=f"{logged.info.artifact_uri}/model", run_id=logged.info.run_id
        )
    client.set_registered_model_alias(model, "champion", "1")
    client.set_registered_model_alias(model, "challenger", "2")
    path = tmp_path / "services.yaml"
    path.write_text(CONFIG.format(name=name, model=model))
    run = ["--config", str(path)]

    def champion() -> str:
        return str(client.get_model_version_by_alias(model, "champion").version)

    assert cli.main(["promote", name, "shadow", *run]) == 0
    out = capsys.readouterr().out
    assert f"MLflow: models:/{model}@champion -> version 2 (was version 1)" in out
    assert champion() == "2"
    assert cli.main(["promote", "--undo", name, *run]) == 0
    out = capsys.readouterr().out
    assert f"MLflow: models:/{model}@champion -> version 1 (was version 2)" in out
    assert champion() == "1"

    experiment = client.get_experiment_by_name(promotion.EXPERIMENT)
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"params.service = '{name}'",
        order_by=["attributes.start_time ASC"],
    )
    moves = [
        (r.data.params["from_model"], r.data.params["to_model"], r.data.params["version"])
        for r in runs
    ]
    assert moves == [("champ", "shadow", "2"), ("shadow", "champ", "1")]
    assert runs[1].data.params["policy_version"] == "2"

    # The control topic carries each move beside the policy it came with, and `models` says so.
    from rendezvous import config, control

    log = control.KafkaControl(stack.settings.kafka)
    history = control.history(log, config.load(path), name)
    carried = [(c.policy.preference[0], c.registry) for c in history.changes]
    assert carried == [
        ("champ", None),
        (
            "shadow",
            {
                "registered_model": model,
                "alias": "champion",
                "version": "2",
                "previous": "1",
                "moved": True,
            },
        ),
        (
            "champ",
            {
                "registered_model": model,
                "alias": "champion",
                "version": "1",
                "previous": "2",
                "moved": True,
            },
        ),
    ]
    assert cli.main(["models", *run]) == 0
    assert f"@champion -> {model} v2" in capsys.readouterr().out
