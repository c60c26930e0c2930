"""`rendezvous submit` on the real cluster when things cannot work: a model whose module does
not exist is named with its cause within seconds, a scoring job that cannot load its model
gives up instead of restarting forever, jobs that do not fit in the free slots are refused
before anything changes, and `rendezvous up --taskmanagers N` adds slots beside running jobs."""

from __future__ import annotations

import contextlib
import time
import uuid

import pytest

from rendezvous import cli, deploy, restarts
from rendezvous.stack.procs import Service
from tests.conftest import wait_until
from tests.integration.feed import write_service

pytestmark = [pytest.mark.flink, pytest.mark.kafka]


@pytest.fixture
def cli_env(stack_env, monkeypatch):
    """The CLI sees the stack under test."""
    for name, value in stack_env.items():
        monkeypatch.setenv(name, value)


def broken_service(tmp_path, module: str) -> tuple[str, object]:
    name = "broken" + uuid.uuid4().hex[:6]
    path = write_service(
        tmp_path / f"{name}.yaml",
        name,
        sla_ms=200,
        grace_ms=500,
        models=[f'{{name: broken, role: champion, callable: "{module}:predict"}}'],
    )
    return name, path


def live_jobs_named(stack, name: str) -> list[dict]:
    return [j for j in stack.flink.jobs() if j["name"] == name and j["state"] in deploy.LIVE]


def test_a_model_whose_module_is_missing_stops_submit_within_30s_naming_the_module(
    stack, cli_env, capsys, tmp_path
):
    module = f"no_such_module_{uuid.uuid4().hex[:6]}"
    name, path = broken_service(tmp_path, module)
    job = f"rendezvous-score {name}/broken"
    t0 = time.monotonic()
    code = cli.main(["submit", "--config", str(path), "--only", f"score {name}/"])
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == 1, err
    assert elapsed < 30, f"submit took {elapsed:.0f}s to report the failure:\n{err}"
    cause = err.splitlines()[0]
    assert cause.startswith(f"error: {job}: ModelLoadError: model broken: cannot import "), err
    assert f"No module named '{module}'" in cause
    assert "rendezvous submit" in err.splitlines()[-1]
    # cancelled: it holds no slot, and submitting the fixed configuration submits it again
    wait_until(lambda: not live_jobs_named(stack, job), timeout_s=30, what=f"{job} to end")


def test_a_scoring_job_that_cannot_load_its_model_gives_up_and_status_names_the_cause(
    stack, cli_env, capsys, tmp_path
):
    module = f"no_such_module_{uuid.uuid4().hex[:6]}"
    name, path = broken_service(tmp_path, module)
    (job,) = [j for j in deploy.plan(stack.settings, path) if j.name.endswith(f"{name}/broken")]
    # submitted without `submit`'s wait, which would cancel it at its first failure
    jid = stack.flink.submit(job.script, list(job.args), name_hint=job.name)
    try:
        # about a minute of restart delays (rendezvous.restarts), then FAILED for good
        wait_until(
            lambda: stack.flink.rest(f"/jobs/{jid}")["state"] == "FAILED",
            timeout_s=180,
            interval_s=1,
            what=f"{job.name} to give up",
        )
    finally:
        if stack.flink.rest(f"/jobs/{jid}")["state"] in deploy.LIVE:
            with contextlib.suppress(OSError):
                stack.flink.cancel(jid)
    entries = stack.flink.rest(f"/jobs/{jid}/exceptions")["exceptionHistory"]["entries"]
    assert 2 <= len(entries) <= restarts.SCORING_ATTEMPTS + 1
    capsys.readouterr()
    cli.main(["status"])
    out = capsys.readouterr().out
    row = next(i for i, line in enumerate(out.splitlines()) if jid in line)
    cause = out.splitlines()[row + 1]
    assert cause.strip().startswith("cause: ModelLoadError: model broken: cannot import"), out
    assert f"No module named '{module}'" in cause


def test_submit_refuses_jobs_that_do_not_fit_in_the_free_slots(stack, cli_env, capsys, tmp_path):
    total = stack.flink.rest("/overview")["slots-total"]
    name = "wide" + uuid.uuid4().hex[:6]
    # one scoring job more than the cluster has slots: refused however many are free
    models = ['{name: m0, role: champion, callable: "udfs.zoo:constant"}'] + [
        f'{{name: m{i}, role: challenger, callable: "udfs.zoo:constant"}}'
        for i in range(1, total + 1)
    ]
    path = write_service(tmp_path / f"{name}.yaml", name, sla_ms=200, grace_ms=500, models=models)
    before = {j["jid"] for j in stack.flink.jobs()}
    code = cli.main(["submit", "--config", str(path), "--only", f"score {name}/"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: the jobs to submit need {total + 1} Flink task slots but ")
    assert f"({total} in all on " in err and "nothing was submitted" in err
    assert "rendezvous up --taskmanagers " in err
    assert "RDV_FLINK_TASKMANAGERS" in err and "RDV_FLINK_TASKMANAGER_SLOTS" in err
    assert {j["jid"] for j in stack.flink.jobs()} == before


def test_up_with_more_taskmanagers_adds_slots_and_keeps_the_running_jobs(stack, cli_env, capsys):
    flink = stack.flink
    overview = flink.rest("/overview")
    jobmanager = flink.jobmanager.pid()
    running = {j["jid"] for j in flink.jobs() if j["state"] == "RUNNING"}
    extra = Service(
        f"flink-taskmanager-{len(flink.taskmanagers) + 1}",
        stack.settings.run_dir,
        stack.settings.logs_dir,
    )
    try:
        assert (
            cli.main(["up", "--taskmanagers", str(len(flink.taskmanagers) + 1), "--slots", "2"])
            == 0
        )
        out = capsys.readouterr().out
        assert f"starting {extra.name} ..." in out, out
        grown = flink.rest("/overview")
        assert grown["taskmanagers"] == overview["taskmanagers"] + 1
        assert grown["slots-total"] == overview["slots-total"] + 2
        assert flink.jobmanager.pid() == jobmanager
        assert running <= {j["jid"] for j in flink.jobs() if j["state"] == "RUNNING"}
    finally:
        extra.stop()
        # the other tests expect the stack's own TaskManagers only
        wait_until(
            lambda: flink.rest("/overview")["taskmanagers"] == overview["taskmanagers"],
            timeout_s=60,
            what="the added TaskManager to leave the cluster",
        )
