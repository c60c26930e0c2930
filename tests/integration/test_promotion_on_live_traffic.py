"""Promotion on evidence end to end: traffic through the proxy and every job, the archive job's
Parquet, then `rendezvous promote --if` refusing an impossible condition and accepting a loose
one, and `rendezvous replay-policy` deciding the archived requests again.

One service of two models that always answer the same label (the champion class 1 with 0.8,
the challenger, a shadow, class 1 with 0.7), so agreement is 1 and every figure is known.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

import httpx
import pytest

from rendezvous import control, deploy
from rendezvous.archive.sql import ArchiveSQL
from tests.integration.feed import write_service
from tests.integration.test_feedback import archived
from tests.integration.test_http_e2e import free_port, start_proxy

pytestmark = [pytest.mark.e2e, pytest.mark.flink, pytest.mark.kafka]

SLA_MS, GRACE_MS, N = 5000, 2000, 8  # a generous SLA: the test machine is shared
MODELS = (
    '{name: champion, role: champion, callable: "udfs.zoo:constant", '
    "params: {value: {label: 1, probability: 0.8}}}",
    '{name: challenger, role: challenger, callable: "udfs.zoo:constant", '
    "params: {value: {label: 1, probability: 0.7}}}",
)


@pytest.fixture(scope="module")
def served(stack, tmp_path_factory):
    """A fresh service's jobs, a proxy, and N answered requests archived (decisions and both
    models' scores) after the warm-up; yields the name, the file and the time traffic began."""
    name = "pe" + uuid.uuid4().hex[:6]
    path = write_service(
        tmp_path_factory.mktemp("pe") / "services.yaml",
        name,
        sla_ms=SLA_MS,
        grace_ms=GRACE_MS,
        models=MODELS,
    )
    jobs = deploy.submit(stack, path, log=lambda _: None)
    port = free_port()
    proc = start_proxy(stack, path, port, f"pe-{name}")
    url = f"http://127.0.0.1:{port}/v1/services/{name}/score"
    try:
        deadline = time.monotonic() + 180
        while True:
            r = httpx.post(url, json={"x": 1.0}, timeout=10)
            if r.status_code == 200 and r.json()["model"] == "champion":
                break
            assert time.monotonic() < deadline, f"no champion answer while warming up: {r.text}"
            time.sleep(0.5)
        began = datetime.now(timezone.utc)
        prefix = f"{name}-q"
        for i in range(N):
            r = send(url, f"{prefix}{i}")
            # On a busy machine an answer can miss its deadline: the archive still has it.
            assert r.status_code in (200, 504), r.text
        root = stack.settings.archive_dir
        archived(root, "decisions", prefix, N)
        archived(root, "scores", prefix, 2 * N)
        yield name, path, began
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for jid in jobs.values():
            stack.flink.cancel(jid)


def send(url: str, rid: str, *, timeout_s: float = 120) -> httpx.Response:
    """POST a request; while the proxy's Kafka client is not ready (503 before anything was
    sent, on a machine too busy for its metadata requests) send it again, bounded."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = httpx.post(url, json={"x": 2.0}, headers={"X-Request-ID": rid}, timeout=30)
        if r.status_code != 503 or "Kafka is not ready" not in r.text:
            return r
        assert time.monotonic() < deadline, r.text
        time.sleep(1)


def rendezvous(stack_env, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rendezvous.cli", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **stack_env},
        timeout=300,
    )


def first_choice(stack, path, name: str) -> str:
    from rendezvous import config

    cfg = config.load(path)
    return control.current_policy(control.KafkaControl(stack.settings.kafka), cfg, name).preference[
        0
    ]


def test_promote_if_refuses_an_impossible_condition_and_accepts_a_loose_one(
    stack, stack_env, served
):
    name, path, _ = served
    refused = rendezvous(
        stack_env,
        "promote",
        name,
        "challenger",
        "--if",
        "agreement>=1.01 and n>=1",
        "--window",
        "1h",
        "--config",
        str(path),
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"error: challenger not promoted in {name}: 1 of 2 clause(s) fail" in refused.stderr
    assert "agreement >= 1.01 (is 1.0000)" in refused.stderr
    assert "against champion, the current first choice" in refused.stdout
    assert first_choice(stack, path, name) == "champion"

    accepted = rendezvous(
        stack_env,
        "promote",
        name,
        "challenger",
        "--if",
        f"agreement>=0.99 and n>={N} and error_rate<=0",
        "--window",
        "1h",
        "--config",
        str(path),
    )
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "every clause passes: promoting challenger" in accepted.stdout
    assert first_choice(stack, path, name) == "challenger"


def test_replay_policy_over_the_archived_traffic(stack, stack_env, served):
    name, _, began = served
    done = rendezvous(
        stack_env,
        "replay-policy",
        "--service",
        name,
        "--preference",
        "challenger,champion",
        "--since",
        began.strftime("%Y-%m-%dT%H:%M:%S.%f"),
        "--json",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    # What each request allows, from the archived scores under the same deadlines: the
    # challenger answers where its score was ok in time (A); the champion answered where its
    # was (C). The model changes on A; the kind of reason on A xor C (preferred -> no_answer
    # or fallback, no_answer -> preferred).
    with ArchiveSQL(stack.settings.archive_dir) as db:
        frame = db.frame(
            "SELECT request_id, model, (status = 'ok' AND NOT late)::INT AS in_time FROM scores "
            "WHERE service = ? AND received_ms >= ?",
            [name, int(began.timestamp() * 1000)],
        )
    in_time = frame.pivot_table(index="request_id", columns="model", values="in_time").fillna(0)
    a, c = in_time["challenger"].astype(bool), in_time["champion"].astype(bool)
    assert doc["decisions"] == N and len(in_time) == N
    assert doc["model_changed"] == int(a.sum())
    assert doc["reason_changed"] == int((a ^ c).sum())
