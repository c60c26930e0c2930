"""Exactly once through a crash: the TaskManager is killed (SIGKILL) while requests stream in,
started again, and every job recovers from its last checkpoint. Upstream jobs then re-deliver
what they had produced since that checkpoint, but in new transactions (the old ones are
aborted); the archive, reading committed records only, still holds each request once in each
table, and every request still has its decision."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from rendezvous import config, control, deploy, serde, topics
from rendezvous.archive.sql import ArchiveSQL
from rendezvous.clock import now_ms
from rendezvous.heartbeat import Heartbeat
from tests.integration.feed import RequestFeed, wait_archived, write_service

pytestmark = [pytest.mark.flink, pytest.mark.kafka]

SLA_MS, RATE, N = 300, 20, 800


def completed_checkpoints(stack, job_id: str) -> int:
    return stack.flink.rest(f"/jobs/{job_id}/checkpoints")["counts"]["completed"]


def decisions_in_kafka(bootstrap: str, prefix: str, *, isolation: str) -> int:
    """How many decision records for ``prefix``-requests a reader at ``isolation``
    (read_committed, as the archive reads; read_uncommitted, re-deliveries included) finds."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"count-{prefix}-{isolation}",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    try:
        parts = c.list_topics(topics.DECISIONS, timeout=10).topics[topics.DECISIONS].partitions
        ends = {
            p: c.get_watermark_offsets(TopicPartition(topics.DECISIONS, p), timeout=10)[1]
            for p in parts
        }
        c.assign([TopicPartition(topics.DECISIONS, p, 0) for p in parts])
        n, left = 0, {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error():
                    continue
                if m.offset() >= ends[m.partition()] - 1:
                    left.discard(m.partition())
                try:
                    decisions = serde.items_as(serde.Kind.DECISION, m.value())
                except serde.SerdeError:
                    continue  # not a decision batch (test_archive writes such stray values)
                n += sum(d["request_id"].startswith(prefix) for d in decisions)
        return n
    finally:
        c.close()


def test_a_killed_taskmanager_loses_and_duplicates_nothing(stack, tmp_path):
    name = "eo" + uuid.uuid4().hex[:6]
    path = write_service(
        tmp_path / "services.yaml",
        name,
        sla_ms=SLA_MS,
        grace_ms=1000,
        models=[
            '{name: champion, role: champion, callable: "udfs.zoo:constant", params: {value: 0.9}}',
            '{name: canary, role: canary, callable: "udfs.zoo:constant", params: {value: 0.1}}',
        ],
    )
    jobs = deploy.submit(stack, path, log=lambda _: None)
    # A promotion before the crash: the restored enrich job resumes its control source after
    # this record, and must still apply it.
    cfg = config.load(path)
    promoted = control.promote(
        control.KafkaControl(stack.settings.kafka),
        cfg,
        name,
        "canary",
        issued_by="t",
        issued_ms=now_ms(),
    )
    feed = RequestFeed(stack.settings.kafka_bootstrap, name, SLA_MS)
    ids = [f"{name}-{i}" for i in range(N)]
    try:
        with Heartbeat(stack.settings.kafka, source="exactly-once-test"):
            feed.warm_up()

            def stream() -> None:
                start = time.monotonic()
                for i, rid in enumerate(ids):
                    time.sleep(max(0.0, start + i / RATE - time.monotonic()))
                    feed.send(rid, {"x": float(i)}, flush=False)
                feed.flush()

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
            # Every TaskManager at once (a worker machine lost), so that every job, the join
            # and the archive among them, restarts from its checkpoint.
            for taskmanager in stack.flink.taskmanagers:
                assert taskmanager.kill()
            time.sleep(1)
            assert stack.flink.start_taskmanagers() == [tm.name for tm in stack.flink.taskmanagers]
            sender.join(N / RATE + 60)
            assert not sender.is_alive()
            # recovery, catching up, then files commit on the next checkpoints
            # Requests that reached the enrich job after their deadline (those sent while the
            # TaskManager was down) are decided as deadline_exceeded without being scored.
            wait_archived(stack.settings.archive_dir, f"{name}-", [N, None, N], timeout_s=240)
            time.sleep(12)  # one more checkpoint: a late duplicate would have landed by now
    finally:
        feed.close()
        for jid in jobs.values():
            stack.flink.cancel(jid)

    # The crash happened and was recovered from ...
    failures = stack.flink.rest(f"/jobs/{jobs['rendezvous-archive']}/exceptions")
    assert failures["exceptionHistory"]["entries"], "the archive job never failed"
    # ... and the join, replaying from its checkpoint, wrote some decisions twice to Kafka: the
    # first copies in a transaction that was aborted, so a committed reader (the archive) finds
    # each decision once.
    bootstrap = stack.settings.kafka_bootstrap
    assert decisions_in_kafka(bootstrap, f"{name}-", isolation="read_uncommitted") > N
    assert decisions_in_kafka(bootstrap, f"{name}-", isolation="read_committed") == N
    with ArchiveSQL(stack.settings.archive_dir) as db:
        for table in ("requests", "decisions"):
            rows = db.con.sql(
                f"SELECT request_id, count(*) FROM {table} WHERE request_id LIKE '{name}-%' "
                "GROUP BY 1"
            ).fetchall()
            assert dict(rows) == {rid: 1 for rid in ids}, table
        # Two scores for every request that was scored, none for one that expired unscored.
        rows = db.con.sql(
            f"SELECT d.request_id, d.reason, count(s.model) FROM decisions d LEFT JOIN scores s "
            f"USING (request_id) WHERE d.request_id LIKE '{name}-%' GROUP BY 1, 2"
        ).fetchall()
        expected = {
            rid: 0 if reason.startswith("deadline_exceeded") else 2 for rid, reason, _ in rows
        }
        assert {rid: n for rid, _, n in rows} == expected
        # Requests sent while the jobs were down expired; the stream runs on long enough that
        # those of its last 2 s, sent after the recovery, were all scored.
        expired = [i for i, rid in enumerate(ids) if expected[rid] == 0]
        assert all(expected[rid] == 2 for rid in ids[-2 * RATE :]), f"expired: {expired}"
        # The promotion held through the recovery: every request was enriched under it.
        rows = db.con.sql(
            f"SELECT policy_version, model, count(*) FROM decisions WHERE request_id LIKE "
            f"'{name}-%' AND reason = 'preferred' GROUP BY 1, 2"
        ).fetchall()
        assert {(v, m) for v, m, _ in rows} == {(promoted.version, "canary")}, rows
        print(f"{sum(n == 0 for n in expected.values())} of {N} expired during the recovery")
