"""Process supervision and port checks, with throwaway local processes and sockets."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from rendezvous.errors import ComponentDied, PortInUse, StackError
from rendezvous.stack.procs import Service, ensure_port_free, pid_alive, port_open, port_owner


@pytest.fixture
def listening() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


@pytest.fixture
def service(tmp_path) -> Service:
    svc = Service("sleeper", tmp_path / "run", tmp_path / "logs")
    yield svc
    svc.stop(timeout_s=5)


def test_port_in_use_names_the_port_the_holder_and_the_setting(listening):
    port = listening.getsockname()[1]
    with pytest.raises(PortInUse) as err:
        ensure_port_free("127.0.0.1", port, wanted_by="Kafka", setting="RDV_KAFKA_PORT")
    message = err.value.message
    assert f"port {port}" in message
    assert f"pid {os.getpid()}" in message
    assert "RDV_KAFKA_PORT=<port>" in message
    assert "Kafka needs it" in message
    assert err.value.code == "port_in_use"


def test_a_free_port_passes(listening):
    port = listening.getsockname()[1]
    listening.close()
    ensure_port_free("127.0.0.1", port, wanted_by="Kafka", setting="RDV_KAFKA_PORT")
    assert port_owner(port) is None
    assert not port_open("127.0.0.1", port)


def test_port_owner_and_port_open(listening):
    port = listening.getsockname()[1]
    assert port_owner(port) == f"pid {os.getpid()} ({_comm(os.getpid())})"
    assert port_open("127.0.0.1", port)


def test_service_starts_records_its_pid_and_stops(service, tmp_path):
    proc = service.start(
        [sys.executable, "-c", "import time; print('hello', flush=True); time.sleep(60)"],
        env=os.environ,
        cwd=tmp_path,
    )
    assert service.pid() == proc.pid
    assert service.pid_file.read_text() == str(proc.pid)
    assert service.stop(timeout_s=5) is True
    proc.wait(timeout=5)
    assert not pid_alive(proc.pid)
    assert not service.pid_file.exists()
    assert service.stop() is False  # nothing left to stop


def test_a_stale_pid_file_is_removed(service, tmp_path):
    proc = service.start([sys.executable, "-c", "pass"], env=os.environ, cwd=tmp_path)
    proc.wait(timeout=10)
    assert service.pid() is None
    assert not service.pid_file.exists()


def test_wait_ready_fails_fast_with_the_log_tail_when_the_process_dies(service, tmp_path):
    proc = service.start(
        [sys.executable, "-c", "import sys; print('boom: bad config', flush=True); sys.exit(3)"],
        env=os.environ,
        cwd=tmp_path,
    )
    proc.wait(timeout=10)
    with pytest.raises(ComponentDied) as err:
        service.wait_ready(lambda: False, timeout_s=30, what="probe nothing")
    assert "sleeper exited while starting" in err.value.message
    assert "boom: bad config" in err.value.message


def test_wait_ready_times_out_with_the_log_file(service, tmp_path):
    service.start(
        [sys.executable, "-c", "import time; time.sleep(60)"], env=os.environ, cwd=tmp_path
    )
    with pytest.raises(StackError) as err:
        service.wait_ready(lambda: False, timeout_s=0.3, what="probe nothing")
    assert "did not become ready (probe nothing)" in err.value.message
    assert str(service.log_file) in err.value.message


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as fh:
        return fh.read().strip()
