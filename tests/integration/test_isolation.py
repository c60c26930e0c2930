"""Isolation between models: a model that computes in Python for tens of milliseconds per
request does not delay another model's scores.

Thread mode runs every scoring job in the TaskManager's one interpreter; with
``isolation: process`` a model runs in a Python process of its own. The champion's score latency
(``scored_ms - received_ms``) is compared with and without the heavy model beside it, in each
mode, on the same stack.
"""

from __future__ import annotations

import itertools
import statistics
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from rendezvous import deploy, serde, topics
from rendezvous.heartbeat import Heartbeat
from tests.integration.feed import RequestFeed, write_service

pytestmark = [pytest.mark.flink, pytest.mark.kafka]

# The SLA is far above the latencies measured: the enrich job sheds a request that reaches it
# after its deadline (it is never scored), and a stall of this busy machine must not take
# requests out of the comparison.
SLA_MS, RATE, N = 2000, 20, 200
HEAVY_CPU_MS = 35  # at 20 req/s: 70 % of one core, all of it in Python

CHAMPION = '{name: champion, role: champion, callable: "udfs.zoo:constant", params: {value: 1}}'
BACKSTOP = '{name: backstop, role: backstop, callable: "udfs.zoo:constant", params: {value: 0}}'


def heavy(isolation: str) -> str:
    return (
        '{name: heavy, role: challenger, callable: "udfs.zoo:busy", '
        f"params: {{cpu_ms: {HEAVY_CPU_MS}}}, isolation: {isolation}}}"
    )


# How each run's jobs ended (job name -> "stopped" or "cancelled"), for the test to check.
ENDED: dict[str, str] = {}


def champion_latencies(stack, tmp_path, label: str, models: list[str]) -> list[int]:
    """Run a fresh service with ``models`` at RATE for N requests; the champion's score
    latencies (ms) of those requests. The jobs are ended the way ``rendezvous cancel`` ends
    them, under load (the heavy model is mid-record most of the time)."""
    name = f"iso{label}{uuid.uuid4().hex[:4]}"
    path = write_service(
        tmp_path / f"{name}.yaml", name, sla_ms=SLA_MS, grace_ms=500, models=models
    )
    # Scores as the rendezvous job reads them: as soon as written, not when a checkpoint
    # commits their transaction (the archive's view; see test_exactly_once).
    scores = Consumer(
        {
            "bootstrap.servers": stack.settings.kafka_bootstrap,
            "group.id": f"iso-{name}",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
        }
    )
    parts = scores.list_topics(topics.SCORES, timeout=10).topics[topics.SCORES].partitions
    scores.assign([TopicPartition(topics.SCORES, p, -1) for p in parts])
    jobs = deploy.submit(stack, path, log=lambda _: None)
    feed = RequestFeed(stack.settings.kafka_bootstrap, name, SLA_MS)
    try:
        with Heartbeat(stack.settings.kafka, source=f"iso-{name}"):
            feed.warm_up()
            # Every model's job scores before the measured requests are sent. A job still
            # starting reads from the live end of the inputs when it is up, so requests keep
            # coming until it has scored one.
            models = {m.split("name: ", 1)[1].split(",", 1)[0] for m in models}
            seen: set[str] = set()
            deadline = time.monotonic() + 90
            for k in itertools.count():
                if seen == models:
                    break
                assert time.monotonic() < deadline, f"no scores yet from {models - seen}"
                feed.send(f"{name}-ready-{k}", {"x": 0.0})
                for m in scores.consume(500, 0.5):
                    if not m.error() and not serde.is_heartbeat(m.value()):
                        seen |= {s["model"] for s in serde.items_as(serde.Kind.SCORE, m.value())}
            ids = [f"{name}-{i}" for i in range(N)]
            start = time.monotonic()
            for i, rid in enumerate(ids):
                time.sleep(max(0.0, start + i / RATE - time.monotonic()))
                feed.send(rid, {"x": float(i)}, flush=False)
            feed.flush()
            wanted, got = set(ids), {}
            deadline = time.monotonic() + 60
            while wanted - set(got) and time.monotonic() < deadline:
                for m in scores.consume(500, 0.5):
                    if m.error() or serde.is_heartbeat(m.value()):
                        continue
                    for s in serde.items_as(serde.Kind.SCORE, m.value()):
                        if s["model"] == "champion" and s["request_id"] in wanted:
                            got[s["request_id"]] = s["scored_ms"] - s["received_ms"]
            assert set(got) == wanted, f"{len(wanted - set(got))} champion scores missing"
            return list(got.values())
    finally:
        feed.close()
        scores.close()
        ENDED.update(deploy.end_jobs(stack, jobs))


def test_a_cpu_heavy_model_in_its_own_process_does_not_delay_the_others(stack, tmp_path):
    alone = champion_latencies(stack, tmp_path, "a", [CHAMPION, BACKSTOP])
    beside_thread = champion_latencies(stack, tmp_path, "t", [CHAMPION, BACKSTOP, heavy("thread")])
    taskmanagers = {tm.name: tm.pid() for tm in stack.flink.taskmanagers}
    beside_process = champion_latencies(
        stack, tmp_path, "p", [CHAMPION, BACKSTOP, heavy("process")]
    )
    # The model in a Python process of its own was stopped with a savepoint, between records:
    # cancelling it mid-record brings down the whole TaskManager (a fatal error in Beam's
    # bundle bookkeeping), and every job on it.
    heavy_jobs = {k: v for k, v in ENDED.items() if k.startswith("rendezvous-score isop")}
    assert heavy_jobs and set(heavy_jobs.values()) == {"stopped"}, ENDED
    time.sleep(3)  # a TaskManager taken down by the Python worker's cleanup is gone by now
    assert {tm.name: tm.pid() for tm in stack.flink.taskmanagers} == taskmanagers
    assert stack.flink.rest("/overview")["taskmanagers"] == len(taskmanagers)
    med = {
        k: statistics.median(v)
        for k, v in {"alone": alone, "thread": beside_thread, "process": beside_process}.items()
    }
    p90 = {
        k: statistics.quantiles(v, n=10)[-1]
        for k, v in {"alone": alone, "thread": beside_thread, "process": beside_process}.items()
    }
    print(f"champion score latency, median / p90 ms: {med} / {p90}")
    # Beside the heavy model, in either mode, the champion scores about as fast as without it:
    # in its own process the heavy model has an interpreter of its own, and in the shared one
    # the interpreter hands its lock to a waiting thread every few milliseconds
    # (sys.getswitchinterval), so pure-Python work delays the others by a switch, not a call.
    assert med["process"] <= med["alone"] + 15, (med, p90)
    assert med["thread"] <= med["alone"] + 15, (med, p90)
