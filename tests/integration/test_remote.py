"""A cluster that shares nothing with the submitter but the machine: a Kafka broker that takes
SASL/SCRAM-SHA-256 logins only, and a Flink cluster whose TaskManager runs from a folder of its
own with a Python that has the third-party packages and not this project. A service is
submitted through a profile naming them, scored over HTTP through the proxy, and its request
is found in the archive; wrong credentials, and a package the TaskManager lacks, fail in one
line naming the fix.

How the TaskManager's Python is isolated: a second virtualenv with the third-party packages
would be installed on every run (1.7 GB of packages; minutes on this machine). Instead the
TaskManager runs this virtualenv's base interpreter (the profile's ``flink_python``, not the
virtualenv's ``python``) with ``PYTHONNOUSERSITE`` and a ``PYTHONPATH`` of one folder: links to
every entry of this virtualenv's site-packages except the editable install of the project (and
``duckdb``, which the last test needs missing). The fixture proves that interpreter cannot
import ``rendezvous`` there, so whatever the jobs import of the project came in their zip.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from rendezvous import deploy
from rendezvous.settings import StackSettings
from rendezvous.stack import jars
from rendezvous.stack.flink import FlinkCluster
from rendezvous.stack.kafka import KafkaBroker
from tests.conftest import free_ports, wait_until
from tests.integration.feed import write_service

pytestmark = [pytest.mark.e2e, pytest.mark.flink, pytest.mark.kafka]

SLA_MS, GRACE_MS = 500, 1000
ADMIN, USER = ("admin", "admin-secret"), ("rdv", "rdv-secret")
MISSING = "duckdb"  # a package installed here and not on the TaskManager
SCRAM = "SCRAM-SHA-256"


def scram_properties(path: Path, user: tuple[str, str]) -> Path:
    path.write_text(
        "security.protocol=SASL_PLAINTEXT\n"
        f"sasl.mechanism={SCRAM}\n"
        f"sasl.username={user[0]}\n"
        f"sasl.password={user[1]}\n"
    )
    return path


class ScramBroker(KafkaBroker):
    """The local stack's broker with one SASL_PLAINTEXT listener taking SCRAM-SHA-256 logins;
    the users are created when the storage is formatted (``--add-scram``), as KRaft needs."""

    def _write_config(self) -> Path:
        conf = super()._write_config()
        s = self.settings
        props = dict(line.split("=", 1) for line in conf.read_text().splitlines() if line)
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN[0]}" password="{ADMIN[1]}";'
        )
        props.update(
            {
                "listeners": f"SASL_PLAINTEXT://{s.host}:{s.kafka_port},"
                f"CONTROLLER://{s.host}:{s.kafka_controller_port}",
                "advertised.listeners": f"SASL_PLAINTEXT://{s.host}:{s.kafka_port}",
                "inter.broker.listener.name": "SASL_PLAINTEXT",
                "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,"
                "CONTROLLER:PLAINTEXT",
                "sasl.enabled.mechanisms": SCRAM,
                "sasl.mechanism.inter.broker.protocol": SCRAM,
                f"listener.name.sasl_plaintext.{SCRAM.lower()}.sasl.jaas.config": jaas,
            }
        )
        conf.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return conf

    def _format(self, conf: Path) -> None:
        cluster_id = "rdvRemoteTest-" + uuid.uuid4().hex[:8]
        users = [f"{SCRAM}=[name={name},password={secret}]" for name, secret in (ADMIN, USER)]
        argv = ["java", "-cp", self._classpath(), "kafka.tools.StorageTool", "format"]
        argv += ["-t", cluster_id, "-c", str(conf), "--ignore-formatted"]
        for user in users:
            argv += ["--add-scram", user]
        done = subprocess.run(argv, capture_output=True, text=True)
        assert done.returncode == 0, f"formatting the SCRAM broker failed:\n{done.stderr}"


class IsolatedFlink(FlinkCluster):
    """A Flink cluster whose processes run the base interpreter with only ``site`` on their
    Python path, from the cluster's own folder."""

    def __init__(self, settings: StackSettings, site: Path) -> None:
        super().__init__(settings)
        self.site = site

    def env(self, *, client: bool = False) -> dict[str, str]:
        env = super().env(client=client)
        for name in ("VIRTUAL_ENV", "PYTHONHOME"):
            env.pop(name, None)
        env.update(PYTHONPATH=str(self.site), PYTHONNOUSERSITE="1")
        return env


def base_python() -> Path:
    found = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    assert found.is_file() and sys.prefix != sys.base_prefix, found  # not the virtualenv
    return found


def third_party_site(folder: Path) -> Path:
    """Links to this virtualenv's installed packages, less the project and MISSING."""
    site = next(Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    folder.mkdir(parents=True)
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith(("__editable__", "rendezvous")) or MISSING in name:
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


def link_jars(settings: StackSettings) -> None:
    """The jars fetched once for every state folder, as the test stack links them."""
    shared = jars.ensure_jars(StackSettings.from_env(), log=lambda msg: None).resolve()
    settings.jars_dir.mkdir(parents=True)
    for sub in ("kafka", "flink"):
        (settings.jars_dir / sub).symlink_to(shared / sub, target_is_directory=True)
    (settings.jars_dir / ".fingerprint").write_text(jars._fingerprint(settings))


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """The broker, the Flink cluster and a profiles file naming them; yields the profile
    environment of a submitter and its settings."""
    root = tmp_path_factory.mktemp("remote")
    ports = free_ports(("kafka", "controller", "rest", "rpc", "mlflow", "proxy"))
    python = base_python()
    site = third_party_site(root / "taskmanager-site")
    probe_options = dict(
        capture_output=True,
        text=True,
        cwd=root,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"},
    )
    imports = "import pyflink, fastavro, onnxruntime, sklearn; import rendezvous"
    probe = subprocess.run([str(python), "-c", imports], **probe_options)
    assert "No module named 'rendezvous'" in probe.stderr, probe  # the isolation holds
    probe = subprocess.run([str(python), "-c", f"import {MISSING}"], **probe_options)
    assert f"No module named '{MISSING}'" in probe.stderr, probe

    broker_settings = StackSettings(
        home=root / "broker",
        kafka_port=ports["kafka"],
        kafka_controller_port=ports["controller"],
        kafka_heap="384m",
        kafka_properties=scram_properties(root / "admin.properties", ADMIN),
    )
    link_jars(broker_settings)
    broker = ScramBroker(broker_settings)
    cluster_settings = StackSettings(
        home=root / "cluster",
        python=python,
        flink_rest_port=ports["rest"],
        flink_rpc_port=ports["rpc"],
        flink_metrics_port=0,  # no Prometheus reporter: nothing of this test reads it
        flink_taskmanagers=1,
        flink_taskmanager_slots=6,
        flink_taskmanager_memory="2048m",
    )
    link_jars(cluster_settings)
    cluster = IsolatedFlink(cluster_settings, site)

    submitter = root / "submitter"
    link_jars(StackSettings(home=submitter))
    scram_properties(root / "client.properties", USER)
    scram_properties(root / "wrong.properties", (USER[0], "not-the-password"))
    profile = (
        f"    kafka_bootstrap: 127.0.0.1:{ports['kafka']}\n"
        f"    flink_rest_url: http://127.0.0.1:{ports['rest']}\n"
        f"    flink_python: {python}\n"
        f"    mlflow_tracking_uri: http://127.0.0.1:{ports['mlflow']}\n"
        f"    home: {submitter}\n"
        "    serving_checkpoint_s: 5\n"
        "    archive_commit_s: 3\n"
    )
    (root / "profiles.yaml").write_text(
        "profiles:\n"
        f"  remote:\n{profile}    kafka_properties: client.properties\n"
        f"  wrong:\n{profile}    kafka_properties: wrong.properties\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RDV_")}
    env["RDV_PROFILES"] = str(root / "profiles.yaml")
    try:
        broker.start()
        cluster.start()
        wait_until(broker.ready, timeout_s=90, what="the SCRAM broker to take a login")
        wait_until(cluster.ready, timeout_s=120, what="the Flink cluster's TaskManager")
        settings = StackSettings.from_env(env, profile="remote")
        done = rendezvous(env, "--profile", "remote", "topics", timeout_s=60)
        assert done.returncode == 0 and done.stdout.startswith("created rdv."), done
        yield env, settings, ports
    finally:
        for svc in (*cluster.services, broker.service):
            svc.stop()


def rendezvous(env: dict[str, str], *argv: str, timeout_s: float = 300):
    return subprocess.run(
        [sys.executable, "-m", "rendezvous.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
    )


def start_proxy(env, config: Path, port: int) -> subprocess.Popen:
    argv = [sys.executable, "-m", "rendezvous.cli", "--profile", "remote", "proxy"]
    argv += ["--config", str(config), "--port", str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)

    def ready() -> bool:
        assert proc.poll() is None, f"proxy exited: {proc.stdout.read().decode()[-2000:]}"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout_s=60, what="the proxy to be ready", interval_s=0.3)
    return proc


def test_a_service_submitted_through_a_profile_answers_over_http_and_is_archived(remote, tmp_path):
    env, settings, ports = remote
    name = "remote" + uuid.uuid4().hex[:6]
    path = write_service(
        tmp_path / "services.yaml",
        name,
        sla_ms=SLA_MS,
        grace_ms=GRACE_MS,
        models=[
            '{name: champ, role: champion, callable: "udfs.zoo:constant", params: {value: 0.25}}'
        ],
    )
    done = rendezvous(env, "--profile", "remote", "submit", "--config", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    proxy = start_proxy(env, path, ports["proxy"])
    try:
        url = f"http://127.0.0.1:{ports['proxy']}/v1/services/{name}/score"
        numbers = itertools.count()
        with httpx.Client(timeout=10) as client:

            def answered() -> dict | None:
                rid = f"{name}-{next(numbers)}"
                r = client.post(url, json={"x": 1.0}, headers={"X-Request-ID": rid})
                body = r.json()
                return body if r.status_code == 200 and body.get("model") == "champ" else None

            body = wait_until(answered, timeout_s=120, what="an answer by champ", interval_s=0.5)
        assert float(body["output"]) == 0.25, body
        rid = body["request_id"]

        # The archive job, on the isolated TaskManager, wrote the request and its decision
        # (made once the request's batch closes in event time: the proxy's heartbeats move it).
        from rendezvous.archive.sql import ArchiveSQL

        def archived() -> bool:
            with ArchiveSQL(settings.archive_dir) as db:
                q = "SELECT count(*) AS n FROM {} WHERE request_id = ?"
                counts = [db.frame(q.format(t), [rid])["n"][0] for t in ("requests", "decisions")]
            return counts == [1, 1]

        try:
            wait_until(
                archived, timeout_s=90, what=f"{rid} in the archive's requests and decisions"
            )
        except AssertionError as exc:
            status = rendezvous(env, "--profile", "remote", "status", timeout_s=60)
            files = sorted(str(p) for p in settings.archive_dir.rglob("*") if p.is_file())
            raise AssertionError(f"{exc}\n{status.stdout}{status.stderr}\nfiles: {files}") from None
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        proxy.stdout.close()

    # Every job runs, each on the project's code it carried (the TaskManager has none).
    jobs = running(settings)
    assert {deploy.ENRICH_JOB, deploy.JOIN_JOB, deploy.ARCHIVE_JOB} <= set(jobs), jobs
    assert deploy.score_job_name(name, "champ") in jobs, jobs


def running(settings: StackSettings) -> dict[str, str]:
    return deploy.running_jobs(SimpleNamespace(flink=FlinkCluster(settings)))


def test_wrong_scram_credentials_fail_in_one_line_naming_the_setting(remote, tmp_path):
    env, _, _ = remote
    path = write_service(
        tmp_path / "services.yaml",
        "wrongcreds",
        sla_ms=SLA_MS,
        grace_ms=GRACE_MS,
        models=['{name: champ, role: champion, callable: "udfs.zoo:constant"}'],
    )
    started = time.monotonic()
    done = rendezvous(env, "--profile", "wrong", "submit", "--config", str(path), timeout_s=60)
    elapsed = time.monotonic() - started
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "refused the credentials" in lines[0] and "kafka_properties" in lines[0], lines
    assert "wrong.properties" in lines[0] and "sasl.password" in lines[0], lines
    assert elapsed < 15, f"took {elapsed:.1f}s"

    # The proxy refuses to start on them the same way.
    started = time.monotonic()
    proxy = rendezvous(env, "--profile", "wrong", "proxy", "--config", str(path), timeout_s=60)
    assert proxy.returncode != 0 and time.monotonic() - started < 15
    assert proxy.stderr.strip().splitlines() == lines, proxy.stderr


def test_a_package_the_taskmanager_lacks_fails_once_naming_the_package_and_the_fix(
    remote, tmp_path
):
    env, settings, _ = remote
    name = "lacks" + uuid.uuid4().hex[:6]
    module = f"needs_{name}"
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / f"{module}.py").write_text(
        f"import {MISSING}\n\n\ndef score(features):\n    return 1.0\n"
    )
    path = tmp_path / "services.yaml"
    path.write_text(
        f"version: 3\nservices:\n  {name}:\n    sla_ms: {SLA_MS}\n    grace_ms: {GRACE_MS}\n"
        f"    code: [code]\n    models:\n"
        f'      - {{name: champ, role: champion, callable: "{module}:score"}}\n'
        "    input:\n      x: double\n"
    )
    done = rendezvous(env, "--profile", "remote", "submit", "--config", str(path))
    assert done.returncode == 1, done.stdout + done.stderr
    from importlib import metadata

    version = metadata.version(MISSING)
    assert f"No module named '{MISSING}'" in done.stderr, done.stderr
    assert f"pip install '{MISSING}=={version}'" in done.stderr, done.stderr
    assert str(settings.flink_python) in done.stderr, done.stderr
    # Cancelled after that one failure, not left restarting.
    job = deploy.score_job_name(name, "champ")
    assert job not in running(settings)
