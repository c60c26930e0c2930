"""Which jobs a configuration plans, where a scoring job added to a live system starts, and
how submit checks the free slots and reports a job that fails to start (against a fake Flink
REST API)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from rendezvous import cli, control, deploy, topics
from rendezvous.control import MemoryControl
from rendezvous.errors import ConfigError, JobFailed, NotEnoughSlots
from rendezvous.settings import StackSettings
from tests.unit.flink_samples import PEMJA, entry, history

CONFIG = """
services:
  credit:
    sla_ms: 200
    models:
      - {name: champ, role: champion, callable: "udfs.zoo:constant"}
      - {name: shadow, role: challenger, callable: "udfs.zoo:constant"}
      - {name: backstop, role: backstop, callable: "udfs.zoo:constant"}
    input:
      x: double
"""


def start_of(job: deploy.JobPlan) -> str:
    return job.args[job.args.index("--start") + 1]


def test_plan_has_the_shared_jobs_and_one_scorer_per_model(tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text(CONFIG)
    jobs = deploy.plan(StackSettings(home=tmp_path), path)
    assert [j.name for j in jobs] == [
        "rendezvous-enrich",
        "rendezvous-join",
        "rendezvous-archive",
        "rendezvous-score credit/champ",
        "rendezvous-score credit/shadow",
        "rendezvous-score credit/backstop",
    ]
    assert {start_of(j) for j in jobs} == {"committed"}
    scorer = jobs[-1]
    assert scorer.args[scorer.args.index("--model") + 1] == "backstop"


def test_a_scorer_joining_a_live_system_starts_live_and_nothing_else_changes(tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text(CONFIG)
    jobs = deploy.plan(StackSettings(home=tmp_path), path)
    joined = [deploy.joining_live(j) for j in jobs]
    for before, after in zip(jobs, joined, strict=True):
        if before.name.startswith(deploy.SCORE_JOB_PREFIX):
            assert start_of(after) == "live"
            assert [a for a in after.args if a != "live"] == [
                a for a in before.args if a != "committed"
            ]
        else:
            assert after == before


def test_jobs_get_the_kafka_properties_file_by_path_never_its_secrets(tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text(CONFIG)
    assert not any(
        "--kafka-properties" in j.args for j in deploy.plan(StackSettings(home=tmp_path), path)
    )
    props = tmp_path / "client.properties"
    props.write_text(
        "security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\nsasl.username=u\nsasl.password=hunter2\n"
    )
    settings = StackSettings(home=tmp_path, kafka_bootstrap="b:9093", kafka_properties=props)
    for job in deploy.plan(settings, path):
        assert job.args[job.args.index("--kafka-properties") + 1] == str(props.resolve())
        assert job.args[job.args.index("--bootstrap") + 1] == "b:9093"
        assert not any("hunter2" in a for a in job.args)


# ---- submit and wait_running against a fake Flink REST API ----------------------------------

NO_HISTORY = history()


def details(name: str, state: str = "RUNNING", *vertex_states: str) -> dict:
    vertices = [
        {"id": f"v{i}", "name": f"vertex {i}", "parallelism": 1, "status": status}
        for i, status in enumerate(vertex_states or ("RUNNING", "RUNNING"))
    ]
    return {"jid": "", "name": name, "state": state, "vertices": vertices}


class FakeFlink:
    """The few REST answers submit and wait_running read, and what they did."""

    def __init__(self, *, total=16, free=16, sizes=(8, 8), jobs=(), local=True):
        self.overview = {
            "taskmanagers": len(sizes),
            "slots-total": total,
            "slots-available": free,
            "jobs-running": len(jobs),
        }
        self.taskmanagers = {
            "taskmanagers": [
                {"id": f"tm{i}", "slotsNumber": n, "freeSlots": n} for i, n in enumerate(sizes)
            ]
        }
        self.overview_jobs = [
            {
                "jid": jid,
                "name": name,
                "state": "RUNNING",
                "tasks": {"total": 2, "running": 2, "scheduled": 0},
            }
            for name, jid in jobs
        ]
        self.details: dict[str, dict] = {}
        self.exceptions: dict[str, dict] = {}
        self.submitted: list[str] = []
        self.parallelism: dict[str, int] = {}
        self.cancelled: list[str] = []
        self.stopped: list[str] = []
        self.stoppable = True  # whether a stop with a savepoint succeeds
        self.on_submit = lambda name: details(name)
        self.jobmanager = SimpleNamespace(pid=lambda: 4242 if local else None)
        self._ids = (f"{i:032x}" for i in itertools.count(1))

    def rest(self, path: str, timeout_s: float = 2.0) -> dict:
        if path == "/overview":
            return self.overview
        if path == "/taskmanagers":
            return self.taskmanagers
        if path == "/jobs/overview":
            return {"jobs": self.overview_jobs}
        jid, _, rest = path.removeprefix("/jobs/").partition("/")
        if rest.startswith("exceptions"):
            return self.exceptions.get(jid, NO_HISTORY)
        return self.details[jid]

    def jobs(self) -> list[dict]:
        return self.overview_jobs

    def submit(self, script, args, *, name_hint: str = "", python_files=(), parallelism=1) -> str:
        jid = next(self._ids)
        self.submitted.append(name_hint)
        self.parallelism[name_hint] = parallelism
        self.details[jid] = self.on_submit(name_hint)
        return jid

    def cancel(self, jid: str) -> None:
        self.cancelled.append(jid)

    def stop(self, jid: str, **_) -> bool:
        if self.stoppable:
            self.stopped.append(jid)
        return self.stoppable


def fake_stack(tmp_path, partitions=1, settings=None, **kwargs):
    listed = {t: (1 if t in topics.SINGLE_PARTITION else partitions) for t in topics.ALL}
    return SimpleNamespace(
        flink=FakeFlink(**kwargs),
        settings=settings or StackSettings(home=tmp_path),
        control=MemoryControl(),
        kafka=SimpleNamespace(list_topics=lambda: listed),
    )


def config(tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text(CONFIG)
    return path


def test_submit_refuses_before_doing_anything_when_the_jobs_do_not_fit(tmp_path):
    stack = fake_stack(tmp_path, total=16, free=4)
    with pytest.raises(NotEnoughSlots) as refused:
        deploy.submit(stack, config(tmp_path), control_log=stack.control, log=lambda _: None)
    assert "need 6 Flink task slots but 4 are free" in refused.value.message
    assert "rendezvous up --taskmanagers 3" in refused.value.message
    assert stack.flink.submitted == [] and stack.flink.cancelled == []


def test_running_jobs_need_no_slot_and_pruned_ones_give_theirs_back(tmp_path):
    running = [
        ("rendezvous-enrich", "e" * 32),
        ("rendezvous-join", "j" * 32),
        ("rendezvous-archive", "a" * 32),
        ("rendezvous-score credit/old", "o" * 32),
    ]
    stack = fake_stack(tmp_path, total=8, free=3, sizes=(8,), jobs=running)
    lines: list[str] = []
    deploy.submit(stack, config(tmp_path), control_log=stack.control, prune=True, log=lines.append)
    # a scoring job is stopped with a savepoint, not cancelled
    assert stack.flink.stopped == ["o" * 32] and stack.flink.cancelled == []
    assert any("rendezvous-score credit/old" in ln and "stopped: no longer" in ln for ln in lines)
    assert stack.flink.submitted == [
        f"rendezvous-score credit/{m}" for m in ("champ", "shadow", "backstop")
    ]
    assert not any("warning" in line for line in lines)  # one TaskManager: no standby to lose


def test_submit_warns_when_a_lost_taskmanager_would_leave_jobs_without_a_slot(tmp_path):
    stack = fake_stack(tmp_path, total=8, free=6, sizes=(4, 4))
    lines: list[str] = []
    deploy.submit(stack, config(tmp_path), control_log=stack.control, log=lines.append)
    assert any(
        "8 slots in use but 4 left if the largest TaskManager dies" in line for line in lines
    )


def test_a_job_that_cannot_load_its_model_is_named_with_its_cause_and_cancelled(tmp_path):
    stack = fake_stack(tmp_path)
    broken = "rendezvous-score credit/shadow"

    def on_submit(name):
        if name != broken:
            return details(name)
        jid = f"{len(stack.flink.submitted):032x}"
        stack.flink.exceptions[jid] = history(entry(PEMJA, "pemja.core.PythonException"))
        return details(name, "RUNNING", "INITIALIZING", "RUNNING")

    stack.flink.on_submit = on_submit
    with pytest.raises(JobFailed) as failed:
        deploy.submit(stack, config(tmp_path), control_log=stack.control, log=lambda _: None)
    first, *rest = failed.value.message.splitlines()
    assert first.startswith(f"{broken}: ModelLoadError: model broken: cannot import no_such_module")
    assert "No module named 'no_such_module'" in first
    assert len(rest) == 1 and "cancelled it" in rest[0] and "rendezvous submit" in rest[0]
    (jid,) = stack.flink.cancelled
    assert stack.flink.details[jid]["name"] == broken


def test_a_job_that_ended_is_not_cancelled_again():
    flink = FakeFlink()
    flink.details["f" * 32] = details("rendezvous-score s/m", "FAILED", "FAILED")
    stack = SimpleNamespace(flink=flink, settings=StackSettings())
    with pytest.raises(JobFailed, match=r"^rendezvous-score s/m: FAILED without an error\n"):
        deploy.wait_running(stack, {"f" * 32})
    assert flink.cancelled == []


def test_a_job_waiting_for_a_slot_is_named_when_the_wait_runs_out():
    flink = FakeFlink()
    flink.details["w" * 32] = details("rendezvous-join", "RUNNING", "SCHEDULED", "RUNNING")
    stack = SimpleNamespace(flink=flink, settings=StackSettings())
    now = itertools.count(0.0, 1.0)
    with pytest.raises(JobFailed) as late:
        deploy.wait_running(
            stack, {"w" * 32}, timeout_s=5, clock=lambda: next(now), sleep=lambda _: None
        )
    assert late.value.message.startswith(
        "jobs not running after 5s: rendezvous-join (RUNNING; tasks SCHEDULED, waiting for a free slot)"
    )


def test_wait_running_returns_once_every_task_runs():
    flink = FakeFlink()
    states = iter([("RUNNING", "DEPLOYING"), ("RUNNING", "INITIALIZING"), ("RUNNING", "RUNNING")])
    flink.rest = lambda path, timeout_s=2.0: (
        NO_HISTORY if path.endswith("maxExceptions=1") else details("j", "RUNNING", *next(states))
    )
    deploy.wait_running(
        SimpleNamespace(flink=flink, settings=StackSettings()), {"x" * 32}, sleep=lambda _: None
    )


def test_cli_submit_exits_1_with_the_message(tmp_path, monkeypatch, capsys):
    stack = fake_stack(tmp_path, total=16, free=0)
    stack.flink.check_reachable = lambda: None
    stack.kafka = SimpleNamespace(check_reachable=lambda: None)
    monkeypatch.setattr(cli, "_stack", lambda settings: stack)
    monkeypatch.setattr(control, "KafkaControl", lambda kafka: stack.control)
    assert cli.main(["submit", "--config", str(config(tmp_path))]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the jobs to submit need 6 Flink task slots but 0 are free")


def test_cli_status_shows_the_cause_of_a_restarting_job(tmp_path, monkeypatch, capsys):
    flink = FakeFlink()
    flink.overview_jobs = [
        {
            "jid": "b" * 32,
            "name": "rendezvous-score credit/broken",
            "state": "RUNNING",
            "tasks": {"total": 2, "running": 1, "initializing": 1},
        },
        {
            "jid": "g" * 32,
            "name": "rendezvous-join",
            "state": "RUNNING",
            "tasks": {"total": 2, "running": 2},
        },
    ]
    flink.exceptions["b" * 32] = history(entry(PEMJA, "pemja.core.PythonException"))
    flink.exceptions["g" * 32] = history(entry(PEMJA, "pemja.core.PythonException"))  # recovered
    rows = [
        SimpleNamespace(name="flink", up=True, pids=(1, 2), address="http://flink"),
        SimpleNamespace(name="kafka", up=False, pids=(None,), address="kafka:9092"),
    ]
    stack = SimpleNamespace(flink=flink, settings=StackSettings(home=tmp_path), status=lambda: rows)
    monkeypatch.setattr(cli, "_stack", lambda settings: stack)
    assert cli.main(["status"]) == 3  # Kafka is down here
    out = capsys.readouterr().out
    assert "      cause: ModelLoadError: model broken: cannot import no_such_module" in out
    assert out.count("cause:") == 1


def test_cli_topics_checks_the_login_then_creates_what_is_missing(monkeypatch, capsys):
    calls = []
    kafka = SimpleNamespace(
        check_reachable=lambda: calls.append("check"),
        create_topics=lambda: calls.append("create") or ["rdv.requests", "rdv.scores"],
    )
    monkeypatch.setattr(cli, "_stack", lambda settings: SimpleNamespace(kafka=kafka))
    assert cli.main(["topics"]) == 0
    assert calls == ["check", "create"]
    assert capsys.readouterr().out == "created rdv.requests, rdv.scores\n"
    kafka.create_topics = lambda: []
    assert cli.main(["topics"]) == 0
    assert capsys.readouterr().out == "every topic is there already\n"


def test_scoring_jobs_are_stopped_with_a_savepoint_and_the_rest_cancelled(tmp_path):
    running = [
        ("rendezvous-join", "j" * 32),
        ("rendezvous-score credit/champ", "c" * 32),
        ("rendezvous-score credit/shadow", "s" * 32),
    ]
    stack = fake_stack(tmp_path, jobs=running)
    stack.flink.stoppable = True
    lines: list[str] = []
    assert deploy.cancel(stack, log=lines.append) == [name for name, _ in running]
    assert sorted(stack.flink.stopped) == ["c" * 32, "s" * 32]
    assert stack.flink.cancelled == ["j" * 32]  # never asked to stop: no Python process of its own
    assert f"  {'rendezvous-score credit/champ':<40} stopped ({'c' * 32})" in lines


def test_a_scoring_job_that_does_not_stop_in_time_is_cancelled(tmp_path):
    stack = fake_stack(tmp_path, jobs=[("rendezvous-score credit/champ", "c" * 32)])
    stack.flink.stoppable = False
    lines: list[str] = []
    assert deploy.cancel(stack, only=["champ"], log=lines.append) == [
        "rendezvous-score credit/champ"
    ]
    assert stack.flink.stopped == [] and stack.flink.cancelled == ["c" * 32]
    assert lines == [f"  {'rendezvous-score credit/champ':<40} cancelled ({'c' * 32})"]


PARALLEL = CONFIG.replace(
    '{name: champ, role: champion, callable: "udfs.zoo:constant"}',
    '{name: champ, role: champion, callable: "udfs.zoo:constant", parallelism: 3}',
)


def test_parallel_jobs_are_submitted_at_their_parallelism_and_take_a_slot_per_task(tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text(PARALLEL)
    settings = StackSettings(home=tmp_path, join_parallelism=2)
    stack = fake_stack(tmp_path, partitions=4, settings=settings, total=9, free=9)
    deploy.submit(stack, path, control_log=stack.control, log=lambda _: None)
    assert stack.flink.parallelism == {
        "rendezvous-enrich": 1,
        "rendezvous-join": 2,
        "rendezvous-archive": 1,
        "rendezvous-score credit/champ": 3,
        "rendezvous-score credit/shadow": 1,
        "rendezvous-score credit/backstop": 1,
    }
    # 10 tasks do not fit in 9 slots: refused before anything is submitted
    stack = fake_stack(tmp_path, partitions=4, settings=settings, total=9, free=9)
    path.write_text(PARALLEL.replace("parallelism: 3", "parallelism: 4"))
    with pytest.raises(NotEnoughSlots, match="need 10 Flink task slots"):
        deploy.submit(stack, path, control_log=stack.control, log=lambda _: None)
    assert stack.flink.submitted == []


def test_a_job_with_more_tasks_than_its_topics_partitions_is_refused_naming_both(tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text(PARALLEL)
    stack = fake_stack(tmp_path, partitions=2)
    with pytest.raises(ConfigError) as err:
        deploy.submit(stack, path, control_log=stack.control, log=lambda _: None)
    text = str(err.value)
    assert "rendezvous-score credit/champ runs 3 parallel tasks" in text
    assert "rdv.model-input has 2 partitions" in text and "RDV_KAFKA_PARTITIONS=3" in text
    assert stack.flink.submitted == []


@pytest.mark.parametrize("value", [0, 65, "two"])
def test_a_bad_parallelism_names_the_model_field(tmp_path, value):
    from rendezvous import config as config_mod

    path = tmp_path / "services.yaml"
    path.write_text(PARALLEL.replace("parallelism: 3", f"parallelism: {value}"))
    with pytest.raises(ConfigError, match=r"models\[0\]\.parallelism"):
        config_mod.load(path)
