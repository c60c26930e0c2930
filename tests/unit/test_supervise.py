"""What the supervisor repairs, and when it resubmits, against a fake stack."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from rendezvous.stack import supervise

pytestmark = pytest.mark.unit


class Proc:
    def __init__(self, name: str, alive: bool = True) -> None:
        self.name, self.alive = name, alive

    def pid(self):
        return 1234 if self.alive else None


class FakeStack:
    def __init__(self, *dead: str) -> None:
        self.procs = [Proc(n, n not in dead) for n in ("kafka", "flink-jobmanager", "flink-tm-1")]
        self.flink = SimpleNamespace(jobmanager=self.procs[1])
        self.settings = SimpleNamespace(home=Path("/state"))
        self.ups = 0

    def processes(self):
        return self.procs

    def up(self):
        self.ups += 1
        for p in self.procs:
            p.alive = True


def test_nothing_missing_nothing_done():
    stack, lines = FakeStack(), []
    assert supervise.repair(stack, log=lines.append) == []
    assert stack.ups == 0 and lines == []


def test_a_lost_taskmanager_is_started_again_and_nothing_resubmitted():
    stack, lines, sent = FakeStack("flink-tm-1"), [], []
    assert supervise.repair(stack, log=lines.append, resubmit=sent.append, files=lambda: []) == [
        "flink-tm-1"
    ]
    assert stack.ups == 1 and sent == []
    assert "missing: flink-tm-1; starting it again" in lines[0]


def test_a_lost_jobmanager_resubmits_every_defined_file_that_still_exists(tmp_path):
    here, gone = tmp_path / "a.yaml", tmp_path / "gone.yaml"
    here.write_text("services: {}")
    stack, lines, sent = FakeStack("flink-jobmanager"), [], []

    def resubmit(path):
        sent.append(path)

    supervise.repair(stack, log=lines.append, resubmit=resubmit, files=lambda: [gone, here])
    assert sent == [here]
    assert any(f"cannot resubmit {gone}: the file is gone" in line for line in lines)


def test_one_files_failure_does_not_stop_the_others(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    for p in (a, b):
        p.write_text("services: {}")
    stack, lines, sent = FakeStack("flink-jobmanager"), [], []

    def resubmit(path):
        if path == a:
            raise RuntimeError("no slots")
        sent.append(path)

    supervise.repair(stack, log=lines.append, resubmit=resubmit, files=lambda: [a, b])
    assert sent == [b] and any("resubmitting" in x and "failed: no slots" in x for x in lines)


def test_supervise_keeps_going_after_a_failed_repair_and_stops_when_told():
    stack, lines, stop = FakeStack("kafka"), [], threading.Event()
    calls = []

    def up():
        calls.append(1)
        if len(calls) == 1:
            raise OSError("port in use")
        stop.set()
        for p in stack.procs:
            p.alive = True

    stack.up = up
    supervise.supervise(stack, interval_s=0.01, stop=stop, log=lines.append)
    assert len(calls) == 2
    assert any("repair failed: port in use" in line for line in lines)
