"""API keys on a real broker: the key log read and followed, the stack's compacted topic, and
proxy replicas (real processes) that follow `rendezvous keys` and keep the keys over a restart.

The proxies take async requests only (202 needs no stream job), so no Flink job is submitted.
Each test makes keys of its own on ``rdv.api-keys`` (or a topic of its own), and its own service.
"""

from __future__ import annotations

import subprocess
import threading
import uuid

import httpx
import pytest

from rendezvous import cli, topics
from rendezvous.access import keys
from rendezvous.access.log import KafkaKeyLog
from rendezvous.clock import now_ms
from tests import proxy_process
from tests.conftest import free_port, wait_until
from tests.integration.feed import write_service
from tests.proxy_process import stop

pytestmark = pytest.mark.kafka

MODELS = ('{name: m, role: champion, callable: "udfs.zoo:constant"}',)


def test_keys_are_read_back_and_followed_as_they_change(stack, unique_topic):
    log = KafkaKeyLog(stack.settings.kafka, topic=unique_topic("keys"))
    assert log.read() == {}
    _, first = keys.new_key("a", ["credit"], created_by="t@h", created_ms=now_ms())
    _, second = keys.new_key("b", ["*"], created_by="t@h", created_ms=now_ms())
    log.publish(first)
    log.publish(second)
    assert log.read() == {first["key_id"]: first, second["key_id"]: second}

    seen: dict[str, dict | None] = {}
    caught_up = threading.Event()
    problems: list[str] = []

    def on_record(key_id, record):
        seen[key_id] = record

    following = log.follow(on_record, caught_up.set, problems.append)
    try:
        assert caught_up.wait(30), f"the follower did not catch up within 30 s: {problems}"
        # everything there at the start was passed on before the follower said so
        assert seen == {first["key_id"]: first, second["key_id"]: second}
        gone = keys.revoked(first, revoked_by="t@h", revoked_ms=now_ms())
        log.publish(gone)
        wait_until(
            lambda: (seen.get(first["key_id"]) or {}).get("revoked_ms") is not None,
            timeout_s=10,
            what="the follower to see the revocation",
        )
    finally:
        following.close()
    assert log.read()[first["key_id"]] == gone


def test_an_empty_key_topic_is_caught_up_with_at_once(stack, unique_topic):
    log = KafkaKeyLog(stack.settings.kafka, topic=unique_topic("keys"))
    caught_up = threading.Event()
    following = log.follow(lambda *_: None, caught_up.set, lambda _: None)
    try:
        assert caught_up.wait(30)
    finally:
        following.close()


def test_the_stacks_key_and_usage_topics_are_compacted_with_one_partition(stack):
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient(stack.settings.kafka.client_config())
    meta = admin.list_topics(topics.API_KEYS, timeout=10).topics[topics.API_KEYS]
    assert meta.error is None and len(meta.partitions) == 1
    resource = ConfigResource(ConfigResource.Type.TOPIC, topics.API_KEYS)
    configs = admin.describe_configs([resource])[resource].result(timeout=30)
    assert configs["cleanup.policy"].value == "compact"
    meta = admin.list_topics(topics.USAGE, timeout=10).topics[topics.USAGE]
    assert meta.error is None and len(meta.partitions) == 1
    resource = ConfigResource(ConfigResource.Type.TOPIC, topics.USAGE)
    configs = admin.describe_configs([resource])[resource].result(timeout=30)
    assert configs["cleanup.policy"].value == "compact,delete"
    assert int(configs["retention.ms"].value) > topics.MAX_QUOTA_PERIOD_MS


# ---- proxy replicas ------------------------------------------------------------------------
def start_proxy(stack, config_path, port: int, replica: str) -> subprocess.Popen:
    # ready: Kafka reachable and the API keys read to their end
    return proxy_process.start_proxy(
        stack, config_path, port, replica, env={"RDV_PROXY_REQUIRE_API_KEYS": "1"}
    )


def submit(url: str, service: str, key: str | None) -> httpx.Response:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return httpx.post(
        f"{url}/v1/services/{service}/requests", json={"x": 1.0}, headers=headers, timeout=10
    )


def keys_cli(capsys, *argv: str) -> str:
    capsys.readouterr()
    assert cli.main(["keys", *argv]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_replicas_follow_keys_made_and_revoked_and_keep_them_over_a_restart(
    stack, stack_env, monkeypatch, capsys, tmp_path
):
    for name, value in stack_env.items():
        monkeypatch.setenv(name, value)  # `rendezvous keys` talks to the stack under test
    service, other = "keys" + uuid.uuid4().hex[:6], "other" + uuid.uuid4().hex[:6]
    path = write_service(
        tmp_path / "services.yaml", service, sla_ms=200, grace_ms=500, models=MODELS
    )
    early = keys_cli(capsys, "create", "--name", "early", "--service", service).strip()
    elsewhere = keys_cli(capsys, "create", "--name", "elsewhere", "--service", other).strip()

    ports = [free_port(), free_port()]
    procs = [
        start_proxy(stack, path, p, f"keys-{i}-{uuid.uuid4().hex[:4]}") for i, p in enumerate(ports)
    ]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url in urls:
            assert submit(url, service, early).status_code == 202
            r = submit(url, service, None)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            r = submit(url, service, elsewhere)
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
            assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200  # open

        # A key made while the replicas run reaches both.
        late = keys_cli(capsys, "create", "--name", "late", "--service", service).strip()
        for url in urls:
            wait_until(
                lambda url=url: submit(url, service, late).status_code == 202,
                timeout_s=10,
                what=f"replica {url} to take a key made after it started",
            )
        listed = keys_cli(capsys, "list")
        assert keys.key_id_of(late) in listed and late not in listed

        # A revoked key is refused by both, soon.
        keys_cli(capsys, "revoke", keys.key_id_of(early))
        for url in urls:
            wait_until(
                lambda url=url: submit(url, service, early).status_code == 401,
                timeout_s=10,
                what=f"replica {url} to refuse a revoked key",
            )
        assert "revoked" in submit(urls[0], service, early).json()["error"]["message"]

        # A restarted replica reads every key again before it says it is ready.
        stop(procs[0])
        procs[0] = start_proxy(stack, path, ports[0], f"keys-0-{uuid.uuid4().hex[:4]}")
        assert submit(urls[0], service, late).status_code == 202
        assert submit(urls[0], service, early).status_code == 401
    finally:
        for proc in procs:
            stop(proc)


def usage_of(url: str, key: str) -> dict:
    r = httpx.get(f"{url}/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_quota_holds_across_replicas_and_over_a_restart(
    stack, stack_env, monkeypatch, capsys, tmp_path
):
    for name, value in stack_env.items():
        monkeypatch.setenv(name, value)
    service = "quota" + uuid.uuid4().hex[:6]
    path = write_service(
        tmp_path / "services.yaml", service, sla_ms=200, grace_ms=500, models=MODELS
    )
    # 31-day windows: a test that straddles a window's end is a few seconds in a month
    argv = ["create", "--name", "quota", "--service", service, "--quota", "6", "--per", "31d"]
    key = keys_cli(capsys, *argv).strip()
    ports = [free_port(), free_port()]
    procs = [
        start_proxy(stack, path, p, f"quota-{i}-{uuid.uuid4().hex[:4]}")
        for i, p in enumerate(ports)
    ]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for remaining in ("5", "4", "3", "2"):
            r = submit(urls[0], service, key)
            assert r.status_code == 202, r.text
            assert r.headers["x-ratelimit-remaining"] == remaining
        # The other replica sums in the first one's count once it is published (every second).
        wait_until(
            lambda: usage_of(urls[1], key)["quota"]["used"] == 4,
            timeout_s=15,
            what="replica 1 to read replica 0's count",
        )
        assert [submit(urls[1], service, key).status_code for _ in range(2)] == [202, 202]
        r = submit(urls[1], service, key)
        assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"
        assert int(r.headers["retry-after"]) >= 1 and r.headers["x-ratelimit-remaining"] == "0"
        wait_until(
            lambda: usage_of(urls[0], key)["quota"]["used"] == 6,
            timeout_s=15,
            what="replica 0 to read replica 1's count",
        )
        r = submit(urls[0], service, key)
        assert r.status_code == 429 and r.headers["x-ratelimit-remaining"] == "0"

        # A replica started again (under a new id) reads every count of the window back.
        stop(procs[0])
        procs[0] = start_proxy(stack, path, ports[0], f"quota-0-{uuid.uuid4().hex[:4]}")
        assert usage_of(urls[0], key)["quota"]["used"] == 6
        assert submit(urls[0], service, key).status_code == 429
    finally:
        for proc in procs:
            stop(proc)


WEIGHTED_MODELS = (
    '{name: m, role: champion, callable: "udfs.zoo:constant", quota_weight: 3}',
    '{name: b, role: backstop, callable: "udfs.zoo:constant"}',
    # scores a share of the customers; a request without one is not sampled, and not charged
    '{name: big, role: challenger, callable: "udfs.zoo:constant", quota_weight: 10, '
    "sample: 0.5, sample_key: customer}",
)


def test_a_weighted_quota_is_used_up_after_budget_over_cost_requests_across_replicas(
    stack, stack_env, monkeypatch, capsys, tmp_path
):
    for name, value in stack_env.items():
        monkeypatch.setenv(name, value)
    service = "weighted" + uuid.uuid4().hex[:6]
    path = write_service(
        tmp_path / "services.yaml",
        service,
        sla_ms=200,
        grace_ms=500,
        models=WEIGHTED_MODELS,
        inputs=("x: double", "customer: {type: string, required: false}"),
    )
    # a request without a customer costs m 3 + b 1 = 4 tokens: 14 tokens are 3 requests
    argv = ["create", "--name", "weighted", "--service", service, "--quota", "14", "--per", "31d"]
    capsys.readouterr()
    assert cli.main(["keys", *argv, "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert "14 tokens per 31d" in err
    ports = [free_port(), free_port()]
    procs = [
        start_proxy(stack, path, p, f"weighted-{i}-{uuid.uuid4().hex[:4]}")
        for i, p in enumerate(ports)
    ]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for remaining in ("10", "6"):
            r = submit(urls[0], service, key)
            assert r.status_code == 202, r.text
            assert r.headers["x-ratelimit-cost"] == "4"
            assert r.headers["x-ratelimit-remaining"] == remaining
        wait_until(
            lambda: usage_of(urls[1], key)["quota"]["used"] == 8,
            timeout_s=15,
            what="replica 1 to read replica 0's tokens",
        )
        usage = usage_of(urls[1], key)
        assert usage["quota"]["unit"] == "tokens" and usage["costs"] == {service: 14}
        r = submit(urls[1], service, key)
        assert r.status_code == 202 and r.headers["x-ratelimit-remaining"] == "2"
        # 4 tokens do not fit in 2: refused, and nothing counted
        r = submit(urls[1], service, key)
        assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"
        assert r.headers["x-ratelimit-remaining"] == "2" and r.headers["x-ratelimit-cost"] == "4"
        assert "costs 4 tokens" in r.json()["error"]["message"]
        wait_until(
            lambda: usage_of(urls[0], key)["quota"]["used"] == 12,
            timeout_s=15,
            what="replica 0 to read replica 1's tokens",
        )
        r = submit(urls[0], service, key)
        assert r.status_code == 429 and r.headers["x-ratelimit-remaining"] == "2"
        assert usage_of(urls[0], key)["quota"]["used"] == 12
        listed = keys_cli(capsys, "list", "--config", str(path))
        assert "14 tokens per 31d" in listed
    finally:
        for proc in procs:
            stop(proc)
