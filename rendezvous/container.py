"""The entry point of the ``rendezvous`` container image (``docker/Containerfile``).

Each sub-command runs one component in the foreground, as a container's main process::

    jobmanager | taskmanager   a Flink session cluster node, from the apache-flink wheel's
                               distribution with the project's jars
    mlflow                     the MLflow tracking server (SQLite and artifacts in a volume)
    proxy [ARGS]               an HTTP proxy replica for the services defined on the cluster
    setup                      waits for Kafka, Flink and MLflow, creates the topics, registers
                               the demo models and submits the demo service, then exits
    wait-for-services          waits until a service is defined on the cluster (before a
                               proxy starts: it serves the services defined when it starts)
    jars MAVEN_FLINK_DIR       (image build) compiles java/ beside the Maven jars, stamped
    flink-home DIR             (image build) lays out FLINK_HOME (/opt/flink): the wheel's
                               distribution with the project's jars in lib/

Anything else runs as a command (``rendezvous status``, ``bash``). Settings come from
``RDV_*`` variables (:class:`ContainerSettings`); the CLI's connection profile from
``RDV_PROFILE`` / ``RDV_PROFILES`` as everywhere.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from rendezvous.errors import RendezvousError, StackError
from rendezvous.settings import EnvSettings, StackSettings

ROLES = (
    "jobmanager",
    "taskmanager",
    "mlflow",
    "proxy",
    "setup",
    "wait-for-services",
    "jars",
    "flink-home",
)


class ContainerSettings(EnvSettings):
    """How a container of the image runs its component (``RDV_<FIELD>`` variables)."""

    home: Path = Path("/var/lib/rendezvous")
    # The JobManager's name on the network (a compose service, a Kubernetes Service).
    flink_jobmanager: str = "jobmanager"
    flink_rest_port: int = 8081
    flink_rpc_port: int = 6123
    flink_blob_port: int = 6124
    flink_taskmanager_rpc_port: int = 6122
    flink_taskmanager_data_port: int = 6121
    flink_taskmanager_slots: int = 8
    flink_taskmanager_memory: str = "3072m"
    flink_jobmanager_memory: str = "1024m"
    mlflow_dir: Path = Path("/var/lib/mlflow")
    mlflow_port: int = 5000
    # The Host headers the MLflow server answers (its DNS-rebinding guard refuses others).
    mlflow_allowed_hosts: str = "mlflow,mlflow:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*"
    proxy_port: int = 8000
    # How long `setup` waits for Kafka, Flink and MLflow to answer.
    setup_timeout_s: float = 300.0

    @property
    def data_dir(self) -> Path:
        """The volume the TaskManagers write the archive and checkpoints to, and the proxy and
        the CLI read the archive from."""
        return self.home / "data"

    @property
    def flink_dir(self) -> Path:
        return self.home / "flink"


# ---- Flink -----------------------------------------------------------------------------


def flink_config(
    settings: ContainerSettings, *, python: str, base: Mapping[str, object]
) -> dict[str, object]:
    """A node's ``config.yaml``: ``base`` (the wheel's defaults, then the project's
    ``flink-conf.yaml``, flattened) with the container's addresses, sizes and folders. Every
    listener binds all interfaces; a TaskManager advertises the address it reaches the
    JobManager from (no ``taskmanager.host``), as on Kubernetes."""
    s = settings
    conf = dict(base)
    conf.pop("taskmanager.host", None)
    conf.update(
        {
            "jobmanager.rpc.address": s.flink_jobmanager,
            "jobmanager.rpc.port": s.flink_rpc_port,
            "jobmanager.bind-host": "0.0.0.0",
            "taskmanager.bind-host": "0.0.0.0",
            "rest.address": s.flink_jobmanager,
            "rest.bind-address": "0.0.0.0",
            "rest.port": s.flink_rest_port,
            "blob.server.port": s.flink_blob_port,
            "taskmanager.rpc.port": s.flink_taskmanager_rpc_port,
            "taskmanager.data.port": s.flink_taskmanager_data_port,
            "jobmanager.memory.process.size": s.flink_jobmanager_memory,
            "taskmanager.memory.process.size": s.flink_taskmanager_memory,
            "taskmanager.numberOfTaskSlots": s.flink_taskmanager_slots,
            "taskmanager.load-balance.mode": "slots",
            "python.executable": python,
            "python.client.executable": python,
            "env.log.dir": str(s.flink_dir / "log"),
            "env.pid.dir": str(s.flink_dir / "pid"),
            "io.tmp.dirs": str(s.flink_dir / "tmp"),
            "web.tmpdir": str(s.flink_dir / "web"),
            # Shared by the JobManager and the TaskManagers (the data volume).
            "execution.checkpointing.dir": f"file://{s.data_dir / 'flink' / 'checkpoints'}",
            "execution.checkpointing.savepoint-dir": f"file://{s.data_dir / 'flink' / 'savepoints'}",
        }
    )
    return conf


def _flink_base() -> dict[str, object]:
    import yaml

    from rendezvous.stack.flink import PROJECT_CONF, _flatten, pyflink_home

    conf = _flatten(yaml.safe_load((pyflink_home() / "conf" / "config.yaml").read_text()) or {})
    conf.update(_flatten(yaml.safe_load(PROJECT_CONF.read_text()) or {}))
    return conf


def flink_home(target: Path, settings: ContainerSettings, *, python: str) -> Path:
    """(image build) Lay out ``target`` as a Flink distribution: the apache-flink wheel's
    ``bin`` and ``opt``, a ``lib`` with its jars, flink-python and the project's (Maven's and
    ``java/``'s), a ``conf`` with a node's configuration, and empty ``plugins`` and ``log``.

    Whatever ``target`` held before (the official image's own distribution) is replaced, so
    that the Java side of Flink is the version of its Python side. ``bin`` is a copy, not a
    link: Flink's scripts take the folder above their own as ``FLINK_HOME``."""
    from rendezvous.stack.flink import FlinkCluster, pyflink_home

    wheel = pyflink_home()
    cluster = FlinkCluster(StackSettings(home=settings.home))
    if not any((cluster.settings.jars_dir / "flink").glob("*.jar")):
        raise StackError(
            f"no Flink jars in {cluster.settings.jars_dir / 'flink'}; "
            "run the `jars` step first (the image's jars stage)"
        )
    target.mkdir(parents=True, exist_ok=True)
    for entry in list(target.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    shutil.copytree(wheel / "bin", target / "bin")
    (target / "opt").symlink_to(wheel / "opt")
    for sub in ("conf", "plugins", "log"):
        (target / sub).mkdir()
    for conf in (wheel / "conf").iterdir():
        if conf.name != "config.yaml":
            shutil.copyfile(conf, target / "conf" / conf.name)
    _write_config(target / "conf", flink_config(settings, python=python, base=_flink_base()))
    cluster._assemble_lib(wheel, target / "lib")
    return target


def _write_config(conf_dir: Path, conf: Mapping[str, object]) -> None:
    import yaml

    (conf_dir / "config.yaml").write_text(yaml.safe_dump(dict(conf), sort_keys=True))


def _image_flink_home(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The image's Flink distribution (``FLINK_HOME`` laid out by :func:`flink_home`), or
    None where there is none (a checkout: the wheel's distribution, assembled at start)."""
    home = environ.get("FLINK_HOME")
    if home and any((Path(home) / "lib").glob("flink-python*.jar")):
        return Path(home)
    return None


def run_flink(role: str, settings: ContainerSettings) -> None:
    """Write the node's configuration (and, outside the image, its lib folder) and exec it in
    the foreground."""
    from rendezvous.stack.flink import FlinkCluster, _site_packages, pyflink_home

    image_home = _image_flink_home()
    home = image_home or pyflink_home()
    conf_dir = settings.flink_dir / "conf"
    for sub in ("conf", "log", "pid", "tmp", "web"):
        (settings.flink_dir / sub).mkdir(parents=True, exist_ok=True)
    for name in ("log4j.properties", "log4j-console.properties", "log4j-cli.properties"):
        shutil.copyfile(home / "conf" / name, conf_dir / name)
    _write_config(conf_dir, flink_config(settings, python=sys.executable, base=_flink_base()))
    if image_home is None:
        # The wheel's jars, flink-python and the connector and project jars.
        lib_dir = settings.flink_dir / "lib"
        FlinkCluster(StackSettings(home=settings.home))._assemble_lib(home, lib_dir)
    else:
        lib_dir = image_home / "lib"
    env = dict(
        os.environ,
        FLINK_HOME=str(home),
        FLINK_CONF_DIR=str(conf_dir),
        FLINK_LIB_DIR=str(lib_dir),
        FLINK_LOG_DIR=str(settings.flink_dir / "log"),
        # The embedded interpreter (thread mode) reads the virtualenv's packages from here; the
        # project's own code comes with each job.
        PYTHONPATH=os.pathsep.join(_site_packages(Path(sys.executable))),
        OMP_NUM_THREADS="1",
    )
    script = str(home / "bin" / f"{role}.sh")
    os.execvpe("bash", ["bash", script, "start-foreground"], env)


# ---- MLflow and the proxy -----------------------------------------------------------------


def run_mlflow(settings: ContainerSettings) -> None:
    folder = settings.mlflow_dir
    (folder / "artifacts").mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "mlflow", "server"]
    argv += ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    argv += ["--artifacts-destination", str(folder / "artifacts")]
    argv += ["--host", "0.0.0.0", "--port", str(settings.mlflow_port), "--workers", "1"]
    env = dict(
        os.environ,
        MLFLOW_HOME=str(folder),
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        MLFLOW_SERVER_ALLOWED_HOSTS=settings.mlflow_allowed_hosts,
    )
    os.execvpe(argv[0], argv, env)


def run_proxy(settings: ContainerSettings, extra: list[str]) -> None:
    argv = [sys.executable, "-m", "rendezvous.cli", "proxy", "--host", "0.0.0.0"]
    argv += ["--port", str(settings.proxy_port), *extra]
    os.execvp(argv[0], argv)


# ---- the one-shot setup -------------------------------------------------------------------


def wait_for(probe: Callable[[], bool], *, what: str, timeout_s: float, fix: str) -> float:
    """Poll ``probe`` until it holds; StackError naming ``what`` and ``fix`` after
    ``timeout_s``. Returns the seconds waited."""
    started = time.monotonic()
    delay = 0.2
    while not probe():
        waited = time.monotonic() - started
        if waited > timeout_s:
            raise StackError(f"{what} did not answer within {timeout_s:.0f} s; {fix}")
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)
    return time.monotonic() - started


def setup(settings: ContainerSettings, stack_settings: StackSettings, *, log=print) -> None:
    """Wait for the services, create the topics, register the demo models, submit the demo
    service (each step idempotent: a second run changes nothing)."""
    from rendezvous import demo, deploy
    from rendezvous.stack import Stack
    from rendezvous.stack.procs import port_open

    stack = Stack(stack_settings, log=log)
    timeout = settings.setup_timeout_s
    bootstrap = stack_settings.kafka_bootstrap
    wait_for(
        lambda: any(port_open(*_host_port(a), timeout_s=1.0) for a in bootstrap.split(",")),
        what=f"Kafka's port at {bootstrap}",
        timeout_s=timeout,
        fix="see the logs of its container",
    )
    for component, what in (
        (stack.kafka, f"Kafka at {bootstrap}"),
        (stack.flink, f"a Flink cluster with a TaskManager at {stack_settings.flink_url}"),
        (stack.mlflow, f"MLflow at {stack_settings.mlflow_url}"),
    ):
        waited = wait_for(
            component.ready,
            what=what,
            timeout_s=timeout,
            fix=f"see the logs of its container, or raise {ContainerSettings.variable('setup_timeout_s')}",
        )
        log(f"{component.name} answers ({waited:.0f} s)")
    created = stack.kafka.create_topics()
    log(f"created {', '.join(created)}" if created else "every topic is there already")
    demo.ensure_models(stack_settings, print=log)
    config_path = demo.write_config(stack_settings)
    log(f"configuration written to {config_path}")
    deploy.submit(stack, config_path, log=lambda line: log("  " + line))


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    return host.strip("[]"), int(port)


def wait_for_services(settings: ContainerSettings, stack_settings: StackSettings) -> float:
    """Wait until the cluster's control topic defines a service (``setup`` or ``rendezvous
    submit`` defined it); the seconds waited."""
    from rendezvous import control

    def defined() -> bool:
        try:
            return bool(control.defined_services(control.KafkaControl(stack_settings.kafka)))
        except Exception:  # the broker or the topic is not there yet
            return False

    return wait_for(
        defined,
        what=f"a service defined on Kafka at {stack_settings.kafka_bootstrap}",
        timeout_s=settings.setup_timeout_s,
        fix="run the setup (`setup` role) or `rendezvous submit` first",
    )


# ---- the image build ----------------------------------------------------------------------


def build_jars(maven_flink: Path, stack_settings: StackSettings) -> Path:
    """Put the Maven jars of ``maven_flink`` in the state folder's jars, compile java/ beside
    them and stamp them as :func:`rendezvous.stack.jars.ensure_jars` does, so that nothing
    fetches or compiles them again in the image."""
    from rendezvous.stack import jars

    target = stack_settings.jars_dir / "flink"
    target.mkdir(parents=True, exist_ok=True)
    for jar in sorted(maven_flink.glob("*.jar")):
        shutil.copyfile(jar, target / jar.name)
    jars.build_project_jar(target / jars.PROJECT_JAR, target)
    (stack_settings.jars_dir / ".fingerprint").write_text(jars._fingerprint(stack_settings))
    return target


# ---- the command line ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rendezvous-container",
        description="Run one component of the stack in this container (or any command).",
    )
    sub = parser.add_subparsers(dest="role", required=True, metavar="ROLE")
    sub.add_parser("jobmanager", help="a Flink JobManager (session cluster)")
    sub.add_parser("taskmanager", help="a Flink TaskManager")
    sub.add_parser("mlflow", help="the MLflow tracking server")
    p = sub.add_parser("proxy", help="an HTTP proxy replica (more `rendezvous proxy` flags pass)")
    p.add_argument("extra", nargs=argparse.REMAINDER)
    sub.add_parser("setup", help="topics, demo models and the demo service (one shot)")
    sub.add_parser("wait-for-services", help="wait until a service is defined on the cluster")
    p = sub.add_parser("jars", help="(image build) compile java/ beside the Maven jars")
    p.add_argument("maven_flink", type=Path)
    p = sub.add_parser(
        "flink-home", help="(image build) lay out FLINK_HOME with the project's jars"
    )
    p.add_argument("target", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] not in ROLES and not argv[0].startswith("-"):
        os.execvp(argv[0], argv)  # `rendezvous status`, `bash`, ...
    args = build_parser().parse_args(argv)
    try:
        values = ContainerSettings.env_values()
        settings = ContainerSettings(**values, _from_env=set(values))
        if args.role in ("jobmanager", "taskmanager"):
            run_flink(args.role, settings)
        elif args.role == "mlflow":
            run_mlflow(settings)
        elif args.role == "proxy":
            run_proxy(settings, args.extra)
        elif args.role == "setup":
            setup(settings, StackSettings.from_env())
        elif args.role == "wait-for-services":
            waited = wait_for_services(settings, StackSettings.from_env())
            print(f"a service is defined ({waited:.0f} s)")
        elif args.role == "jars":
            build_jars(args.maven_flink, StackSettings(home=settings.home))
        elif args.role == "flink-home":
            flink_home(args.target, settings, python=sys.executable)
    except RendezvousError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
