"""Named connection profiles, and the one-line errors for an address that is not what it
says."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from rendezvous import cli
from rendezvous.errors import ConfigError, StackError
from rendezvous.settings import StackSettings
from rendezvous.stack.flink import FlinkCluster

pytestmark = pytest.mark.unit

PROFILES = """
profiles:
  prod:
    kafka_bootstrap: kafka-1.internal:9093,kafka-2.internal:9093
    kafka_properties: secrets/kafka.properties
    flink_rest_url: http://flink-jm.internal:8081/
    mlflow_tracking_uri: https://mlflow.internal
  empty:
"""


@pytest.fixture
def env(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "kafka.properties").write_text(
        "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.username=svc\n"
        "sasl.password=hunter2\n"
    )
    (tmp_path / "profiles.yaml").write_text(PROFILES)
    return {"RDV_PROFILES": str(tmp_path / "profiles.yaml")}


def test_a_profile_sets_every_address_and_variables_still_override_one(env, tmp_path):
    s = StackSettings.from_env({**env, "RDV_PROFILE": "prod"})
    assert s.kafka_bootstrap == "kafka-1.internal:9093,kafka-2.internal:9093"
    assert s.kafka_properties == (tmp_path / "secrets" / "kafka.properties").resolve()
    assert s.flink_url == "http://flink-jm.internal:8081" and not s.flink_is_local
    assert s.mlflow_url == "https://mlflow.internal"
    assert "hunter2" not in repr(s.kafka) and "hunter2" not in s.kafka.describe()
    over = StackSettings.from_env({**env, "RDV_PROFILE": "prod", "RDV_KAFKA_BOOTSTRAP": "k:1"})
    assert over.kafka_bootstrap == "k:1" and over.flink_url == "http://flink-jm.internal:8081"
    local = StackSettings.from_env({**env, "RDV_PROFILE": "empty"})
    assert local.flink_is_local and local.flink_url == "http://127.0.0.1:8081"


def test_profile_errors_name_the_file_the_profile_and_the_key(env, tmp_path):
    with pytest.raises(ConfigError, match=r"no profile 'staging'; its profiles: empty, prod"):
        StackSettings.from_env({**env, "RDV_PROFILE": "staging"})
    (tmp_path / "profiles.yaml").write_text("profiles:\n  p:\n    flink_url: http://x\n")
    with pytest.raises(
        ConfigError, match=r"profiles\.p: unknown setting\(s\) flink_url; a profile sets"
    ):
        StackSettings.from_env({**env, "RDV_PROFILE": "p"})
    with pytest.raises(ConfigError, match="no profiles file at"):
        StackSettings.from_env({"RDV_PROFILES": str(tmp_path / "none.yaml"), "RDV_PROFILE": "p"})


def test_up_refuses_a_profile_with_a_cluster_of_ones_own(env, monkeypatch, capsys):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert cli.main(["--profile", "prod", "up"]) == 2
    assert (
        "`rendezvous up` starts the local stack; Flink here is http://flink-jm.internal:8081"
        in (capsys.readouterr().err)
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_flink_address_that_does_not_answer_fails_in_one_line_naming_the_setting(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"
    flink = FlinkCluster(StackSettings(home=tmp_path, flink_rest_url=url))
    t0 = time.monotonic()
    with pytest.raises(StackError) as failed:
        flink.check_reachable(timeout_s=5)
    assert time.monotonic() - t0 < 15
    message = failed.value.message
    assert message.startswith(f"no Flink cluster answers at {url} (") and "\n" not in message
    assert message.endswith("RDV_FLINK_REST_URL or the profile's flink_rest_url")


def test_an_address_that_is_not_flink_is_named_as_such(tmp_path):
    class NotFlink(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"hello": "world"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFlink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        flink = FlinkCluster(StackSettings(home=tmp_path, flink_rest_url=url))
        with pytest.raises(StackError, match=rf"^{url} answers, but not as a Flink REST API"):
            flink.check_reachable(timeout_s=5)
    finally:
        server.shutdown()
        server.server_close()
