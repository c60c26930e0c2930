"""Exactly once through a crash: the TaskManager is killed (SIGKILL) while requests stream in,
started again, and every job recovers from its last checkpoint. Upstream jobs then re-deliver
what they had produced since that checkpoint; the archive still holds each request once in each
table, and every request still has its decision."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka import Producer

from rendezvous import deploy, serde, topics
from rendezvous.archive.sql import ArchiveSQL
from rendezvous.heartbeat import Heartbeat
from tests.integration.test_archive import warm_up

pytestmark = [pytest.mark.flink, pytest.mark.kafka]

SLA_MS, RATE, N = 300, 20, 400


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def completed_checkpoints(stack, job_id: str) -> int:
    return stack.flink.rest(f"/jobs/{job_id}/checkpoints")["counts"]["completed"]


def states(stack, job_ids) -> set[str]:
    return {stack.flink.rest(f"/jobs/{jid}")["state"] for jid in job_ids}


def decisions_in_kafka(bootstrap: str, prefix: str) -> int:
    """How many decision records for ``prefix``-requests the join wrote, re-deliveries included."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{prefix}",
                  "enable.auto.commit": False})  # fmt: skip
    try:
        parts = c.list_topics(topics.DECISIONS, timeout=10).topics[topics.DECISIONS].partitions
        ends = {p: c.get_watermark_offsets(TopicPartition(topics.DECISIONS, p), timeout=10)[1]
                for p in parts}  # fmt: skip
        c.assign([TopicPartition(topics.DECISIONS, p, 0) for p in parts])
        n, left = 0, {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error():
                    continue
                if m.offset() >= ends[m.partition()] - 1:
                    left.discard(m.partition())
                if serde.decode_as(serde.Kind.DECISION, m.value())["request_id"].startswith(prefix):
                    n += 1
        return n
    finally:
        c.close()


def test_a_killed_taskmanager_loses_and_duplicates_nothing(stack, tmp_path):
    name = "eo" + uuid.uuid4().hex[:6]
    path = tmp_path / "services.yaml"
    path.write_text(
        f"""
services:
  {name}:
    sla_ms: {SLA_MS}
    grace_ms: 1000
    models:
      - {{name: champion, role: champion, callable: "udfs.zoo:constant", params: {{value: 0.9}}}}
      - {{name: canary, role: canary, callable: "udfs.zoo:constant", params: {{value: 0.1}}}}
    input:
      x: double
"""
    )
    jobs = deploy.submit(stack, path, log=lambda _: None)
    producer = Producer({"bootstrap.servers": stack.settings.kafka_bootstrap, "linger.ms": 0})

    def send(rid: str, body: dict) -> None:
        t0 = now_ms()
        req = {"request_id": rid, "service": name, "received_ms": t0,
               "deadline_ms": t0 + SLA_MS, "payload": serde.to_json(body), "reply_to": "t"}  # fmt: skip
        producer.produce(topics.REQUESTS, serde.encode(serde.Kind.REQUEST, req),
                         key=rid.encode(), timestamp=t0)  # fmt: skip
        producer.poll(0)

    ids = [f"{name}-{i}" for i in range(N)]
    try:
        with Heartbeat(stack.settings.kafka_bootstrap, source="exactly-once-test"):
            warm_up(stack, name, lambda rid, body: (send(rid, body), producer.flush(10)))

            def stream() -> None:
                start = time.monotonic()
                for i, rid in enumerate(ids):
                    time.sleep(max(0.0, start + i / RATE - time.monotonic()))
                    send(rid, {"x": float(i)})
                producer.flush(30)

            sender = threading.Thread(target=stream, daemon=True)
            sender.start()
            # Kill once every job has committed a checkpoint with this stream under way, so
            # recovery restores state and offsets rather than starting over.
            archive = jobs["rendezvous-archive"]
            before = completed_checkpoints(stack, archive)
            deadline = time.monotonic() + 60
            while completed_checkpoints(stack, archive) <= before:
                assert time.monotonic() < deadline, "no checkpoint within 60 s"
                time.sleep(0.5)
            time.sleep(2.5)  # some records produced after the checkpoint: they will be replayed
            (taskmanager,) = stack.flink.taskmanagers
            assert taskmanager.kill()
            time.sleep(1)
            assert stack.flink.start_taskmanagers() == [taskmanager.name]
            sender.join(N / RATE + 60)
            assert not sender.is_alive()

            deadline = time.monotonic() + 240
            while True:  # recovery, catching up, then files commit on the next checkpoints
                with ArchiveSQL(stack.settings.archive_dir) as db:
                    counts = [
                        db.con.sql(
                            f"SELECT count(DISTINCT request_id) FROM {t} "
                            f"WHERE request_id LIKE '{name}-%'"
                        ).fetchall()[0][0]
                        for t in ("requests", "scores", "decisions")
                    ]
                if counts == [N, N, N]:
                    break
                assert time.monotonic() < deadline, (
                    f"requests, scores, decisions archived 240 s after the restart: {counts}; "
                    f"job states {states(stack, jobs.values())}"
                )
                time.sleep(3)
            time.sleep(12)  # one more checkpoint: a late duplicate would have landed by now
    finally:
        for jid in jobs.values():
            stack.flink.cancel(jid)

    # The crash happened and was recovered from ...
    failures = stack.flink.rest(f"/jobs/{jobs['rendezvous-archive']}/exceptions")
    assert failures["exceptionHistory"]["entries"], "the archive job never failed"
    # ... and the join, replaying from its checkpoint, wrote some decisions twice to Kafka,
    # which the archive dropped (checked below).
    assert decisions_in_kafka(stack.settings.kafka_bootstrap, f"{name}-") > N
    with ArchiveSQL(stack.settings.archive_dir) as db:
        for table, per_request in (("requests", 1), ("scores", 2), ("decisions", 1)):
            rows = db.con.sql(
                f"SELECT request_id, count(*) FROM {table} WHERE request_id LIKE '{name}-%' "
                "GROUP BY 1"
            ).fetchall()
            assert dict(rows) == {rid: per_request for rid in ids}, table
