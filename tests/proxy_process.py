"""A proxy replica as its own process (``rendezvous proxy``) against the stack under test,
started and waited for the way the project's commands wait: until ``/readyz`` answers 200."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx


def proxy_argv(stack, config_path: Path, port: int, replica: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rendezvous.cli",
        "proxy",
        "--config",
        str(config_path),
        "--port",
        str(port),
        "--bootstrap",
        stack.settings.kafka_bootstrap,
        "--replica-id",
        replica,
        *extra,
    ]


def start_proxy(
    stack,
    config_path: Path,
    port: int,
    replica: str,
    *extra: str,
    env: dict[str, str] | None = None,
    url: str | None = None,
    verify: object = True,
) -> subprocess.Popen:
    """A ready replica (``env`` added to this process's environment); ``url`` is where to probe
    it (default ``http://127.0.0.1:<port>``), ``verify`` how to trust its certificate."""
    argv = proxy_argv(stack, config_path, port, replica, *extra)
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    base = url or f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"proxy exited: {proc.stdout.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1, verify=verify).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # between probes of a replica that is still starting
    stop(proc)
    raise AssertionError(f"the proxy at {base} did not become ready within 60 s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
