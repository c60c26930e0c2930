"""Proxy settings from defaults, the environment and overrides; the error table."""

from __future__ import annotations

from pathlib import Path

import pytest

from rendezvous.errors import ConfigError, RendezvousError
from rendezvous.proxy import errors
from rendezvous.proxy.settings import ProxySettings

pytestmark = pytest.mark.unit


def test_defaults() -> None:
    s = ProxySettings.from_env({})
    assert (s.host, s.port, s.bootstrap) == ("127.0.0.1", 8000, "127.0.0.1:9092")
    assert s.max_body_bytes == 1 << 20 and s.body_timeout_ms == 5000
    assert s.result_grace_ms == 15 and s.tick_interval_ms == 10 and s.cache_size == 100_000
    assert len(s.replica_id) == 12 and s.replica_id != ProxySettings.from_env({}).replica_id
    assert s.config is None


def test_env_then_overrides() -> None:
    env = {
        "RDV_PROXY_PORT": "9001",
        "RDV_PROXY_CONFIG": "~/conf.yaml",
        "RDV_PROXY_BOOTSTRAP": "kafka:9092",
        "RDV_PROXY_REPLICA_ID": "a-1",
        "RDV_PROXY_BODY_TIMEOUT_MS": "250",
    }
    s = ProxySettings.from_env(env, defaults={"bootstrap": "stack:9092", "port": 7000}, port=9002)
    assert s.port == 9002  # override beats env beats defaults
    assert s.bootstrap == "kafka:9092"  # env beats defaults
    assert s.config == Path("~/conf.yaml").expanduser()
    assert s.replica_id == "a-1"
    assert s.body_timeout_ms == 250
    s = ProxySettings.from_env({}, defaults={"bootstrap": "stack:9092"}, port=None)
    assert s.bootstrap == "stack:9092" and s.port == 8000  # None overrides are ignored


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"RDV_PROXY_PORT": "eighty"}, "RDV_PROXY_PORT"),
        ({"RDV_PROXY_PORT": "70000"}, "RDV_PROXY_PORT"),
        ({"RDV_PROXY_REPLICA_ID": "a b"}, "RDV_PROXY_REPLICA_ID"),
        ({"RDV_PROXY_CACHE_SIZE": "0"}, "RDV_PROXY_CACHE_SIZE"),
        ({"RDV_PROXY_MAX_BODY_BYTES": "1"}, "RDV_PROXY_MAX_BODY_BYTES"),
        ({"RDV_PROXY_BODY_TIMEOUT_MS": "0"}, "RDV_PROXY_BODY_TIMEOUT_MS"),
        ({"RDV_PROXY_BODY_TIMEOUT_MS": "5s"}, "RDV_PROXY_BODY_TIMEOUT_MS"),
        ({"RDV_PROXY_FEEDBACK_LOOKBACK_DAYS": "-1"}, "RDV_PROXY_FEEDBACK_LOOKBACK_DAYS"),
        ({"RDV_PROXY_RESULTS_PARTITION": "-1"}, "RDV_PROXY_RESULTS_PARTITION"),
        ({"RDV_PROXY_RESULTS_PARTITION": "some"}, "RDV_PROXY_RESULTS_PARTITION"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        ProxySettings.from_env(env)


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown proxy setting"):
        ProxySettings.from_env({}, colour="red")


def test_settings_are_frozen() -> None:
    s = ProxySettings.from_env({})
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


def test_one_table_maps_errors_to_statuses() -> None:
    expected = {
        errors.BadJson: 400,
        errors.BadRequestId: 400,
        errors.UnknownService: 404,
        errors.UnknownRequest: 404,
        errors.RequestTimeout: 408,
        errors.DuplicateRequest: 409,
        errors.RequestIdConflict: 409,
        errors.AlreadyLabelled: 409,
        errors.BodyTooLarge: 413,
        errors.UnsupportedMediaType: 415,
        errors.SchemaViolation: 422,
        errors.LabelTypeMismatch: 422,
        errors.NoAnswer: 502,
        errors.KafkaUnavailable: 503,
        errors.Overloaded: 503,
        errors.ArchiveUnavailable: 503,
        errors.AnswerTimeout: 504,
    }
    for cls, status in expected.items():
        assert issubclass(cls, RendezvousError)
        assert errors.status_for(cls("x")) == status == cls.status
        assert errors.code_for(cls("x")) == cls.code
    assert errors.status_for(ValueError("x")) == 500
    assert errors.code_for(ValueError("x")) == "internal"
    assert errors.status_for(ConfigError("x")) == 500
    assert errors.headers_for(errors.Overloaded("x")) == {"retry-after": "1"}
    assert errors.headers_for(errors.RequestTimeout("x")) == {"connection": "close"}
    assert errors.headers_for(errors.KafkaUnavailable("x")) is None
    assert errors.headers_for(ValueError("x")) is None
    assert not hasattr(errors, "HTTP_STATUS")  # the classes are the only table


def test_cli_subcommand_builds_settings_from_stack_defaults_and_flags(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import argparse
    import os

    import rendezvous.proxy.server as server_module
    from rendezvous.proxy import add_cli
    from rendezvous.settings import StackSettings

    for name in list(os.environ):
        if name.startswith("RDV_PROXY_"):
            monkeypatch.delenv(name)
    import rendezvous.stack.kafka as kafka_module

    seen: list[ProxySettings] = []
    monkeypatch.setattr(server_module, "serve", seen.append)
    monkeypatch.setattr(kafka_module, "check_login", lambda conn: None)
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    conf = tmp_path / "services.yaml"
    args = parser.parse_args(["proxy", "--config", str(conf), "--replica-id", "east-1"])
    stack = StackSettings(home=tmp_path, kafka_port=19092, proxy_port=18000)
    assert args.func(args, stack) == 0
    [s] = seen
    assert s.bootstrap == "127.0.0.1:19092"
    assert s.port == 18000
    assert s.replica_id == "east-1"
    assert s.config == conf
    assert s.archive == stack.archive_dir  # feedback looks requests up in the stack's archive
    args = parser.parse_args(
        ["proxy", "--port", "9999", "--bootstrap", "k:1", "--archive", str(tmp_path / "a")]
    )
    args.func(args, stack)
    assert (seen[-1].port, seen[-1].bootstrap) == (9999, "k:1")
    assert seen[-1].archive == tmp_path / "a"


def test_without_a_file_the_proxy_serves_what_the_cluster_defines(tmp_path: Path) -> None:
    from rendezvous import catalog, control
    from rendezvous.proxy.server import defined_on_cluster

    log = control.MemoryControl()
    with pytest.raises(ConfigError, match="no service is defined on the cluster at .*--config"):
        defined_on_cluster(ProxySettings.from_env({}), log)
    for name in ("credit", "fraud"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(
            f"services:\n  {name}:\n    sla_ms: 80\n    models:\n"
            '      - {name: c, role: champion, callable: "udfs.zoo:constant"}\n'
            "    input:\n      x: double\n"
        )
        _, publish = control.define(
            log, catalog.from_file(path), source=str(path), issued_by="t", issued_ms=1
        )
        publish()
    served = defined_on_cluster(ProxySettings.from_env({}), log)
    assert sorted(served.services) == ["credit", "fraud"]
    assert served.service("fraud").sla_ms == 80


def test_kafka_connection_from_bootstrap_and_properties_file(tmp_path: Path) -> None:
    assert ProxySettings.from_env({}).kafka.client_config() == {
        "bootstrap.servers": "127.0.0.1:9092"
    }
    props = tmp_path / "proxy.properties"
    props.write_text("security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\n")
    s = ProxySettings.from_env(
        {"RDV_PROXY_KAFKA_PROPERTIES": str(props)}, defaults={"bootstrap": "b:9093"}
    )
    assert s.kafka.bootstrap == "b:9093"
    assert s.kafka.client_config()["security.protocol"] == "SASL_SSL"
    with pytest.raises(ConfigError, match="RDV_PROXY_KAFKA_PROPERTIES"):
        ProxySettings(kafka_properties=tmp_path / "missing")


def test_a_mistyped_value_from_code_names_the_setting_and_variable() -> None:
    with pytest.raises(ConfigError, match=r"proxy setting port='x'.*RDV_PROXY_PORT"):
        ProxySettings(port="x")  # type: ignore[arg-type]
