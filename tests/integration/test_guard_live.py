"""`rendezvous guard` on the real stack: a champion that starts failing is taken off within its
configured time, the canary answers first from then on, no request fails meanwhile (the
canary answers as a fallback until the switch), and the event is on the control topic and in
MLflow."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from rendezvous import config, control, deploy, guard_loop
from rendezvous.heartbeat import Heartbeat
from tests.integration.feed import RequestFeed, write_service

pytestmark = [pytest.mark.e2e, pytest.mark.flink, pytest.mark.kafka, pytest.mark.mlflow]

SLA_MS, RATE = 1000, 20
FOR_S, WINDOW_S = 3, 4
MODELS = [
    '{name: champ, role: champion, callable: "udfs.zoo:scripted", params: {value: 0.25}}',
    '{name: canary, role: canary, callable: "udfs.zoo:constant", params: {value: 0.75}}',
    '{name: backstop, role: backstop, callable: "udfs.zoo:constant", params: {value: 0.5}}',
]


def test_a_champion_that_starts_failing_is_taken_off_with_no_request_failing(stack, tmp_path):
    name = "guard" + uuid.uuid4().hex[:6]
    path = write_service(
        tmp_path / "services.yaml",
        name,
        sla_ms=SLA_MS,
        grace_ms=500,
        models=MODELS,
        inputs=("x: double", "fail: {type: boolean, default: false}"),
    )
    path.write_text(
        "version: 6\n"
        + path.read_text()
        + f"    guard: {{error_rate: 0.5, window_s: {WINDOW_S}, for_s: {FOR_S}, "
        "min_requests: 10}\n"
    )
    cfg = config.load(path)
    jobs = deploy.submit(stack, path, log=lambda _: None)
    feed = RequestFeed(stack.settings.kafka_bootstrap, name, SLA_MS)
    stop, lines = threading.Event(), []
    watcher = threading.Thread(
        target=guard_loop.run,
        args=(stack.settings, cfg, guard_loop.guarded(cfg)),
        kwargs={
            "tracking_uri": stack.settings.mlflow_url,
            "check_every_s": 0.25,
            "policies_every_s": 1.0,
            "stop": stop,
            "say": lines.append,
        },
        daemon=True,
    )
    try:
        with Heartbeat(stack.settings.kafka, source=f"guard-{name}"):
            feed.warm_up()
            watcher.start()
            # The guard reads from the end of the results as it is when it says so.
            until = time.monotonic() + 30
            while not any(line.startswith("guarding ") for line in lines):
                assert watcher.is_alive() and time.monotonic() < until, lines
                time.sleep(0.05)
            healthy = [f"{name}-ok-{i}" for i in range(2 * RATE)]
            for i, rid in enumerate(healthy):
                feed.send(rid, {"x": float(i)}, flush=False)
                time.sleep(1 / RATE)
            feed.flush()
            answers = feed.wait_results(healthy)
            assert {(r["model"], r["reason"]) for r in answers.values()} == {("champ", "preferred")}
            assert not any("took" in line for line in lines), lines

            # From now on every request makes the champion fail.
            failing_since = time.monotonic()
            sent: list[str] = []
            switched_at = None
            for i in range(40 * RATE):
                rid = f"{name}-bad-{i}"
                feed.send(rid, {"x": float(i), "fail": True}, flush=False)
                sent.append(rid)
                time.sleep(1 / RATE)
                if switched_at is None and any("took champ off" in line for line in lines):
                    switched_at = time.monotonic()
                if switched_at is not None and time.monotonic() - switched_at > 3:
                    break
            feed.flush()
            answers = feed.wait_results(sent)
    finally:
        stop.set()
        watcher.join(30)
        feed.close()
        deploy.end_jobs(stack, jobs)

    assert switched_at is not None, lines
    print(f"taken off {switched_at - failing_since:.1f} s after the first failing request")
    print("\n".join(lines))
    # Taken off within its time: the figure is above its threshold from the first failures
    # (once min_requests are in), so the switch comes FOR_S later, plus a check interval and
    # the policy's trip through the control topic (a slow machine gets a few seconds).
    assert switched_at - failing_since < FOR_S + 10, (switched_at - failing_since, lines)
    # Zero failed requests: the canary answered as a fallback, then as the first choice.
    assert {r["status"] for r in answers.values()} == {"ok"}
    reasons = [answers[rid]["reason"] for rid in sent]
    assert reasons[0] == "fallback: champ failed"
    assert reasons[-1] == "preferred" and answers[sent[-1]]["model"] == "canary"
    assert set(reasons) == {"fallback: champ failed", "preferred"}
    # The switch is on the control topic, with the reason ...
    past = control.history(control.KafkaControl(stack.settings.kafka), cfg, name)
    change = past.current
    assert change.policy.preference[0] == "canary" and change.policy.version == 1
    assert change.issued_by.startswith("rendezvous guard: champ: error_rate 1 > 0.5"), change
    # ... and in MLflow.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=stack.settings.mlflow_url)
    experiment = client.get_experiment_by_name(guard_loop.EXPERIMENT)
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"params.service = '{name}'"
    )
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["demoted"] == "champ" and run.data.params["first_choice"] == "canary"
    assert run.data.params["action"] == "promoted canary"
    assert run.data.metrics["error_rate"] == 1.0 and run.data.metrics["answers"] >= 10
