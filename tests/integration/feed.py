"""Helpers of the integration tests: a configuration file for a fresh service, a producer of
REQUEST records for it (for the job tests that bypass the proxy), and waits on the cluster."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from rendezvous import serde, topics
from rendezvous.clock import now_ms
from tests.conftest import wait_until


def write_service(
    path: Path,
    name: str,
    *,
    sla_ms: int,
    grace_ms: int,
    models: Sequence[str],
    inputs: Sequence[str] = ("x: double",),
) -> Path:
    """A configuration of one service; ``models`` are YAML flow maps such as
    ``{name: champion, role: champion, callable: "udfs.zoo:constant"}``, ``inputs`` the lines of
    its input schema such as ``x: double``."""
    model_lines = "\n".join(f"      - {m}" for m in models)
    input_lines = "\n".join(f"      {i}" for i in inputs)
    path.write_text(
        f"services:\n  {name}:\n    sla_ms: {sla_ms}\n    grace_ms: {grace_ms}\n"
        f"    models:\n{model_lines}\n    input:\n{input_lines}\n"
    )
    return path


def wait_for_job_state(stack, job_id: str, state: str, timeout_s: float = 60.0) -> dict:
    """Poll the Flink REST API until the job is in ``state``; returns the job's details."""

    def reached() -> dict | None:
        job = stack.flink.rest(f"/jobs/{job_id}", timeout_s=5)
        return job if job["state"] == state else None

    return wait_until(reached, timeout_s=timeout_s, what=f"Flink job {job_id} to be {state}")


class RequestFeed:
    """Produces requests of ``service`` straight into the requests topic, as the proxy would."""

    def __init__(self, bootstrap: str, service: str, sla_ms: int) -> None:
        self.bootstrap = bootstrap
        self.service = service
        self.sla_ms = sla_ms
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        # Results from now on (the end of each partition), read without a consumer group.
        self.results = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"feed-{service}",
                "enable.auto.commit": False,
            }
        )
        parts = self.results.list_topics(topics.RESULTS, timeout=10).topics[topics.RESULTS]
        self.results.assign([TopicPartition(topics.RESULTS, p, -1) for p in parts.partitions])

    def send(self, rid: str, body: dict, *, flush: bool = True) -> None:
        t0 = now_ms()
        request = {
            "request_id": rid,
            "service": self.service,
            "received_ms": t0,
            "deadline_ms": t0 + self.sla_ms,
            "payload": serde.to_json(body),
            "reply_to": "test",
        }
        self.producer.produce(
            topics.REQUESTS,
            serde.encode(serde.Kind.REQUEST, request),
            key=rid.encode(),
            timestamp=t0,
        )
        if flush:
            self.producer.flush(10)
        else:
            self.producer.poll(0)

    def flush(self, timeout_s: float = 30) -> None:
        self.producer.flush(timeout_s)

    def wait_results(self, rids: Sequence[str], *, timeout_s: float = 60) -> dict[str, dict]:
        """The results of ``rids``, waiting until each has arrived."""
        wanted, got = set(rids), {}
        deadline = time.monotonic() + timeout_s
        while wanted - set(got):
            assert time.monotonic() < deadline, (
                f"no result within {timeout_s:.0f} s for {sorted(wanted - set(got))}"
            )
            msg = self.results.poll(0.2)
            if msg is None or msg.error():
                continue
            for result in serde.items_as(serde.Kind.RESULT, msg.value()):
                if result["request_id"] in wanted:
                    got[result["request_id"]] = result
        return got

    def warm_up(self, timeout_s: float = 120, in_a_row: int = 3) -> None:
        """Send until the preferred model answers ``in_a_row`` requests in a row in time: jobs
        just submitted may still be starting, catching up or running cold code. Needs heartbeats
        running (see rendezvous.heartbeat)."""
        deadline = time.monotonic() + timeout_s
        streak = 0
        for k in range(1000):
            rid = f"warm-{self.service}-{k}"
            self.send(rid, {"x": 0.0})
            try:
                preferred = self.wait_results([rid], timeout_s=5)[rid]["reason"] == "preferred"
            except AssertionError:
                preferred = False
            streak = streak + 1 if preferred else 0
            if streak == in_a_row:
                return
            assert time.monotonic() < deadline, (
                f"the jobs did not answer {in_a_row} in a row in time within {timeout_s:.0f} s"
            )

    def close(self) -> None:
        self.results.close()


def wait_archived(
    root: Path, prefix: str, expected: Sequence[int | None], *, timeout_s: float
) -> None:
    """Wait until the rows of ``prefix``-requests in (requests, scores, decisions) number
    ``expected`` (None: any number); files commit on the archive job's checkpoints (every
    10 s)."""
    from rendezvous.archive.sql import ArchiveSQL

    deadline = time.monotonic() + timeout_s
    while True:
        with ArchiveSQL(root) as db:
            counts = [
                db.frame(f"SELECT count(*) AS n FROM {t} WHERE request_id LIKE ?", [f"{prefix}%"])[
                    "n"
                ][0]
                for t in ("requests", "scores", "decisions")
            ]
        if all(e is None or c == e for c, e in zip(counts, expected, strict=True)):
            return
        assert time.monotonic() < deadline, (
            f"rows archived after {timeout_s:.0f} s (requests, scores, decisions): {counts}, "
            f"expected {list(expected)}"
        )
        time.sleep(2)
