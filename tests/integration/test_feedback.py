"""Ground truth end to end: labels posted to the proxy and written by a bulk producer reach the
archive's feedback table through the archive job, and `rendezvous report` scores every model
against them.

One service of two classifiers that always answer the same (the champion class 1 with 0.8, the
canary class 0 with 0.6), so that every figure of the report is known by hand.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from confluent_kafka import Producer

from rendezvous import deploy, records, serde, topics
from rendezvous.archive.sql import ArchiveSQL
from rendezvous.clock import now_ms
from tests.integration.feed import write_service
from tests.integration.test_http_e2e import free_port, start_proxy

pytestmark = [pytest.mark.e2e, pytest.mark.flink, pytest.mark.kafka]

SLA_MS, GRACE_MS, N = 1000, 1500, 6
MODELS = (
    '{name: champion, role: champion, callable: "udfs.zoo:constant", '
    "params: {value: {label: 1, probability: 0.8}}}",
    '{name: canary, role: canary, callable: "udfs.zoo:constant", '
    "params: {value: {label: 0, probability: 0.6}}}",
)


def truth(i: int) -> int:
    return 1 if i % 2 == 0 else 0


@pytest.fixture(scope="module")
def service(stack, tmp_path_factory):
    """The jobs of a fresh service and one proxy replica that reads the stack's archive."""
    name = "fb" + uuid.uuid4().hex[:6]
    path = write_service(
        tmp_path_factory.mktemp("fb") / "services.yaml",
        name,
        sla_ms=SLA_MS,
        grace_ms=GRACE_MS,
        models=MODELS,
    )
    jobs = deploy.submit(stack, path, log=lambda _: None)
    archive = ("--archive", str(stack.settings.archive_dir))
    port = free_port()
    proc = start_proxy(stack, path, port, f"fb-{name}", archive)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:  # the jobs start reading from their committed offsets: wait for an answer
            r = httpx.post(f"{url}/v1/services/{name}/score", json={"x": 1.0}, timeout=10)
            if r.status_code == 200 and r.json()["model"] == "champion":
                break
            assert time.monotonic() < deadline, f"no champion answer while warming up: {r.text}"
            time.sleep(0.5)
        yield name, path, url, archive
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for jid in jobs.values():
            stack.flink.cancel(jid)


def post_label(url: str, rid: str, body: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/requests/{rid}/feedback", json=body, timeout=15)


def archived(root, table: str, prefix: str, n: int, *, timeout_s: float = 180) -> None:
    """Wait until ``table`` holds ``n`` rows of requests whose ID starts with ``prefix``."""
    deadline = time.monotonic() + timeout_s
    while True:
        with ArchiveSQL(root) as db:
            got = db.frame(
                f"SELECT count(*) AS n FROM {table} WHERE request_id LIKE ?", [f"{prefix}%"]
            )["n"][0]
        if got == n:
            return
        assert time.monotonic() < deadline, f"{got} rows of {prefix}* in {table}, expected {n}"
        time.sleep(2)


@pytest.fixture(scope="module")
def labelled(stack, service):
    """N answered requests labelled through the proxy, one more labelled later through a
    second replica that knows it only from the archive, and a bulk producer's second label
    for the first request; yields once all N + 2 labels and the decisions are archived."""
    name, path, url, archive = service
    prefix = f"{name}-q"
    ids = [f"{prefix}{i}" for i in range(N + 1)]
    for rid in ids:
        r = httpx.post(
            f"{url}/v1/services/{name}/score",
            json={"x": 2.0},
            headers={"X-Request-ID": rid},
            timeout=10,
        )
        assert r.status_code == 200 and r.json()["model"] == "champion", r.text

    # Answered a moment ago: known from the results this replica read.
    for i, rid in enumerate(ids[:N]):
        r = post_label(url, rid, {"label": truth(i), "source": "integration"})
        assert r.status_code == 202, r.text
        assert r.json()["service"] == name and r.json()["label"] == truth(i)

    # A bulk producer writes the topic directly: a second, later label for the first request.
    later = records.feedback(
        request_id=ids[0], service=name, label="0", labelled_ms=now_ms(), source="bulk"
    )
    producer = Producer({"bootstrap.servers": stack.settings.kafka_bootstrap})
    producer.produce(
        topics.FEEDBACK, serde.encode_batch(serde.Kind.FEEDBACK, "bulk-1", [later]), b"bulk-1"
    )
    assert producer.flush(10) == 0

    root = stack.settings.archive_dir
    archived(root, "decisions", prefix, N + 1)
    archived(root, "feedback", prefix, N + 1)

    # A second replica has read no result of these requests: it finds them in the archive.
    port = free_port()
    other = start_proxy(stack, path, port, f"fb2-{name}", archive)
    try:
        other_url = f"http://127.0.0.1:{port}"
        again = post_label(other_url, ids[1], {"label": 1})
        last = post_label(other_url, ids[N], {"label": 1})
    finally:
        other.terminate()
        other.wait(timeout=10)
    archived(root, "feedback", prefix, N + 2)
    yield name, url, ids, again, last


def test_a_second_label_is_409_on_the_replica_that_took_the_first(service, labelled):
    name, url, ids, _, _ = labelled
    r = post_label(url, ids[0], {"label": 0})
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "already_labelled"


def test_the_archive_tells_another_replica_about_requests_and_labels(labelled):
    _, _, _, again, last = labelled
    assert again.status_code == 409, again.text
    assert "the archive holds" in again.json()["error"]["message"]
    assert last.status_code == 202, last.text


def test_bad_labels_name_the_field_and_unknown_requests_are_404(service, labelled):
    name, url, ids, _, _ = labelled
    # labelled through the other replica: this one learns it from the archive, before the type
    r = post_label(url, ids[N], {"label": "1"})
    assert r.status_code == 409 and "the archive holds" in r.json()["error"]["message"], r.text
    fresh = f"{name}-fresh"
    answered = httpx.post(
        f"{url}/v1/services/{name}/score",
        json={"x": 2.0},
        headers={"X-Request-ID": fresh},
        timeout=10,
    )
    assert answered.status_code == 200, answered.text
    r = post_label(url, fresh, {"label": "1"})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert (error["code"], error["field"]) == ("label_type", "label")
    assert "must be an integer" in error["message"]
    r = post_label(url, fresh, {"label": 1, "observed": 5})
    assert r.status_code == 422 and r.json()["error"]["field"] == "observed"
    r = post_label(url, f"{name}-never", {"label": 1})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_request"
    assert "retry later" in r.json()["error"]["message"]


def test_the_archive_keeps_every_label_and_the_view_the_first(stack, labelled):
    name, _, ids, _, _ = labelled
    with ArchiveSQL(stack.settings.archive_dir) as db:
        rows = db.frame(
            "SELECT request_id, label, source FROM feedback WHERE service = ? ORDER BY labelled_ms",
            [name],
        )
        first = db.frame("SELECT request_id, label FROM labels WHERE service = ?", [name])
    mine = rows[rows["request_id"].isin(ids)]
    assert len(mine) == N + 2 and mine["request_id"].value_counts()[ids[0]] == 2
    assert list(mine.loc[mine["request_id"] == ids[0], "source"]) == ["integration", "bulk"]
    got = dict(zip(first["request_id"], first["label"], strict=True))
    expected = {rid: str(truth(i)) for i, rid in enumerate(ids[:N])} | {ids[N]: "1"}
    assert {rid: got[rid] for rid in ids} == expected  # the proxy's label of ids[0], not "0"


def test_the_report_scores_every_model_against_the_labels(stack, stack_env, labelled):
    name, _, ids, _, _ = labelled
    done = subprocess.run(
        [sys.executable, "-m", "rendezvous.cli", "report", "--service", name],
        capture_output=True,
        text=True,
        env={**os.environ, **stack_env},
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    n = N + 1
    assert f"against the true labels of {n} request(s)" in out, out
    positives = sum(truth(i) for i in range(N)) + 1  # ids[N] was labelled 1
    table = out.split("against the true labels", 1)[1]

    def row(model: str) -> list[str]:
        return next(x for x in table.splitlines() if x.strip().startswith(model + " ")).split()

    # The champion says class 1 with 0.8 every time: right on the positives, P(1) = 0.8.
    loss = -(positives * math.log(0.8) + (n - positives) * math.log(0.2)) / n
    assert row("champion") == [
        "champion",
        "champion",
        str(n),
        f"{100 * positives / n:.1f}%",
        "0.5000",
        f"{loss:.4f}",
        "-",
    ]
    # The canary (a shadow) says class 0 with 0.6: P(1) = 0.4, and it never agrees.
    loss = -(positives * math.log(0.4) + (n - positives) * math.log(0.6)) / n
    assert row("canary") == [
        "canary",
        "canary",
        str(n),
        f"{100 * (n - positives) / n:.1f}%",
        "0.5000",
        f"{loss:.4f}",
        "0.0%",
    ]
