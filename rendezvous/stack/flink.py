"""A Flink standalone session cluster run from the ``apache-flink`` wheel's own distribution."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from rendezvous.errors import MissingTool
from rendezvous.settings import REPO_ROOT, StackSettings
from rendezvous.stack.procs import Service, ensure_port_free, listening_pid

PROJECT_CONF = REPO_ROOT / "flink-conf.yaml"

# The name of Flink's Prometheus reporter in the configuration (metrics.reporter.<name>.*).
REPORTER = "prom"
REPORTER_PORT = f"metrics.reporter.{REPORTER}.port"


def pyflink_home() -> Path:
    spec = importlib.util.find_spec("pyflink")
    if spec is None or spec.origin is None:
        raise MissingTool("PyFlink is not installed in this environment; run `make install`")
    return Path(spec.origin).parent


@functools.lru_cache(maxsize=4)
def _site_packages(python: Path) -> tuple[str, ...]:
    import subprocess

    code = "import site, sysconfig; print(sysconfig.get_paths()['purelib'])"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return tuple(line for line in out.stdout.splitlines() if line)


def metrics_endpoints(settings: StackSettings) -> dict[str, str]:
    """The local cluster's Prometheus endpoints: process name -> its /metrics URL (none for
    a cluster of your own: its reporters are its own configuration's)."""
    if not settings.flink_is_local:
        return {}
    return {
        name: f"http://{settings.host}:{port}/metrics"
        for name, port in settings.flink_metrics_ports.items()
    }


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


class FlinkCluster:
    name = "flink"

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.dir = settings.home / "flink"
        self.conf_dir = self.dir / "conf"
        self.lib_dir = self.dir / "lib"
        # `flink run`'s own configuration and jars for a cluster of your own, apart from the
        # local cluster's (a state folder may hold both).
        self.client_dir = self.dir / "client"
        self._client_ready = False
        self._client_lock = threading.Lock()
        self.jobmanager = Service("flink-jobmanager", settings.run_dir, settings.logs_dir)
        self.taskmanagers = tuple(
            Service(
                "flink-taskmanager" if i == 0 else f"flink-taskmanager-{i + 1}",
                settings.run_dir,
                settings.logs_dir,
            )
            for i in range(settings.flink_taskmanagers)
        )

    @property
    def address(self) -> str:
        return self.settings.flink_url

    @property
    def services(self) -> tuple[Service, ...]:
        return (self.jobmanager, *self.taskmanagers)

    # ---- configuration -----------------------------------------------------------------
    def runtime_config(self) -> dict[str, object]:
        s = self.settings
        # The wheel's defaults (they carry the JVM --add-opens flags Java 17 needs), then the
        # project's options, then this stack's addresses, sizes and folders.
        conf = _flatten(yaml.safe_load((pyflink_home() / "conf" / "config.yaml").read_text()) or {})
        conf.update(_flatten(yaml.safe_load(PROJECT_CONF.read_text()) or {}))
        conf.update(
            {
                "jobmanager.rpc.address": s.host,
                "jobmanager.rpc.port": s.flink_rpc_port,
                "jobmanager.bind-host": s.host,
                "taskmanager.bind-host": s.host,
                "taskmanager.host": s.host,
                "rest.address": s.host,
                "rest.bind-address": s.host,
                "rest.port": s.flink_rest_port,
                "jobmanager.memory.process.size": s.flink_jobmanager_memory,
                "taskmanager.memory.process.size": s.flink_taskmanager_memory,
                "taskmanager.numberOfTaskSlots": s.flink_taskmanager_slots,
                # With several TaskManagers, jobs go to the one with the most free slots.
                "taskmanager.load-balance.mode": "slots",
                "python.executable": str(s.python),
                "python.client.executable": str(s.python),
                "env.log.dir": str(s.logs_dir / "flink"),
                "env.pid.dir": str(self.dir / "pid"),
                "io.tmp.dirs": str(self.dir / "tmp"),
                "execution.checkpointing.dir": f"file://{s.data_dir / 'flink' / 'checkpoints'}",
                "execution.checkpointing.savepoint-dir": f"file://{s.data_dir / 'flink' / 'savepoints'}",
                "web.tmpdir": str(self.dir / "web"),
                "blob.server.port": "0",
                "taskmanager.rpc.port": "0",
                "taskmanager.data.port": "0",
            }
        )
        conf.update(self.reporter_config())
        return conf

    def reporter_config(self) -> dict[str, object]:
        """Flink's Prometheus reporter (the wheel's plugins/metrics-prometheus) on the
        JobManager's port; each TaskManager gets its own port when it starts
        (:meth:`start_taskmanagers`). Nothing when the settings switch it off.

        Label values stay as the jobs set them (a model called ``fraud-v2`` is
        ``model="fraud-v2"``, as in the archive). The Kafka clients' own metrics (hundreds of
        gauges per source and sink, read on every scrape) are left out; Flink's metrics of the
        same sources and sinks (records, bytes, offsets, lag) stay. The attempt number and ID
        are not labels, so a restarted task continues its series instead of starting new
        ones."""
        ports = self.settings.flink_metrics_ports
        if not ports:
            return {}
        prefix = f"metrics.reporter.{REPORTER}."
        return {
            prefix
            + "factory.class": "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
            REPORTER_PORT: ports["flink-jobmanager"],
            prefix + "filterLabelValueCharacters": False,
            prefix + "filter.excludes": ["*KafkaConsumer*", "*KafkaProducer*"],
            prefix + "scope.variables.excludes": "task_attempt_id;task_attempt_num",
        }

    def metrics_endpoints(self) -> dict[str, str]:
        """The local cluster's Prometheus endpoints: process name -> its /metrics URL."""
        return metrics_endpoints(self.settings)

    def write_config(self) -> None:
        home = pyflink_home()
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        for name in (
            "log4j.properties",
            "log4j-console.properties",
            "log4j-cli.properties",
            "log4j-session.properties",
        ):
            shutil.copyfile(home / "conf" / name, self.conf_dir / name)
        (self.conf_dir / "masters").write_text(
            f"{self.settings.host}:{self.settings.flink_rest_port}\n"
        )
        (self.conf_dir / "workers").write_text(f"{self.settings.host}\n")
        (self.conf_dir / "config.yaml").write_text(
            yaml.safe_dump(self.runtime_config(), sort_keys=True)
        )
        for sub in ("tmp", "web"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.settings.logs_dir / "flink").mkdir(parents=True, exist_ok=True)
        self._assemble_lib(home)

    def _assemble_lib(self, home: Path, lib_dir: Path | None = None) -> None:
        """The wheel's jars, flink-python, and the fetched connector jars, as symlinks."""
        lib_dir = lib_dir or self.lib_dir
        shutil.rmtree(lib_dir, ignore_errors=True)
        lib_dir.mkdir(parents=True)
        jars = list((home / "lib").glob("*.jar")) + list((home / "opt").glob("flink-python*.jar"))
        jars += list((self.settings.jars_dir / "flink").glob("*.jar"))
        for jar in jars:
            (lib_dir / jar.name).symlink_to(jar)

    def client_config(self) -> dict[str, object]:
        """`flink run`'s configuration for a cluster of your own: the wheel's defaults and the
        project's options, with its REST address; none of the local stack's folders or
        interpreters (the cluster's own checkpoint storage applies; the interpreter comes
        with -pyexec from flink_python)."""
        conf = _flatten(yaml.safe_load((pyflink_home() / "conf" / "config.yaml").read_text()) or {})
        conf.update(_flatten(yaml.safe_load(PROJECT_CONF.read_text()) or {}))
        url = urllib.parse.urlsplit(self.address)
        conf["rest.address"] = url.hostname or self.settings.host
        conf["rest.port"] = url.port or (443 if url.scheme == "https" else 80)
        for key in ("python.executable", "python.client.executable"):
            conf.pop(key, None)
        return conf

    def prepare_client(self) -> None:
        """For a cluster of your own, write `flink run`'s configuration folder and assemble
        its jars (the Kafka connector classes build the job graph where it is submitted), once
        per process; the local cluster's folders serve its own submissions."""
        if self.settings.flink_is_local:
            return
        with self._client_lock:
            if self._client_ready:
                return
            from rendezvous.stack.jars import ensure_jars

            ensure_jars(self.settings)
            conf_dir = self.client_dir / "conf"
            conf_dir.mkdir(parents=True, exist_ok=True)
            home = pyflink_home()
            for name in ("log4j-cli.properties", "log4j.properties"):
                shutil.copyfile(home / "conf" / name, conf_dir / name)
            (conf_dir / "config.yaml").write_text(
                yaml.safe_dump(self.client_config(), sort_keys=True)
            )
            (self.client_dir / "log").mkdir(exist_ok=True)
            self._assemble_lib(home, self.client_dir / "lib")
            self._client_ready = True

    def env(self, *, client: bool = False) -> dict[str, str]:
        """The environment of the local cluster's processes, or (``client``) of `flink run`,
        which for a cluster of your own reads the folders :meth:`prepare_client` writes."""
        env = dict(os.environ)
        home = pyflink_home()
        remote_client = client and not self.settings.flink_is_local
        env.update(
            FLINK_HOME=str(home),
            FLINK_CONF_DIR=str(self.client_dir / "conf" if remote_client else self.conf_dir),
            FLINK_LIB_DIR=str(self.client_dir / "lib" if remote_client else self.lib_dir),
            FLINK_LOG_DIR=str(
                self.client_dir / "log" if remote_client else self.settings.logs_dir / "flink"
            ),
            # Thread mode embeds the interpreter in the TaskManager JVM; that interpreter does not
            # read a virtualenv's site-packages by itself, so name them (and the project) here.
            PYTHONPATH=os.pathsep.join([*_site_packages(self.settings.python), str(REPO_ROOT)]),
            OMP_NUM_THREADS="1",
            PYTHONUNBUFFERED="1",
        )
        return env

    def bin(self, name: str) -> str:
        return str(pyflink_home() / "bin" / name)

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        s = self.settings
        ensure_port_free(
            s.host,
            s.flink_rest_port,
            wanted_by="the Flink web UI / REST API",
            setting="RDV_FLINK_REST_PORT",
        )
        ensure_port_free(
            s.host,
            s.flink_rpc_port,
            wanted_by="the Flink JobManager RPC",
            setting="RDV_FLINK_RPC_PORT",
        )
        for name, port in s.flink_metrics_ports.items():
            ensure_port_free(
                s.host,
                port,
                wanted_by=f"the Prometheus metrics of {name}",
                setting="RDV_FLINK_METRICS_PORT",
            )
        self.write_config()
        env = self.env()
        if self.jobmanager.pid() is None:
            self.jobmanager.start(
                ["bash", self.bin("jobmanager.sh"), "start-foreground"], env=env, cwd=self.dir
            )
        self.start_taskmanagers()

    def start_missing(self) -> list[str]:
        """With the JobManager up and answering, start the TaskManagers that are not running
        and return their names; otherwise start nothing and return []."""
        if self.jobmanager.pid() is None:
            return []
        try:
            self.rest("/overview")
        except Exception:
            return []
        return self.start_taskmanagers()

    def start_taskmanagers(self, *, nice: int = 0) -> list[str]:
        """Start the TaskManagers that are not running (after a crash, say); their names.

        ``nice`` > 0 starts them at a lower CPU priority: a replacement booting on the cores
        that serve traffic then takes only what the serving path leaves.

        Each gets the slots the settings give now (``-D``, over the configuration written when
        the cluster started), so TaskManagers added beside a running JobManager (``rendezvous
        up --taskmanagers N --slots S``) can have more slots than the first ones.
        """
        env = self.env()
        started = []
        prefix = ["nice", "-n", str(nice)] if nice else []
        slots = f"-Dtaskmanager.numberOfTaskSlots={self.settings.flink_taskmanager_slots}"
        metrics_ports = self.settings.flink_metrics_ports
        for taskmanager in self.taskmanagers:
            if taskmanager.pid() is None:
                port = metrics_ports.get(taskmanager.name)
                metrics = [f"-D{REPORTER_PORT}={port}"] if port else []
                taskmanager.start(
                    [
                        *prefix,
                        "bash",
                        self.bin("taskmanager.sh"),
                        "start-foreground",
                        *metrics,
                        slots,
                    ],
                    env=env,
                    cwd=self.dir,
                )
                started.append(taskmanager.name)
        return started

    def taskmanager_services(self) -> dict[str, Service]:
        """Each registered TaskManager's resource ID, and the local service that runs it."""
        registered = self.rest("/taskmanagers", timeout_s=10)["taskmanagers"]
        running = {svc.pid(): svc for svc in self.taskmanagers if svc.pid() is not None}
        found = {}
        for tm in registered:  # IDs read "<host>:<rpc port>-<suffix>"
            port = int(tm["id"].split(":", 1)[1].split("-", 1)[0])
            pid = listening_pid(port, list(running))
            if pid is not None:
                found[tm["id"]] = running[pid]
        return found

    def busiest_taskmanager(self, job_id: str | None = None) -> Service:
        """The TaskManager running the most tasks (of one job, or of all): the worst to lose."""
        services = self.taskmanager_services()
        tasks = dict.fromkeys(services, 0)
        jobs = [job_id] if job_id else [j["jid"] for j in self.jobs() if j["state"] == "RUNNING"]
        for jid in jobs:
            for vertex in self.rest(f"/jobs/{jid}", timeout_s=10)["vertices"]:
                placed = self.rest(
                    f"/jobs/{jid}/vertices/{vertex['id']}/taskmanagers", timeout_s=10
                )
                for tm in placed["taskmanagers"]:
                    if tm["taskmanager-id"] in tasks:
                        tasks[tm["taskmanager-id"]] += 1
        if not tasks:
            return self.taskmanagers[0]
        return services[max(tasks, key=tasks.get)]

    def rest(self, path: str, timeout_s: float = 2.0) -> dict:
        with urllib.request.urlopen(self.address + path, timeout=timeout_s) as resp:
            return json.loads(resp.read())

    def ready(self) -> bool:
        """Whether the cluster answers with its TaskManagers registered (all of the local
        stack's; at least one of a cluster of your own)."""
        wanted = len(self.taskmanagers) if self.settings.flink_is_local else 1
        try:
            return self.rest("/overview").get("taskmanagers", 0) >= wanted
        except Exception:
            return False

    def check_reachable(self, timeout_s: float = 10.0) -> None:
        """Raise StackError in one line, naming the setting, unless a Flink REST API answers
        at the address."""
        from rendezvous.errors import StackError

        where = (
            "RDV_FLINK_REST_URL or the profile's flink_rest_url"
            if not self.settings.flink_is_local
            else "run `rendezvous up` first"
        )
        try:
            overview = self.rest("/overview", timeout_s=timeout_s)
        except Exception as exc:
            reason = getattr(exc, "reason", None) or exc
            raise StackError(
                f"no Flink cluster answers at {self.address} ({reason}); {where}"
            ) from None
        if not isinstance(overview, dict) or "slots-total" not in overview:
            raise StackError(
                f"{self.address} answers, but not as a Flink REST API (no /overview); fix {where}"
            )
        if overview.get("taskmanagers", 0) < 1:
            raise StackError(f"the Flink cluster at {self.address} has no TaskManager running")

    def jobs(self) -> list[dict]:
        return self.rest("/jobs/overview").get("jobs", [])

    def submit(
        self,
        script: Path,
        args: list[str],
        *,
        name_hint: str = "",
        detached: bool = True,
        python_files: tuple[Path, ...] = (),
        parallelism: int = 1,
    ) -> str:
        """Submit a PyFlink job (at ``parallelism``) and return its JobID; ``detached=False`` waits until it ends
        (a batch job) and raises if it failed.

        Every job carries the project's code (a zip of its packages, built once per version:
        :mod:`rendezvous.shipping`) and ``python_files`` (folders, .py, .zip, .whl), put on its
        Python path on every worker (``-pyfs``), so the TaskManagers need the third-party
        packages only. Python runs there as the settings' :attr:`cluster_python` says
        (``-pyexec``); the job script runs here, with this interpreter (``-pyclientexec``)."""
        import re
        import subprocess

        from rendezvous import shipping
        from rendezvous.errors import StackError

        self.prepare_client()
        project = shipping.ensure_zip(self.settings.ship_dir, REPO_ROOT)
        cluster_python = self.settings.cluster_python
        argv = [
            "bash",
            self.bin("flink"),
            "run",
            *(["-d"] if detached else []),
            "-m",
            self.address.split("://", 1)[-1],
            "-p",
            str(parallelism),
            "-py",
            str(script),
            *(["-pyexec", cluster_python] if cluster_python else []),
            "-pyclientexec",
            str(self.settings.python),
            "-pyfs",
            ",".join(str(p) for p in (project, *python_files)),
            *args,
        ]
        done = subprocess.run(
            argv, capture_output=True, text=True, env=self.env(client=True), cwd=REPO_ROOT
        )
        match = re.search(r"JobID ([0-9a-f]{32})", done.stdout + done.stderr)
        if done.returncode != 0 or match is None:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            raise StackError(
                f"submitting {name_hint or script.name} to {self.address} failed:\n{tail}"
            )
        return match.group(1)

    def cancel(self, job_id: str) -> None:
        req = urllib.request.Request(f"{self.address}/jobs/{job_id}?mode=cancel", method="PATCH")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def stop(self, job_id: str, *, timeout_s: float = 30.0, interval_s: float = 0.2) -> bool:
        """Stop the job with a savepoint, without draining; True once it has FINISHED, False
        when it could not be stopped that way in ``timeout_s`` (no savepoint directory on the
        cluster, a job that is not running, a savepoint that failed): the caller cancels it.

        Tasks end between records, after the savepoint barrier, so a Python operator in process
        mode closes with no bundle open (cancelling one mid-bundle can bring its whole
        TaskManager down) and a transactional sink commits what it wrote before it stops.
        """
        deadline = time.monotonic() + timeout_s
        body = json.dumps({"drain": False}).encode()
        req = urllib.request.Request(
            f"{self.address}/jobs/{job_id}/stop",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                trigger = json.loads(resp.read())["request-id"]
            while time.monotonic() < deadline:
                status = self.rest(f"/jobs/{job_id}/savepoints/{trigger}", timeout_s=10)
                if status.get("status", {}).get("id") == "COMPLETED":
                    if "failure-cause" in status.get("operation", {}):
                        return False
                    break
                time.sleep(interval_s)  # between polls of a savepoint under way
            else:
                return False
            while time.monotonic() < deadline:
                if self.rest(f"/jobs/{job_id}", timeout_s=10).get("state") == "FINISHED":
                    return True
                time.sleep(interval_s)  # the tasks end once the savepoint is complete
        except (OSError, ValueError, KeyError):
            return False
        return False
