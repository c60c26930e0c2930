"""The enrich and rendezvous jobs on a real Flink cluster, with scores written by the test.

The scores come from the test so that each case controls exactly when (and whether) each
model answers; the scoring jobs have tests of their own.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from rendezvous import deploy, serde, topics
from rendezvous.clock import now_ms
from rendezvous.heartbeat import Heartbeat
from rendezvous.kafka import KafkaConnection

pytestmark = [pytest.mark.flink, pytest.mark.kafka]

SLA_MS, GRACE_MS = 300, 500


@pytest.fixture(scope="module")
def service(stack, tmp_path_factory):
    """A fresh service name, its configuration, and the enrich + join jobs running for it."""
    name = "svc" + uuid.uuid4().hex[:8]
    path = tmp_path_factory.mktemp("cfg") / "services.yaml"
    path.write_text(
        f"""
services:
  {name}:
    sla_ms: {SLA_MS}
    grace_ms: {GRACE_MS}
    models:
      - {{name: champ, role: champion, callable: "udfs.zoo:constant"}}
      - {{name: canary, role: canary, callable: "udfs.zoo:constant"}}
      - {{name: backstop, role: backstop, callable: "udfs.zoo:constant"}}
    input:
      x: double
    enrich:
      - {{op: log1p, field: x, to: log_x}}
"""
    )
    jobs = deploy.submit(stack, path, only=["enrich", "join"], log=lambda _: None)
    yield name, path
    for jid in jobs.values():
        stack.flink.cancel(jid)


class Harness:
    def __init__(self, bootstrap: str, service: str):
        self.service = service
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        self.results = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
        self.decisions = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
        for consumer, topic in ((self.results, topics.RESULTS), (self.decisions, topics.DECISIONS)):
            parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            consumer.assign([TopicPartition(topic, p, -1) for p in parts])  # from the end
        # What the proxy does in production: carry time forward while nothing else does.
        self.heartbeat = Heartbeat(KafkaConnection(bootstrap), source="test")

    def request(self, x: float = 3.0) -> dict:
        rid, t0 = uuid.uuid4().hex, now_ms()
        req = {
            "request_id": rid,
            "service": self.service,
            "received_ms": t0,
            "deadline_ms": t0 + SLA_MS,
            "payload": serde.to_json({"x": x}),
            "reply_to": "test",
        }
        self.producer.produce(
            topics.REQUESTS, serde.encode(serde.Kind.REQUEST, req), key=rid.encode(), timestamp=t0
        )
        self.producer.flush(5)
        return req

    def score(self, req: dict, model: str, role: str, *, status: str = "ok", output: str = "0.5"):
        t = now_ms()
        rec = {
            "request_id": req["request_id"],
            "service": self.service,
            "model": model,
            "version": "1",
            "role": role,
            "status": status,
            "output": output if status == "ok" else None,
            "error": None if status == "ok" else "boom",
            "received_ms": req["received_ms"],
            "deadline_ms": req["deadline_ms"],
            "started_ms": t,
            "scored_ms": t,
        }
        self.producer.produce(
            topics.SCORES, serde.encode(serde.Kind.SCORE, rec), key=req["request_id"].encode()
        )
        self.producer.flush(5)

    def wait(self, consumer, kind, request_id: str, timeout_s: float = 30.0) -> tuple[dict, int]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            for record in serde.items_as(kind, msg.value()):
                if record["request_id"] == request_id:
                    return record, now_ms()
        raise AssertionError(f"no {kind.name} for {request_id} within {timeout_s}s")

    def result(self, req):
        return self.wait(self.results, serde.Kind.RESULT, req["request_id"])

    def decision(self, req):
        return self.wait(self.decisions, serde.Kind.DECISION, req["request_id"])[0]

    def close(self):
        self.heartbeat.close()
        self.producer.flush(5)
        self.results.close()
        self.decisions.close()


@pytest.fixture(scope="module")
def harness(stack, service):
    h = Harness(stack.settings.kafka_bootstrap, service[0])
    # Warm up: the first answer proves the jobs read from the current end of the topics.
    deadline = time.monotonic() + 60
    while True:
        req = h.request()
        h.score(req, "champ", "champion")
        try:
            h.wait(h.results, serde.Kind.RESULT, req["request_id"], timeout_s=5)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
    yield h
    h.close()


def test_champion_in_time_answers_before_the_deadline(harness):
    req = harness.request()
    harness.score(req, "canary", "canary")
    harness.score(req, "champ", "champion", output='{"p": 0.9}')
    result, at = harness.result(req)
    assert (result["status"], result["model"], result["reason"]) == ("ok", "champ", "preferred")
    assert serde.from_json(result["output"]) == {"p": 0.9}
    assert at < req["deadline_ms"] + 50  # well before a fallback could have fired


def test_late_champion_falls_back_by_the_deadline_and_is_in_the_decision(harness):
    req = harness.request()
    harness.score(req, "canary", "canary")
    result, at = harness.result(req)
    assert (result["model"], result["reason"]) == ("canary", "fallback: champ late")
    assert result["decided_ms"] == req["deadline_ms"]
    harness.score(req, "champ", "champion")  # late, inside the grace period
    decision = harness.decision(req)
    late = {s["model"]: s["late"] for s in decision["scores"]}
    assert late == {"canary": False, "champ": True}
    assert decision["model"] == "canary" and decision["policy_version"] == 0
    features = serde.from_json(decision["features"])
    assert features["x"] == 3.0 and abs(features["log_x"] - 1.3862943611198906) < 1e-12


def test_failing_champion_falls_back_to_the_backstop(harness):
    req = harness.request()
    harness.score(req, "champ", "champion", status="error")
    harness.score(req, "canary", "canary", status="error")
    harness.score(req, "backstop", "backstop")
    result, at = harness.result(req)
    assert (result["model"], result["reason"]) == (
        "backstop",
        "backstop: champ failed, canary failed",
    )
    assert at < req["deadline_ms"]  # everyone before it failed: no need to wait


def test_lone_request_with_no_scores_gets_an_error_by_its_deadline(harness):
    req = harness.request()
    result, at = harness.result(req)
    assert result["status"] == "error" and result["reason"].startswith("no_answer")
    assert result["decided_ms"] == req["deadline_ms"]


def test_enrichment_failure_is_answered_and_dead_lettered(harness, stack):
    req = harness.request(x=-5.0)  # log1p of a value below -1 cannot be computed
    result, _ = harness.result(req)
    assert result["status"] == "error" and "log1p" in result["reason"]


def test_promotion_changes_the_answer_without_a_restart(harness, service, stack):
    from rendezvous import config, control

    cfg = config.load(service[1])
    log = control.KafkaControl(stack.settings.kafka)
    policy = control.promote(log, cfg, service[0], "canary", issued_by="tests", issued_ms=now_ms())
    assert policy.preference[0] == "canary" and policy.version == 1
    deadline = time.monotonic() + 30
    while True:  # the control record reaches the enrich job asynchronously
        req = harness.request()
        harness.score(req, "champ", "champion")
        harness.score(req, "canary", "canary")
        result, _ = harness.result(req)
        if result["model"] == "canary":
            assert result["reason"] == "preferred"
            break
        assert time.monotonic() < deadline, "the promotion never took effect"
    assert harness.decision(req)["policy_version"] == 1
