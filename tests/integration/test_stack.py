"""The local stack end to end: Avro over Kafka, a Python job on Flink, the CLI, MLflow models."""

from __future__ import annotations

import re
import threading
import time
import uuid

import pytest

from rendezvous import cli, serde
from rendezvous.serde import Kind
from rendezvous.settings import REPO_ROOT
from tests.conftest import wait_until
from tests.integration.feed import wait_for_job_state

POLICY = {"preference": ["gbm", "lr"], "sla_ms": 100, "grace_ms": 2000, "version": 3}

# One record of every kind, with unions set both ways and every enum symbol used somewhere.
SAMPLES: dict[Kind, dict] = {
    Kind.REQUEST: {
        "request_id": "r-1",
        "service": "credit",
        "received_ms": 1_700_000_000_000,
        "deadline_ms": 1_700_000_000_100,
        "payload": '{"amount": 12.5}',
        "reply_to": "proxy-1",
    },
    Kind.MODEL_INPUT: {
        "request_id": "r-1",
        "service": "credit",
        "received_ms": 1_700_000_000_000,
        "deadline_ms": 1_700_000_000_100,
        "features": '{"amount": 12.5, "log_amount": 2.6}',
        "payload": '{"amount": 12.5}',
        "enriched_ms": 1_700_000_000_002,
        "reply_to": "proxy-1",
        "policy": POLICY,
        "error": None,
        "arm": "lr",
        "unsampled": ["shadow"],
    },
    Kind.SCORE: {
        "request_id": "r-1",
        "service": "credit",
        "model": "gbm",
        "version": "7",
        "role": "champion",
        "status": "error",
        "output": None,
        "error": "model not loaded",
        "received_ms": 1_700_000_000_000,
        "started_ms": 1_700_000_000_003,
        "scored_ms": 1_700_000_000_009,
        "deadline_ms": 1_700_000_000_050,
    },
    Kind.RESULT: {
        "request_id": "r-1",
        "service": "credit",
        "status": "ok",
        "model": "lr",
        "version": "2",
        "role": "canary",
        "output": "[0.25, 0.75]",
        "reason": "preferred model gbm failed",
        "error": None,
        "received_ms": 1_700_000_000_000,
        "deadline_ms": 1_700_000_000_100,
        "decided_ms": 1_700_000_000_011,
        "reply_to": "proxy-1",
        "arm": "lr",
    },
    Kind.CONTROL: {
        "service": "credit",
        "policy": POLICY,
        "issued_ms": 1_700_000_000_500,
        "issued_by": "tests",
        "split": {
            "key": "customer_id",
            "arms": [{"model": "gbm", "weight": 90.0}, {"model": "lr", "weight": 10.0}],
        },
        "registry": {
            "registered_model": "credit",
            "alias": "champion",
            "version": "4",
            "previous": "3",
            "moved": True,
        },
    },
    Kind.DECISION: {
        "request_id": "r-1",
        "service": "credit",
        "received_ms": 1_700_000_000_000,
        "deadline_ms": 1_700_000_000_100,
        "features": None,
        "policy_version": 3,
        "status": "ok",
        "model": "lr",
        "version": "2",
        "role": "canary",
        "reason": "preferred model gbm failed",
        "output": "[0.25, 0.75]",
        "decided_ms": 1_700_000_000_011,
        "latency_ms": 11,
        "scores": [
            {
                "model": "gbm",
                "version": "7",
                "role": "champion",
                "status": "error",
                "output": None,
                "error": "model not loaded",
                "latency_ms": 9,
                "late": False,
            },
            {
                "model": "lr",
                "version": "2",
                "role": "canary",
                "status": "ok",
                "output": "[0.25, 0.75]",
                "error": None,
                "latency_ms": 150,
                "late": True,
            },
        ],
        "arm": "lr",
        "unsampled": ["shadow"],
    },
    Kind.DEAD_LETTER: {
        "request_id": None,
        "service": "credit",
        "stage": "enrich",
        "error": "field 'amount': expected double, got 'x'",
        "record": b"\x00\xffraw bytes",
        "at_ms": 1_700_000_000_020,
    },
    Kind.TICK: {"source": "clock", "at_ms": 1_700_000_000_030},
    Kind.FEEDBACK: {
        "request_id": "r-1",
        "service": "credit",
        "label": '"default"',
        "labelled_ms": 1_700_086_400_000,
        "observed_ms": 1_700_080_000_000,
        "source": "collections",
    },
    Kind.SERVICE: {
        "service": "credit",
        "version": 3,
        "definition": '{"format": 3, "service": {"sla_ms": 100}, "tables": {}}',
        "source": "/srv/rendezvous/services.yaml",
        "issued_ms": 1_700_000_000_040,
        "issued_by": "ops@host",
    },
    Kind.API_KEY: {
        "key_id": "k1",
        "digest": "ab" * 32,
        "name": "collections team",
        "services": ["credit"],
        "created_ms": 1_700_000_000_050,
        "created_by": "ops@host",
        "revoked_ms": None,
        "revoked_by": None,
        "quota": {"requests": 1000, "period_ms": 3_600_000},
    },
    Kind.USAGE: {
        "key_id": "k1",
        "replica_id": "proxy-a",
        "window_start_ms": 1_699_999_200_000,
        "window_end_ms": 1_700_002_800_000,
        "count": 17,
        "at_ms": 1_700_000_000_060,
    },
}


for _item, _batch in serde.BATCH_OF.items():
    SAMPLES[_batch] = {"batch_id": "b-1", "items": [SAMPLES[_item], SAMPLES[_item]]}


def test_samples_cover_every_kind():
    assert set(SAMPLES) == set(Kind)


@pytest.mark.kafka
def test_every_kind_round_trips_through_kafka_with_keys_and_timestamps(
    unique_topic, kafka_producer, kafka_consumer
):
    from confluent_kafka import TIMESTAMP_CREATE_TIME

    topic = unique_topic("serde")
    sent = []
    for i, (kind, record) in enumerate(SAMPLES.items()):
        key, ts = f"key-{kind.name}".encode(), 1_700_000_001_000 + i
        kafka_producer.produce(topic, serde.encode(kind, record), key=key, timestamp=ts)
        sent.append((kind, record, key, ts))
    assert kafka_producer.flush(30) == 0

    got = kafka_consumer(topic, len(sent))
    for msg, (kind, record, key, ts) in zip(got, sent, strict=True):
        assert serde.decode(msg.value()) == (kind, record)
        assert serde.decode_as(kind, msg.value()) == record
        assert msg.key() == key
        assert msg.timestamp() == (TIMESTAMP_CREATE_TIME, ts)


def _job(stack, job_id: str) -> dict:
    return stack.flink.rest(f"/jobs/{job_id}", timeout_s=5)


@pytest.mark.kafka
@pytest.mark.flink
def test_smoke_job_relabels_ticks_on_flink(stack, unique_topic, kafka_producer, kafka_consumer):
    tin, tout = unique_topic("in"), unique_topic("out")
    # Timestamps of now: the broker deletes records older than the topic's retention (7 days)
    # at its next retention check, which can come before the job reads them.
    start = int(time.time() * 1000)
    ticks = [{"source": f"test-{i}", "at_ms": start + i} for i in range(5)]
    for tick in ticks:
        kafka_producer.produce(tin, serde.encode(Kind.TICK, tick), timestamp=tick["at_ms"])
    assert kafka_producer.flush(30) == 0

    # The embedded interpreter runs the Python operator inside the TaskManager JVM.
    cluster_conf = {e["key"]: e["value"] for e in stack.flink.rest("/jobmanager/config")}
    assert cluster_conf["python.execution-mode"] == "thread"

    group = f"test-smoke-{uuid.uuid4().hex[:10]}"
    job_id = stack.flink.submit(
        REPO_ROOT / "jobs" / "smoke.py",
        [
            "--bootstrap",
            stack.settings.kafka_bootstrap,
            "--input",
            tin,
            "--output",
            tout,
            "--group",
            group,
        ],
    )
    try:
        try:
            got = kafka_consumer(tout, len(ticks), timeout_s=120)
        except AssertionError as exc:  # say where the job was, and why
            job = _job(stack, job_id)
            failures = stack.flink.rest(f"/jobs/{job_id}/exceptions")["exceptionHistory"]
            placed = {
                v["name"]: [
                    t["taskmanager-id"]
                    for t in stack.flink.rest(f"/jobs/{job_id}/vertices/{v['id']}/taskmanagers")[
                        "taskmanagers"
                    ]
                ]
                for v in job["vertices"]
            }
            raise AssertionError(
                f"{exc}; job {job['state']}, vertices "
                f"{[(v['name'], v['status']) for v in job['vertices']]}, placed {placed}, "
                f"taskmanagers {stack.flink.rest('/taskmanagers')['taskmanagers']}, "
                f"exceptions {[e.get('exceptionName') for e in failures['entries']][:3]}"
            ) from None
        out = [serde.decode_as(Kind.TICK, msg.value()) for msg in got]
        assert out == [{**t, "source": t["source"] + "+flink"} for t in ticks]

        job = _job(stack, job_id)
        assert job["state"] == "RUNNING"
        assert job["name"] == f"rendezvous-smoke {tin}->{tout}"
        assert {v["status"] for v in job["vertices"]} == {"RUNNING"}
        plan = " | ".join(node["description"] for node in job["plan"]["nodes"])
        assert "smoke-in" in plan and "relabel" in plan and "smoke-out" in plan
        job_conf = stack.flink.rest(f"/jobs/{job_id}/config")
        assert job_conf["jid"] == job_id
    finally:
        stack.flink.cancel(job_id)
        wait_for_job_state(stack, job_id, "CANCELED")
    assert not [j for j in stack.flink.jobs() if j["jid"] == job_id and j["state"] == "RUNNING"]


@pytest.mark.kafka
@pytest.mark.flink
@pytest.mark.mlflow
def test_cli_status_and_a_second_up(stack, stack_env, monkeypatch, capsys):
    for name, value in stack_env.items():
        monkeypatch.setenv(name, value)
    s = stack.settings

    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    for name, address in (
        ("kafka", s.kafka_bootstrap),
        ("flink", s.flink_url),
        ("mlflow", s.mlflow_url),
    ):
        assert re.search(rf"^{name}\s+up\s+{re.escape(address)}\s+\d", out, re.M), out
    assert "Flink jobs" in out and "Topics" in out

    pids = {row.name: row.pids for row in stack.status()}
    t0 = time.monotonic()
    assert cli.main(["up"]) == 0
    took = time.monotonic() - t0
    out = capsys.readouterr().out
    for name in ("kafka", "flink", "mlflow"):
        assert re.search(rf"^\s+{name}\s+already running at ", out, re.M), out
    assert "starting ..." not in out
    assert {row.name: row.pids for row in stack.status()} == pids
    assert took < 20, f"a second `up` took {took:.1f}s; it should only probe"


@pytest.fixture
def mlflow_tracking(stack):
    """Point the MLflow client at the test server for one test."""
    import os

    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(stack.settings.mlflow_url)
    yield stack.settings.mlflow_url
    mlflow.set_tracking_uri(previous)


@pytest.mark.mlflow
def test_a_registered_model_loads_by_alias(mlflow_tracking):
    import mlflow
    import numpy as np
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    name = f"test-iris-{uuid.uuid4().hex[:10]}"
    mlflow.set_experiment(name)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=name,
            signature=infer_signature(X, model.predict(X)),
        )
    assert str(info.registered_model_version) == "1"
    client = MlflowClient()
    client.set_registered_model_alias(name, "champion", "1")
    assert client.get_model_version_by_alias(name, "champion").version == "1"

    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    np.testing.assert_array_equal(np.asarray(loaded.predict(X)), model.predict(X))


def test_up_after_a_lost_taskmanager_starts_only_it(stack, stack_env, monkeypatch, capsys):
    for name, value in stack_env.items():
        monkeypatch.setenv(name, value)
    flink = stack.flink
    jobmanager_pid = flink.jobmanager.pid()
    lost = flink.taskmanagers[-1]
    old_pid = lost.pid()
    assert lost.kill()
    assert cli.main(["up"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^\s+flink\s+starting {re.escape(lost.name)} \.\.\.$", out, re.M), out
    assert flink.jobmanager.pid() == jobmanager_pid  # jobs and their state were kept
    assert lost.pid() not in (None, old_pid)
    assert flink.rest("/overview")["taskmanagers"] == len(flink.taskmanagers)


def test_the_supervisor_starts_a_killed_taskmanager_on_its_own(stack):
    from rendezvous.stack.supervise import supervise

    flink = stack.flink
    jobmanager_pid = flink.jobmanager.pid()
    lost = flink.taskmanagers[0]
    old_pid = lost.pid()
    lines: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(
        target=supervise,
        args=(stack,),
        kwargs={"interval_s": 0.5, "stop": stop, "log": lines.append},
    )
    watcher.start()
    try:
        before = {tm["id"] for tm in flink.rest("/taskmanagers")["taskmanagers"]}
        assert lost.kill()
        wait_until(
            lambda: (
                lost.pid() not in (None, old_pid)
                and {tm["id"] for tm in flink.rest("/taskmanagers")["taskmanagers"]} - before
            ),
            timeout_s=90,
            what="the TaskManager started again to register with the JobManager",
        )
    finally:
        stop.set()
        watcher.join(30)
    assert not watcher.is_alive()
    assert flink.jobmanager.pid() == jobmanager_pid  # the jobs and their state were kept
    assert any(f"missing: {lost.name}; starting it again" in line for line in lines), lines
    assert any(f"repaired: {lost.name}" in line for line in lines), lines
