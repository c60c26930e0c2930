"""Several configuration files on one cluster: each file's services answer beside the
others', a file cannot take over another's service, and removing one service leaves the
others answering. Real Kafka and Flink; requests go straight into the requests topic."""

from __future__ import annotations

import os
import uuid

import pytest

from rendezvous import cli, control, deploy
from rendezvous.errors import ConfigError
from rendezvous.heartbeat import Heartbeat
from tests.integration.feed import RequestFeed, write_service

pytestmark = [pytest.mark.flink, pytest.mark.kafka]

SLA_MS = 300
CONSTANT = '{name: champ, role: champion, callable: "udfs.zoo:constant", params: {value: %s}}'


def test_two_files_serve_side_by_side_and_one_service_is_removed_alone(
    stack, tmp_path, stack_env, monkeypatch, capsys
):
    first, second = ("svc" + uuid.uuid4().hex[:6] for _ in range(2))
    a = write_service(
        (tmp_path / "a.yaml"), first, sla_ms=SLA_MS, grace_ms=500, models=[CONSTANT % 0.25]
    )
    b = write_service(
        (tmp_path / "b.yaml"), second, sla_ms=SLA_MS, grace_ms=500, models=[CONSTANT % 0.75]
    )
    jobs: dict[str, str] = {}
    feeds = [RequestFeed(stack.settings.kafka_bootstrap, s, SLA_MS) for s in (first, second)]
    try:
        jobs |= deploy.submit(stack, a, log=lambda _: None)
        jobs |= deploy.submit(stack, b, log=lambda _: None)
        # The enrich job was not restarted for the second file: it took the service from the
        # control topic.
        assert jobs[deploy.ENRICH_JOB] == deploy.running_jobs(stack)[deploy.ENRICH_JOB]
        with Heartbeat(stack.settings.kafka, source="services-test"):
            for feed in feeds:
                feed.warm_up()
            for feed, value in zip(feeds, ("0.25", "0.75"), strict=True):
                rid = f"{feed.service}-one"
                feed.send(rid, {"x": 1.0})
                result = feed.wait_results([rid])[rid]
                assert (result["status"], result["model"], result["output"]) == (
                    "ok",
                    "champ",
                    value,
                )

            # Another file may not redefine a service it does not own.
            thief = write_service(
                tmp_path / "c.yaml", first, sla_ms=50, grace_ms=0, models=[CONSTANT % 0.5]
            )
            with pytest.raises(ConfigError, match=f"already served from {a.resolve()}"):
                deploy.submit(stack, thief, log=lambda _: None)

            # Status names each service with its file and says it answers.
            for name, value in stack_env.items():
                monkeypatch.setenv(name, value)
            cli.main(["status"])
            out = capsys.readouterr().out
            for service, path in ((first, a), (second, b)):
                line = next(x for x in out.splitlines() if x.strip().startswith(service))
                assert "serving" in line and "answers with champ" in line, out
                assert f"from {path.resolve()}" in out
                assert (
                    f"jobs: rendezvous-enrich, rendezvous-join, rendezvous-score {service}/champ\n"
                    in out
                )

            # Removing the first service cancels its scoring job only; the second answers on.
            cancelled = deploy.remove(stack, first, log=lambda _: None)
            assert cancelled == [deploy.score_job_name(first, "champ")]
            for name in cancelled:
                jobs.pop(name)
            rid = f"{second}-after"
            feeds[1].send(rid, {"x": 1.0})
            assert feeds[1].wait_results([rid])[rid]["output"] == "0.75"
            rid = f"{first}-after"
            feeds[0].send(rid, {"x": 1.0})
            result = feeds[0].wait_results([rid])[rid]
            assert result["status"] == "error" and "is not defined on this cluster" in (
                result["reason"] + (result.get("error") or "")
            ), result
            assert first not in control.KafkaControl(stack.settings.kafka).catalog().services
    finally:
        for feed in feeds:
            feed.close()
        for jid in jobs.values():
            stack.flink.cancel(jid)


def test_a_rule_in_the_users_own_module_is_shipped_with_its_job(stack, tmp_path):
    """The module lives in a folder of the user's, on no path the cluster knows."""
    name = "svc" + uuid.uuid4().hex[:6]
    module = f"rules_{name}"  # unique: a TaskManager keeps the modules it imported
    code = tmp_path / "my code"
    code.mkdir()
    (code / f"{module}.py").write_text("def double(features):\n    return features['x'] * 2\n")
    path = tmp_path / "services.yaml"
    path.write_text(
        f"version: 3\nservices:\n  {name}:\n    sla_ms: {SLA_MS}\n    grace_ms: 500\n"
        f'    code: ["my code"]\n    models:\n'
        f'      - {{name: rule, role: champion, callable: "{module}:double"}}\n'
        "    input:\n      x: double\n"
    )
    missing = tmp_path / "missing.yaml"
    missing.write_text(path.read_text().replace('"my code"', '"nowhere"'))
    with pytest.raises(
        ConfigError, match=rf"services\.{name}\.code\[0\]: .*nowhere does not exist"
    ):
        deploy.submit(stack, missing, log=lambda _: None)
    jobs: dict[str, str] = {}
    feed = RequestFeed(stack.settings.kafka_bootstrap, name, SLA_MS)
    try:
        jobs |= deploy.submit(stack, path, log=lambda _: None)
        with Heartbeat(stack.settings.kafka, source="code-test"):
            feed.warm_up()
            feed.send(f"{name}-1", {"x": 21.0})
            result = feed.wait_results([f"{name}-1"])[f"{name}-1"]
        assert (result["status"], result["model"], result["output"]) == ("ok", "rule", "42.0"), (
            result["reason"],
            result["error"],
        )
    finally:
        feed.close()
        for jid in jobs.values():
            stack.flink.cancel(jid)


def test_submit_and_status_through_a_named_profile(stack, tmp_path, monkeypatch, capsys):
    """The commands reach Kafka, Flink and MLflow by the addresses a profile names, with no
    RDV_* port variable set."""
    s = stack.settings
    (tmp_path / "profiles.yaml").write_text(
        "profiles:\n  cluster:\n"
        f"    kafka_bootstrap: {s.kafka_bootstrap}\n"
        f"    flink_rest_url: {s.flink_url}/\n"
        f"    mlflow_tracking_uri: {s.mlflow_url}\n"
        f"    home: {s.home}\n"
    )
    for name in [k for k in os.environ if k.startswith("RDV_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("RDV_PROFILES", str(tmp_path / "profiles.yaml"))
    name = "svc" + uuid.uuid4().hex[:6]
    path = write_service(
        tmp_path / "services.yaml", name, sla_ms=SLA_MS, grace_ms=500, models=[CONSTANT % 0.5]
    )
    feed = RequestFeed(s.kafka_bootstrap, name, SLA_MS)
    try:
        assert cli.main(["--profile", "cluster", "submit", "--config", str(path)]) == 0
        with Heartbeat(s.kafka, source="profile-test"):
            feed.warm_up()
        capsys.readouterr()
        cli.main(["--profile", "cluster", "status"])
        out = capsys.readouterr().out
        line = next(x for x in out.splitlines() if x.strip().startswith(name))
        assert "serving" in line, out
        assert cli.main(["--profile", "cluster", "models"]) == 0
        assert f"{name}: SLA {SLA_MS} ms, preference champ (v0)" in capsys.readouterr().out
    finally:
        feed.close()
        deploy.remove(stack, name, log=lambda _: None)
