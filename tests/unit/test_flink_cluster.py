"""The local Flink cluster grows beside a running JobManager: TaskManagers that are missing
start with the slots the settings give now, and `rendezvous up --taskmanagers N --slots S`
passes those sizes down."""

from __future__ import annotations

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
    assert argv[-2:] == ["start-foreground", "-Dtaskmanager.numberOfTaskSlots=16"]


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
