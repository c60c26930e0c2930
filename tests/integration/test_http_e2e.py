"""End to end over HTTP: proxy replicas, the enrich, scoring and rendezvous jobs, on the real stack.

One service, whose champion does what each request asks (``udfs.zoo:scripted``: sleep, fail or
answer), so that one set of jobs covers the in-time, late and failing champion.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from rendezvous import cli, deploy, serde, topics
from tests import proxy_process
from tests.conftest import free_port
from tests.integration.feed import wait_for_job_state, write_service

pytestmark = [pytest.mark.e2e, pytest.mark.flink, pytest.mark.kafka]

SLA_MS, GRACE_MS = 300, 1500
CHAMPION, CANARY, SHADOW = 0.9, 0.1, 0.7


MODELS = (
    f'{{name: champion, role: champion, callable: "udfs.zoo:scripted", params: {{value: {CHAMPION}}}}}',
    f'{{name: canary, role: canary, callable: "udfs.zoo:constant", params: {{value: {CANARY}}}}}',
    '{name: backstop, role: backstop, callable: "udfs.zoo:constant", params: {value: 0.5}}',
)
# What the scripted champion reads from each request: how long to sleep, whether to fail.
INPUTS = ("x: double", "delay_ms: {type: double, default: 0}", "fail: {type: double, default: 0}")


def write_e2e_service(path: Path, name: str, models=MODELS) -> Path:
    return write_service(path, name, sla_ms=SLA_MS, grace_ms=GRACE_MS, models=models, inputs=INPUTS)


@pytest.fixture(scope="module")
def service(stack, tmp_path_factory):
    name = "e2e" + uuid.uuid4().hex[:6]
    path = write_e2e_service(tmp_path_factory.mktemp("e2e") / "services.yaml", name)
    jobs = deploy.submit(stack, path, log=lambda _: None)
    yield name, path
    for jid in jobs.values():
        stack.flink.cancel(jid)


def start_proxy(
    stack, config_path, port: int, replica: str, extra: tuple[str, ...] = ()
) -> subprocess.Popen:
    # These tests are about what the join decides and when; a proxy on a busy two-core machine
    # is given 60 ms past the SLA (instead of 15) before it answers 504 on the join's behalf.
    return proxy_process.start_proxy(
        stack, config_path, port, replica, *extra, env={"RDV_PROXY_RESULT_GRACE_MS": "60"}
    )


@pytest.fixture(scope="module")
def proxies(stack, service):
    """Two proxy replicas side by side, each reading a results partition of its own; yields
    their base URLs once answers flow."""
    ports = [free_port(), free_port()]
    procs = [
        start_proxy(stack, service[1], p, f"e2e-{i}", ("--results-partition", str(i)))
        for i, p in enumerate(ports)
    ]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        # Warm up: the jobs start reading from their committed offsets; wait for one answer.
        deadline = time.monotonic() + 90
        with httpx.Client(timeout=10) as client:
            while True:
                r = client.post(f"{urls[0]}/v1/services/{service[0]}/score", json={"x": 1.0})
                if r.status_code == 200 and r.json()["model"] == "champion":
                    break
                assert time.monotonic() < deadline, f"no champion answer while warming up: {r.text}"
                time.sleep(0.5)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def decisions(stack, proxies):
    consumer = Consumer(
        {"bootstrap.servers": stack.settings.kafka_bootstrap, "group.id": uuid.uuid4().hex}
    )
    parts = consumer.list_topics(topics.DECISIONS, timeout=10).topics[topics.DECISIONS].partitions
    consumer.assign([TopicPartition(topics.DECISIONS, p, -1) for p in parts])
    seen: dict[str, dict] = {}

    def wait(request_id: str, timeout_s: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while request_id not in seen and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                for record in serde.items_as(serde.Kind.DECISION, msg.value()):
                    seen[record["request_id"]] = record
        assert request_id in seen, f"no decision for {request_id} within {timeout_s}s"
        return seen[request_id]

    yield wait
    consumer.close()


def score(url: str, service: str, body, **kw) -> httpx.Response:
    return httpx.post(f"{url}/v1/services/{service}/score", json=body, timeout=10, **kw)


def test_champion_in_time_answers(proxies, service):
    r = score(proxies[0], service[0], {"x": 2.0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["role"], body["reason"], body["output"]) == (
        "champion",
        "champion",
        "preferred",
        CHAMPION,
    )
    assert body["service"] == service[0] and body["model_version"] == "udfs.zoo:scripted"


def test_lone_late_champion_falls_back_by_the_deadline_and_is_in_the_decision(
    proxies, service, decisions
):
    bodies = []
    for i in range(3):
        time.sleep(1.0)  # nothing else in flight: only heartbeats can carry time to the deadline
        r = score(proxies[i % 2], service[0], {"x": 2.0, "delay_ms": SLA_MS + 200})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["model"], body["reason"], body["output"]) == (
            "canary",
            "fallback: champion late",
            CANARY,
        )
        bodies.append(body)
    # Three lone requests, judged by their median: one scheduling stall of a busy two-core
    # machine must not decide the outcome; a stalled watermark would delay all three.
    assert statistics.median(b["latency_ms"] for b in bodies) <= SLA_MS + 50, bodies
    decision = decisions(bodies[0]["request_id"])
    by_model = {s["model"]: s for s in decision["scores"]}
    assert by_model["champion"]["late"] is True and by_model["champion"]["status"] == "ok"
    assert by_model["champion"]["latency_ms"] >= SLA_MS + 200
    assert by_model["canary"]["late"] is False
    assert decision["model"] == "canary" and decision["decided_ms"] == decision["deadline_ms"]


def test_a_tighter_deadline_makes_the_join_fall_back_by_it_and_is_in_the_decision(
    proxies, service, decisions
):
    # The champion sleeps 180 ms: in time for the 300 ms SLA, late for a 100 ms X-Deadline-Ms.
    tight, body = 100, {"x": 2.0, "delay_ms": 180.0}
    lead = min(15, tight // 4)  # ProxySettings.decision_lead_ms, at most a quarter
    answers = []
    for i in range(3):
        time.sleep(1.0)  # nothing else in flight: only heartbeats carry time to the deadline
        r = score(proxies[i % 2], service[0], body, headers={"X-Deadline-Ms": str(tight)})
        assert r.status_code == 200, r.text
        assert r.headers["x-deadline-ms"] == str(tight) and "x-deadline-capped" not in r.headers
        assert (r.json()["model"], r.json()["reason"]) == ("canary", "fallback: champion late")
        answers.append(r.json())
    # the proxy's own cut-off is the tighter deadline plus its 60 ms result grace
    assert statistics.median(a["latency_ms"] for a in answers) <= tight + 60, answers
    decision = decisions(answers[0]["request_id"])
    assert decision["deadline_ms"] == decision["received_ms"] + tight - lead
    assert decision["decided_ms"] == decision["deadline_ms"] and decision["model"] == "canary"
    champion = next(s for s in decision["scores"] if s["model"] == "champion")
    assert champion["late"] is True and champion["latency_ms"] >= 180

    # The same body under the SLA: the champion makes it, and the decision has the SLA's deadline.
    r = score(proxies[0], service[0], body)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "champion" and "x-deadline-ms" not in r.headers
    decision = decisions(r.json()["request_id"])
    assert decision["deadline_ms"] == decision["received_ms"] + SLA_MS - 15


def test_a_deadline_looser_than_the_sla_is_capped_and_a_bad_one_refused(proxies, service):
    r = score(proxies[1], service[0], {"x": 2.0}, headers={"X-Deadline-Ms": "60000"})
    assert r.status_code == 200, r.text
    assert r.headers["x-deadline-ms"] == str(SLA_MS) and r.headers["x-deadline-capped"] == "true"
    r = score(proxies[1], service[0], {"x": 2.0}, headers={"X-Deadline-Ms": "0"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_deadline"


def test_failing_champion_falls_back_without_waiting_for_the_deadline(proxies, service, decisions):
    r = score(proxies[1], service[0], {"x": 2.0, "fail": 1.0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["reason"]) == ("canary", "fallback: champion failed")
    decision = decisions(body["request_id"])
    champion = next(s for s in decision["scores"] if s["model"] == "champion")
    assert champion["status"] == "error" and "asked this model to fail" in champion["error"]
    assert decision["decided_ms"] < decision["deadline_ms"]


def results_read(url: str) -> float:
    """How many results a replica has read from the results topic (its /metrics)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return float(
        next(ln for ln in text.splitlines() if ln.startswith("rdv_proxy_results_total ")).split()[1]
    )


def test_each_replica_gets_the_answers_to_its_own_requests(proxies, service):
    before = [results_read(u) for u in proxies]

    def call(i: int) -> tuple[int, str, dict]:
        url = proxies[i % 2]
        rid = f"rep-{i}-{uuid.uuid4().hex[:8]}"
        r = score(url, service[0], {"x": float(i)}, headers={"X-Request-ID": rid})
        return r.status_code, rid, r.json()

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(call, range(24)))
    for status, rid, body in outcomes:
        # What is checked is the routing: every replica gets the result of each of its own
        # requests. A result saying no model made the SLA (a stall of this busy machine) is
        # routed like any other; only a 504 would mean a result went astray.
        if status == 502:
            assert body["error"]["code"] == "no_answer" and body["error"]["request_id"] == rid
        else:
            assert status == 200, body
            assert body["request_id"] == rid and body["model"] == "champion"
    answered = [status for status, _, _ in outcomes if status == 200]
    assert len(answered) >= len(outcomes) // 2, outcomes
    # Each replica read the results of its own requests from its own partition, not the
    # other's: reading every partition, each would have read all 24.
    for i, url in enumerate(proxies):
        own = sum(1 for n, (status, _, _) in enumerate(outcomes) if n % 2 == i and status != 504)
        read = results_read(url) - before[i]
        assert own <= read < len(outcomes), (i, own, read)


def test_a_replica_replaced_on_its_own_port_refuses_nothing(stack, service, proxies):
    """A rolling restart on one port: the new replica shares the port and listens once ready,
    then the old one stops. A client calling throughout, on kept-alive and on new
    connections, gets an HTTP answer to every request."""
    import threading

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    old = start_proxy(stack, service[1], port, "roll-old")
    outcomes: list[tuple[str, int | str]] = []
    stop = threading.Event()

    def call_throughout() -> None:
        n = 0
        client = httpx.Client(timeout=5)
        while not stop.is_set():
            if n % 5 == 0:  # every fifth request on a new connection
                client.close()
                client = httpx.Client(timeout=5)
            n += 1
            try:
                r = client.post(f"{url}/v1/services/{service[0]}/score", json={"x": 1.0})
                outcomes.append((r.headers.get("content-type", ""), r.status_code))
            except httpx.HTTPError as exc:
                outcomes.append(("error", f"{type(exc).__name__}: {exc}"))
            time.sleep(0.01)
        client.close()

    caller = threading.Thread(target=call_throughout)
    caller.start()
    new = None
    try:
        time.sleep(1.0)
        new = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rendezvous.cli",
                "proxy",
                "--config",
                str(service[1]),
                "--port",
                str(port),
                "--bootstrap",
                stack.settings.kafka_bootstrap,
                "--replica-id",
                "roll-new",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "RDV_PROXY_RESULT_GRACE_MS": "60"},
        )
        deadline = time.monotonic() + 60
        while True:  # a new connection per probe: the kernel spreads them over both listeners
            assert new.poll() is None and time.monotonic() < deadline, "new replica not ready"
            try:
                r = httpx.get(f"{url}/readyz", timeout=1)
                if r.status_code == 200 and r.json()["replica_id"] == "roll-new":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        served_before = len(outcomes)
        old.terminate()
        # uvicorn exits by the signal it stopped for, once it has answered what it accepted
        assert old.wait(timeout=30) in (0, -15)
        time.sleep(1.5)
    finally:
        stop.set()
        caller.join(timeout=30)
        for proc in (old, new):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
    failed = [o for o in outcomes if o[0] == "error"]
    assert not failed, failed
    assert all(kind.startswith("application/json") for kind, _ in outcomes), outcomes
    # answers went on after the old replica had gone, models' answers among them (on a busy
    # machine some are explicit 503/504s: what is checked here is that none is a refusal)
    after = outcomes[served_before:]
    assert len(after) >= 20 and any(status == 200 for _, status in after), after


def test_async_submit_then_poll(proxies, service):
    r = httpx.post(f"{proxies[0]}/v1/services/{service[0]}/requests", json={"x": 3.0}, timeout=10)
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["status_url"] == f"/v1/requests/{accepted['request_id']}"
    deadline = time.monotonic() + 10
    while True:
        got = httpx.get(proxies[0] + accepted["status_url"], timeout=10)
        if got.status_code != 202:
            break
        assert time.monotonic() < deadline, "still pending 10 s after submission"
        time.sleep(0.05)
    assert got.status_code == 200, got.text
    assert (got.json()["request_id"], got.json()["model"]) == (accepted["request_id"], "champion")
    unknown = httpx.get(f"{proxies[0]}/v1/requests/{uuid.uuid4().hex}", timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"]


def test_an_async_result_is_known_to_a_replica_started_after_it(stack, proxies, service):
    """A replica that never saw a request (it started after the answer) answers
    GET /v1/requests/{id} from the archive's decisions, once the archive has committed them."""
    r = httpx.post(f"{proxies[0]}/v1/services/{service[0]}/requests", json={"x": 4.0}, timeout=10)
    assert r.status_code == 202, r.text
    status_url = r.json()["status_url"]
    deadline = time.monotonic() + 10
    while (first := httpx.get(proxies[0] + status_url, timeout=10)).status_code == 202:
        assert time.monotonic() < deadline, "still pending 10 s after submission"
        time.sleep(0.05)
    assert first.status_code == 200, first.text
    port = free_port()
    late = start_proxy(
        stack,
        service[1],
        port,
        "e2e-late",
        ("--archive", str(stack.settings.archive_dir)),
    )
    try:
        deadline = time.monotonic() + 60  # the decision, then the archive's next commit
        while (
            again := httpx.get(f"http://127.0.0.1:{port}{status_url}", timeout=10)
        ).status_code == 404:
            assert time.monotonic() < deadline, again.text
            time.sleep(0.5)
    finally:
        late.terminate()
        late.wait(timeout=30)
    assert again.status_code == 200, again.text
    for field in ("request_id", "service", "model", "model_version", "output", "reason"):
        assert again.json()[field] == first.json()[field], (field, again.text, first.text)


@pytest.mark.parametrize(
    ("path", "content", "status", "mentions"),
    [
        ("score", b'{"x": 1.0', 400, "JSON"),
        ("score", b'{"x": "many"}', 422, "x"),
        ("score", b'{"y": 1.0}', 422, "x"),
        ("requests", b"[1, 2]", 422, "object"),
    ],
)
def test_bad_bodies_get_a_clear_error(proxies, service, path, content, status, mentions):
    r = httpx.post(
        f"{proxies[0]}/v1/services/{service[0]}/{path}",
        content=content,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert mentions in error["message"] and error["code"]


def test_unknown_service_is_404_naming_the_known_ones(proxies, service):
    r = score(proxies[0], "nope", {"x": 1.0})
    assert r.status_code == 404
    assert service[0] in r.json()["error"]["message"]


def test_a_model_added_then_pruned_leaves_the_other_jobs_running(
    stack, proxies, service, decisions, tmp_path
):
    name, path = service
    shadow_job = f"{deploy.SCORE_JOB_PREFIX}{name}/shadow"
    shadow_model = f'{{name: shadow, role: challenger, callable: "udfs.zoo:constant", params: {{value: {SHADOW}}}}}'
    # The service belongs to its file: the model is added to that file, then taken out again.
    original = path.read_text()
    write_e2e_service(path, name, models=(*MODELS, shadow_model))
    before = deploy.running_jobs(stack)
    try:
        added = deploy.submit(stack, path, log=lambda _: None)
        assert set(added) == set(before) | {shadow_job}
        assert {n: added[n] for n in before} == before  # the same job ids: nothing restarted

        # The shadow scores live traffic from now on; the champion keeps answering.
        deadline = time.monotonic() + 60
        while True:
            r = score(proxies[0], name, {"x": 2.0})
            assert r.status_code == 200 and r.json()["model"] == "champion", r.text
            shadow = [
                s for s in decisions(r.json()["request_id"])["scores"] if s["model"] == "shadow"
            ]
            if shadow:
                break
            assert time.monotonic() < deadline, "the added model never scored a request"
        assert shadow[0]["status"] == "ok" and json.loads(shadow[0]["output"]) == SHADOW

        path.write_text(original)
        pruned = deploy.submit(stack, path, prune=True, log=lambda _: None)
        assert pruned == before
        # A pruned scoring job is stopped with a savepoint: it ends FINISHED, not CANCELED.
        wait_for_job_state(stack, added[shadow_job], "FINISHED")
        assert deploy.running_jobs(stack) == before
        r = score(proxies[1], name, {"x": 2.0})
        assert r.status_code == 200 and r.json()["model"] == "champion", r.text
        scored = {s["model"] for s in decisions(r.json()["request_id"])["scores"]}
        assert scored == {"champion", "canary", "backstop"}
    finally:
        path.write_text(original)
        leftover = deploy.running_jobs(stack).get(shadow_job)
        if leftover:
            stack.flink.cancel(leftover)


def test_a_promoted_sla_reaches_every_replica(stack, stack_env, proxies, service, monkeypatch):
    """`promote --sla-ms` sets the deadlines the replicas give requests, at runtime: a looser
    X-Deadline-Ms is capped at the SLA in force, and the answer names the cap."""
    for variable, value in stack_env.items():
        monkeypatch.setenv(variable, value)
    name, path = service

    def sla_in_force(url: str) -> int:
        r = score(url, name, {"x": 2.0}, headers={"X-Deadline-Ms": "60000"})
        assert r.headers.get("x-deadline-capped") == "true", (r.status_code, r.headers, r.text)
        return int(r.headers["x-deadline-ms"])

    def wait_for(sla_ms: int) -> None:
        for url in proxies:
            deadline = time.monotonic() + 15
            while (seen := sla_in_force(url)) != sla_ms:
                assert time.monotonic() < deadline, f"{url} still at {seen} ms, not {sla_ms}"
                time.sleep(0.2)

    wait_for(SLA_MS)
    run = ["--config", str(path)]
    assert cli.main(["promote", name, "canary", "--sla-ms", str(SLA_MS + 200), *run]) == 0
    try:
        wait_for(SLA_MS + 200)
    finally:
        assert cli.main(["promote", "--undo", name, *run]) == 0
    wait_for(SLA_MS)
