"""StackSettings: defaults, RDV_* overrides and validation."""

from __future__ import annotations

import os
import socket
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from rendezvous.errors import ConfigError
from rendezvous.settings import REPO_ROOT, StackSettings


def test_defaults_without_environment():
    s = StackSettings.from_env({})
    assert s.kafka_port == 9092
    assert s.flink_rest_port == 8081
    assert s.home == (REPO_ROOT / ".state").resolve()
    assert s.jars_dir == s.home / "jars"
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.flink_url == "http://127.0.0.1:8081"
    assert s.mlflow_url == "http://127.0.0.1:5000"


def test_environment_overrides_parse_to_the_field_types(tmp_path):
    env = {
        "RDV_HOME": str(tmp_path / "state"),
        "RDV_KAFKA_PORT": "19092",
        "RDV_START_TIMEOUT_S": "12.5",
        "RDV_KAFKA_HEAP": "256m",
        "RDV_PYTHON": "/usr/bin/python3",
        "RDV_MLFLOW_PORT": "15000",
        "UNRELATED": "x",
    }
    s = StackSettings.from_env(env)
    assert s.home == (tmp_path / "state").resolve()
    assert isinstance(s.home, Path)
    assert s.kafka_port == 19092 and isinstance(s.kafka_port, int)
    assert s.start_timeout_s == 12.5 and isinstance(s.start_timeout_s, float)
    assert s.kafka_heap == "256m"
    assert s.python == Path("/usr/bin/python3")
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.mlflow_url == "http://127.0.0.1:15000"


def test_home_expands_the_user_folder():
    s = StackSettings.from_env({"RDV_HOME": "~/rdv-test-home"})
    assert s.home == (Path.home() / "rdv-test-home").resolve()


def test_keyword_overrides_win_over_the_environment():
    s = StackSettings.from_env({"RDV_KAFKA_PORT": "19092"}, kafka_port=29092)
    assert s.kafka_port == 29092


def test_settings_are_frozen():
    s = StackSettings.from_env({})
    with pytest.raises(FrozenInstanceError):
        s.kafka_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "raw", "kind"),
    [
        ("RDV_KAFKA_PORT", "ninety", "int"),
        ("RDV_FLINK_TASKMANAGER_SLOTS", "2.5", "int"),
        ("RDV_START_TIMEOUT_S", "soon", "float"),
    ],
)
def test_an_invalid_number_names_the_variable(variable, raw, kind):
    with pytest.raises(ConfigError) as err:
        StackSettings.from_env({variable: raw})
    message = err.value.message
    assert f"{variable}={raw!r}" in message
    assert f"not a valid {kind}" in message
    assert err.value.code == "config"


def test_duplicate_ports_are_rejected_naming_both_settings():
    with pytest.raises(ConfigError) as err:
        StackSettings.from_env({"RDV_MLFLOW_PORT": "9092"})
    message = err.value.message
    assert "mlflow_port and kafka_port are both 9092" in message
    assert "RDV_MLFLOW_PORT" in message


@pytest.mark.parametrize("port", ["0", "65536", "-1"])
def test_a_port_out_of_range_is_rejected(port):
    with pytest.raises(ConfigError, match=r"RDV_PROXY_PORT to 1-65535"):
        StackSettings.from_env({"RDV_PROXY_PORT": port})


@pytest.mark.parametrize("field", ["flink_taskmanagers", "flink_taskmanager_slots"])
def test_taskmanagers_and_slots_must_be_positive(field):
    with pytest.raises(ConfigError, match=r"RDV_FLINK_TASKMANAGERS / RDV_FLINK_TASKMANAGER_SLOTS"):
        StackSettings(**{field: 0}).validated()


def test_each_taskmanager_is_its_own_process(tmp_path):
    from rendezvous.stack.flink import FlinkCluster

    cluster = FlinkCluster(StackSettings(home=tmp_path, flink_taskmanagers=3))
    names = [svc.name for svc in cluster.services]
    assert names == [
        "flink-jobmanager",
        "flink-taskmanager",
        "flink-taskmanager-2",
        "flink-taskmanager-3",
    ]
    assert cluster.runtime_config()["taskmanager.load-balance.mode"] == "slots"


def test_archive_commit_interval_reaches_the_archive_job_and_is_validated(tmp_path):
    from rendezvous import deploy

    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        "services:\n  s:\n    sla_ms: 100\n    models:\n"
        "      - {name: m, role: champion, callable: 'udfs.rules:approve'}\n"
        "    input:\n      x: double\n"
    )
    settings = StackSettings(home=tmp_path, archive_commit_s=60)
    (archive,) = [j for j in deploy.plan(settings, cfg) if j.name == "rendezvous-archive"]
    i = archive.args.index("--checkpoint-interval")
    assert archive.args[i + 1] == "60 s"
    with pytest.raises(ConfigError, match="RDV_ARCHIVE_COMMIT_S"):
        StackSettings(home=tmp_path, archive_commit_s=0).validated()


def test_kafka_connection_defaults_to_the_local_broker_and_reads_its_variables(tmp_path):
    s = StackSettings.from_env({"RDV_KAFKA_PORT": "19092"})
    assert s.kafka.bootstrap == s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.kafka.client_config() == {"bootstrap.servers": "127.0.0.1:19092"}
    props = tmp_path / "client.properties"
    props.write_text("security.protocol=SSL\n")
    s = StackSettings.from_env(
        {"RDV_KAFKA_BOOTSTRAP": "b1:9093,b2:9093", "RDV_KAFKA_PROPERTIES": str(props)}
    )
    assert s.kafka.bootstrap == "b1:9093,b2:9093"
    assert s.kafka.client_config()["security.protocol"] == "SSL"
    assert s.kafka.source == props.resolve()
    assert StackSettings.from_env(s.to_env()) == s  # a child process rebuilds the same
    assert StackSettings.from_env({"RDV_KAFKA_PROPERTIES": ""}).kafka_properties is None


def test_a_missing_properties_file_fails_at_construction(tmp_path):
    with pytest.raises(ConfigError, match="Kafka properties file"):
        StackSettings.from_env({"RDV_KAFKA_PROPERTIES": str(tmp_path / "none")})


def test_construction_reads_no_environment(monkeypatch):
    monkeypatch.setenv("RDV_KAFKA_PORT", "19092")
    assert StackSettings().kafka_port == 9092
    assert StackSettings.from_env().kafka_port == 19092


def test_only_variables_spelled_in_capitals_count():
    assert StackSettings.from_env({"rdv_kafka_port": "19092"}).kafka_port == 9092


def test_unknown_and_mistyped_keyword_values_are_config_errors():
    with pytest.raises(ConfigError, match="unknown setting"):
        StackSettings(colour="red")
    with pytest.raises(ConfigError, match=r"kafka_port='x' is not a valid int.*RDV_KAFKA_PORT"):
        StackSettings(kafka_port="x")


def test_a_derived_bootstrap_is_not_exported_so_a_child_derives_it_from_its_port():
    env = StackSettings.from_env({}).to_env()
    assert "RDV_KAFKA_BOOTSTRAP" not in env and env["RDV_KAFKA_PORT"] == "9092"
    assert StackSettings.from_env(env, kafka_port=19092).kafka_bootstrap == "127.0.0.1:19092"
    env = StackSettings.from_env({"RDV_KAFKA_BOOTSTRAP": "b:1"}).to_env()
    assert env["RDV_KAFKA_BOOTSTRAP"] == "b:1"


def test_components_named_by_address_are_not_local(tmp_path):
    local = StackSettings.from_env({}, home=tmp_path)
    assert local.kafka_is_local and local.flink_is_local and local.mlflow_is_local
    remote = StackSettings.from_env(
        {},
        home=tmp_path,
        kafka_bootstrap="broker.example:9093",
        flink_rest_url="http://flink.example:8081",
        mlflow_tracking_uri="http://mlflow.example:5000",
    )
    assert not (remote.kafka_is_local or remote.flink_is_local or remote.mlflow_is_local)


def test_status_of_components_elsewhere_rests_on_their_answer_alone(tmp_path):
    """Addresses of your own have no local processes: a component there is up when it
    answers, and a pid file left in the state folder does not make it so."""
    from rendezvous.stack import Stack

    free = []
    for _ in range(3):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            free.append(sock.getsockname()[1])
    settings = StackSettings.from_env(
        {},
        home=tmp_path,
        kafka_bootstrap=f"127.0.0.1:{free[0]}",
        flink_rest_url=f"http://127.0.0.1:{free[1]}",
        mlflow_tracking_uri=f"http://127.0.0.1:{free[2]}",
    )
    settings.run_dir.mkdir(parents=True)
    (settings.run_dir / "kafka.pid").write_text(str(os.getpid()))
    rows = {row.name: row for row in Stack(settings, log=lambda _: None).status()}
    for name in ("kafka", "flink", "mlflow"):
        assert rows[name].pids == () and not rows[name].up
    assert rows["kafka"].address == f"127.0.0.1:{free[0]}"


def test_the_taskmanagers_metrics_ports_follow_the_jobmanagers_and_are_checked():
    s = StackSettings(flink_metrics_port=9300, flink_taskmanagers=3)
    assert list(s.flink_metrics_ports.values()) == [9300, 9301, 9302, 9303]
    with pytest.raises(
        ConfigError, match="flink_metrics_port\\+2 and proxy_port.*RDV_FLINK_METRICS_PORT"
    ):
        StackSettings(flink_metrics_port=7998, proxy_port=8000)
    with pytest.raises(ConfigError, match="65536 is not a TCP port; set RDV_FLINK_METRICS_PORT"):
        StackSettings(flink_metrics_port=65534)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kafka_partitions", 0),
        ("results_partitions", 2000),
        ("join_parallelism", 0),
        ("enrich_parallelism", 65),
        ("archive_parallelism", -1),
    ],
)
def test_partitions_and_parallelism_out_of_range_name_their_variable(tmp_path, field, value):
    with pytest.raises(ConfigError, match=f"RDV_{field.upper()}"):
        StackSettings(home=tmp_path, **{field: value})


def test_the_results_topic_gets_its_own_partition_count(tmp_path):
    from rendezvous import topics
    from rendezvous.stack.kafka import KafkaBroker

    broker = KafkaBroker(StackSettings(home=tmp_path, kafka_partitions=2, results_partitions=6))
    assert broker._partitions(topics.RESULTS) == 6
    assert broker._partitions(topics.MODEL_INPUT) == 2
    assert broker._partitions(topics.CONTROL) == 1
