"""The local stack: Kafka, Flink and MLflow on loopback, started and stopped by pid."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from rendezvous.settings import StackSettings
from rendezvous.stack.flink import FlinkCluster
from rendezvous.stack.jars import ensure_jars
from rendezvous.stack.kafka import KafkaBroker
from rendezvous.stack.mlflow_server import MlflowServer
from rendezvous.stack.procs import ComponentDied, Service


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    up: bool
    address: str
    pids: tuple[int | None, ...]


class Stack:
    """Kafka + Flink + MLflow for one state folder."""

    def __init__(self, settings: StackSettings, *, log: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.log = log
        self.kafka = KafkaBroker(settings)
        self.flink = FlinkCluster(settings)
        self.mlflow = MlflowServer(settings)

    def processes(self) -> list[Service]:
        """Every process of the stack: the broker, the JobManager and TaskManagers, MLflow."""
        return [svc for _, services in self._components() for svc in services]

    def _components(self):
        return (
            (self.kafka, (self.kafka.service,)),
            (self.flink, self.flink.services),
            (self.mlflow, (self.mlflow.service,)),
        )

    def up(self) -> dict[str, float]:
        """Start whatever is not running and wait until every component answers its probe."""
        s = self.settings
        started_at = time.monotonic()
        for folder in (s.home, s.logs_dir, s.run_dir, s.data_dir):
            folder.mkdir(parents=True, exist_ok=True)
        ensure_jars(s, log=self.log)
        timings: dict[str, float] = {}
        pending = []
        for component, services in self._components():
            running = [svc.pid() is not None for svc in services]
            if all(running) and component.ready():
                self.log(f"  {component.name:<7} already running at {component.address}")
                continue
            start_missing = getattr(component, "start_missing", None)
            if any(running) and start_missing is not None:
                # A TaskManager lost beside a live JobManager: start only it, so the jobs and
                # their state survive (they are already running again on the other one).
                restarted = start_missing()
                if restarted:
                    self.log(f"  {component.name:<7} starting {', '.join(restarted)} ...")
                    pending.append((component, services))
                    continue
            if any(running):
                for svc in services:
                    svc.stop()
            self.log(f"  {component.name:<7} starting ...")
            component.start()
            pending.append((component, services))
        for component, services in pending:
            t0 = time.monotonic()
            for svc in services:
                svc.wait_ready(
                    partial(_all_alive, component, services),
                    timeout_s=s.start_timeout_s,
                    what=f"probe {component.address}",
                )
            timings[component.name] = time.monotonic() - t0
            self.log(f"  {component.name:<7} ready at {component.address}")
        created = self.kafka.create_topics()
        if created:
            self.log(f"  topics  created {', '.join(created)}")
        timings["total"] = time.monotonic() - started_at
        return timings

    def down(self, *, purge: bool = False) -> list[str]:
        stopped = []
        # Flink first (its jobs talk to Kafka), then MLflow, Kafka last.
        for svc in (*self.flink.services, self.mlflow.service, self.kafka.service):
            if svc.stop():
                stopped.append(svc.name)
        for extra in self.extra_services():
            if extra.stop():
                stopped.append(extra.name)
        if purge:
            shutil.rmtree(self.settings.data_dir, ignore_errors=True)
            shutil.rmtree(self.settings.logs_dir, ignore_errors=True)
        return stopped

    def extra_services(self) -> list[Service]:
        """Other processes started in this state folder (proxies), by their pid files."""
        known = {svc.name for _, services in self._components() for svc in services}
        run = self.settings.run_dir
        if not run.exists():
            return []
        return [
            Service(p.stem, run, self.settings.logs_dir)
            for p in sorted(run.glob("*.pid"))
            if p.stem not in known
        ]

    def status(self) -> list[ComponentStatus]:
        """One row per component. A component the settings point elsewhere (a profile's
        broker, cluster or tracking server) is up when it answers; it has no local pids."""
        s = self.settings
        local = {"kafka": s.kafka_is_local, "flink": s.flink_is_local, "mlflow": s.mlflow_is_local}
        out = []
        for component, services in self._components():
            if not local[component.name]:
                out.append(
                    ComponentStatus(component.name, component.ready(), component.address, ())
                )
                continue
            pids = tuple(svc.pid() for svc in services)
            up = all(p is not None for p in pids) and component.ready()
            out.append(ComponentStatus(component.name, up, component.address, pids))
        for svc in self.extra_services():
            pid = svc.pid()
            out.append(ComponentStatus(svc.name, pid is not None, "", (pid,)))
        return out


def _all_alive(component: Any, services: tuple[Service, ...]) -> bool:
    """``component.ready()``, failing at once when one of its processes (a TaskManager next
    to the JobManager being probed, say) has died."""
    for svc in services:
        if svc.pid() is None:
            raise ComponentDied(
                f"{svc.name} exited while starting ({component.name}); last lines of "
                f"{svc.log_file}:\n{svc.log_tail()}"
            )
    return component.ready()
