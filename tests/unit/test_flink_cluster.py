"""The local Flink cluster grows beside a running JobManager: TaskManagers that are missing
start with the slots the settings give now, and `rendezvous up --taskmanagers N --slots S`
passes those sizes down."""

from __future__ import annotations

from pathlib import Path

from rendezvous import cli
from rendezvous.settings import StackSettings
from rendezvous.stack import procs
from rendezvous.stack.flink import FlinkCluster


def started_argvs(monkeypatch, settings: StackSettings, running: set[str]) -> dict[str, list]:
    started: dict[str, list] = {}
    monkeypatch.setattr(FlinkCluster, "env", lambda self: {})
    monkeypatch.setattr(procs.Service, "pid", lambda svc: 1 if svc.name in running else None)
    monkeypatch.setattr(
        procs.Service,
        "start",
        lambda svc, argv, *, env, cwd: started.setdefault(svc.name, list(argv)),
    )
    FlinkCluster(settings).start_taskmanagers()
    return started


def test_only_the_missing_taskmanagers_start_with_the_current_slot_setting(monkeypatch, tmp_path):
    settings = StackSettings(home=tmp_path, flink_taskmanagers=3, flink_taskmanager_slots=16)
    running = {"flink-taskmanager", "flink-taskmanager-2"}
    started = started_argvs(monkeypatch, settings, running)
    assert list(started) == ["flink-taskmanager-3"]
    argv = started["flink-taskmanager-3"]
    assert "start-foreground" in argv
    assert argv[-1] == "-Dtaskmanager.numberOfTaskSlots=16"


def test_up_takes_the_sizes_from_its_options(monkeypatch, tmp_path):
    seen = []

    class FakeStack:
        def __init__(self, settings):
            seen.append(settings)

        def up(self):
            return {"total": 0.0}

    monkeypatch.setattr(cli, "_stack", FakeStack)
    monkeypatch.setenv("RDV_HOME", str(tmp_path))
    for name in ("RDV_FLINK_TASKMANAGERS", "RDV_FLINK_TASKMANAGER_SLOTS"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["up", "--taskmanagers", "3", "--slots", "12"]) == 0
    assert cli.main(["up"]) == 0
    grown, default = seen
    assert (grown.flink_taskmanagers, grown.flink_taskmanager_slots) == (3, 12)
    assert (default.flink_taskmanagers, default.flink_taskmanager_slots) == (2, 8)
    assert cli.main(["up", "--taskmanagers", "0"]) == 2  # refused, naming the setting


# ---- what `flink run` is given ---------------------------------------------------------------


def submitted(monkeypatch, settings: StackSettings, files=()) -> tuple[list[str], dict]:
    import subprocess

    from rendezvous.stack import flink as flink_module
    from rendezvous.stack import jars

    seen: dict = {}

    def run(argv, *, env, **kw):
        seen.update(argv=list(argv), env=env)
        return subprocess.CompletedProcess(
            argv, 0, "Job has been submitted with JobID " + "a" * 32, ""
        )

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(jars, "ensure_jars", lambda s, **kw: s.jars_dir)
    monkeypatch.setattr(flink_module, "_site_packages", lambda python: ("/venv/site-packages",))
    flink = FlinkCluster(settings)
    assert flink.submit(Path("/jobs/x.py"), ["--a", "1"], python_files=files) == "a" * 32
    return seen["argv"], seen["env"]


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_every_job_carries_the_projects_zip_and_the_local_stack_runs_this_python(
    monkeypatch, tmp_path
):
    settings = StackSettings(home=tmp_path, python=Path("/venv/bin/python"))
    argv, env = submitted(monkeypatch, settings, files=(Path("/srv/rules"),))
    shipped = option(argv, "-pyfs").split(",")
    assert len(shipped) == 2 and shipped[1] == "/srv/rules"
    assert Path(shipped[0]).parent == settings.ship_dir and Path(shipped[0]).is_file()
    assert (option(argv, "-pyexec"), option(argv, "-pyclientexec")) == (
        "/venv/bin/python",
        "/venv/bin/python",
    )
    assert env["FLINK_CONF_DIR"] == str(tmp_path / "flink" / "conf")
    assert argv[-2:] == ["--a", "1"]


def test_a_cluster_of_ones_own_gets_the_profiles_python_and_a_client_configuration_of_its_own(
    monkeypatch, tmp_path
):
    import yaml

    settings = StackSettings(
        home=tmp_path,
        python=Path("/venv/bin/python"),
        flink_rest_url="http://flink-jm.internal:8089/",
        flink_python="/usr/bin/python3",
    )
    argv, env = submitted(monkeypatch, settings)
    assert option(argv, "-m") == "flink-jm.internal:8089"
    assert (option(argv, "-pyexec"), option(argv, "-pyclientexec")) == (
        "/usr/bin/python3",
        "/venv/bin/python",
    )
    assert len(option(argv, "-pyfs").split(",")) == 1  # the project's zip
    conf_dir = Path(env["FLINK_CONF_DIR"])
    assert conf_dir == tmp_path / "flink" / "client" / "conf"
    conf = yaml.safe_load((conf_dir / "config.yaml").read_text())
    assert (conf["rest.address"], conf["rest.port"]) == ("flink-jm.internal", 8089)
    assert conf["python.execution-mode"] == "thread"
    # nothing of this machine's: no interpreter, checkpoint folder or other path of this machine
    assert not any(k.startswith(("python.executable", "python.client")) for k in conf)
    assert not any(str(tmp_path) in str(v) for v in conf.values())
    assert Path(env["FLINK_LIB_DIR"]) == tmp_path / "flink" / "client" / "lib"


def test_without_a_python_for_ones_own_cluster_jobs_go_without_pyexec(monkeypatch, tmp_path):
    settings = StackSettings(home=tmp_path, flink_rest_url="http://flink-jm.internal:8081")
    assert settings.cluster_python is None
    argv, _ = submitted(monkeypatch, settings)
    assert "-pyexec" not in argv and option(argv, "-pyclientexec") == str(settings.python)


def test_each_process_reports_its_prometheus_metrics_on_a_port_of_its_own(monkeypatch, tmp_path):
    settings = StackSettings(home=tmp_path, flink_taskmanagers=2, flink_metrics_port=19000)
    cluster = FlinkCluster(settings)
    conf = cluster.runtime_config()
    assert conf["metrics.reporter.prom.factory.class"].endswith("PrometheusReporterFactory")
    assert conf["metrics.reporter.prom.port"] == 19000  # the JobManager's
    assert conf["metrics.reporter.prom.filterLabelValueCharacters"] is False
    started = started_argvs(monkeypatch, settings, running=set())
    assert "-Dmetrics.reporter.prom.port=19001" in started["flink-taskmanager"]
    assert "-Dmetrics.reporter.prom.port=19002" in started["flink-taskmanager-2"]
    assert cluster.metrics_endpoints() == {
        "flink-jobmanager": "http://127.0.0.1:19000/metrics",
        "flink-taskmanager": "http://127.0.0.1:19001/metrics",
        "flink-taskmanager-2": "http://127.0.0.1:19002/metrics",
    }


def test_port_zero_switches_the_reporter_off(monkeypatch, tmp_path):
    settings = StackSettings(home=tmp_path, flink_metrics_port=0)
    assert not any(
        k.startswith("metrics.reporter") for k in FlinkCluster(settings).runtime_config()
    )
    started = started_argvs(monkeypatch, settings, running=set())
    assert not any("metrics.reporter" in arg for argv in started.values() for arg in argv)
    assert FlinkCluster(settings).metrics_endpoints() == {}
