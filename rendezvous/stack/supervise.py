"""Supervising the local stack: repair what is missing as soon as it goes, on its own.

``rendezvous up --supervise`` stays in the foreground and checks the stack's processes every
``RDV_SUPERVISE_INTERVAL_S``. A lost TaskManager is started again beside the live JobManager
(the jobs run on and keep their state); a lost broker or MLflow server is started again on its
data. A lost JobManager takes the cluster's jobs with it (the local cluster keeps no job
store), so the supervisor starts Flink again and resubmits every configuration file whose
services are defined on the cluster: the jobs resume from their committed Kafka offsets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path


def missing(stack) -> list[str]:
    """The names of the stack's processes that are not running."""
    return [svc.name for svc in stack.processes() if svc.pid() is None]


def defined_files(stack) -> list[Path]:
    """The configuration files whose services are defined on the cluster."""
    from rendezvous import control

    log = control.KafkaControl(stack.settings.kafka)
    return sorted({Path(d.source) for d in log.catalog().services.values()})


def repair(
    stack,
    *,
    log: Callable[[str], None] = print,
    resubmit: Callable[[Path], object] | None = None,
    files: Callable[[], list[Path]] | None = None,
) -> list[str]:
    """Start what is missing (see :meth:`Stack.up`); after a lost JobManager, resubmit the
    defined files' jobs. Returns the names that were missing."""
    gone = missing(stack)
    if not gone:
        return gone
    log(f"{_now()} missing: {', '.join(gone)}; starting it again")
    jobs_lost = stack.flink.jobmanager.name in gone
    stack.up()
    if jobs_lost:
        from rendezvous import deploy

        resubmit = resubmit or (
            lambda path: deploy.submit(stack, path, log=lambda line: log("  " + line))
        )
        for path in (files or (lambda: defined_files(stack)))():
            if not path.exists():
                log(f"{_now()} cannot resubmit {path}: the file is gone")
                continue
            log(f"{_now()} resubmitting {path}")
            try:
                resubmit(path)
            except Exception as exc:  # one file's failure must not stop the others' repair
                log(f"{_now()} resubmitting {path} failed: {exc}")
    log(f"{_now()} repaired: {', '.join(gone)}")
    return gone


def supervise(
    stack,
    *,
    interval_s: float,
    stop: threading.Event | None = None,
    log: Callable[[str], None] = print,
) -> None:
    """Repair the stack every ``interval_s`` until ``stop`` is set (or Ctrl-C)."""
    stop = stop or threading.Event()
    log(f"{_now()} supervising the stack in {stack.settings.home} every {interval_s:g} s")
    while not stop.is_set():
        try:
            repair(stack, log=log)
        except Exception as exc:  # a failed repair is retried on the next round
            log(f"{_now()} repair failed: {exc}; trying again in {interval_s:g} s")
        stop.wait(interval_s)


def _now() -> str:
    return datetime.fromtimestamp(time.time(), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
