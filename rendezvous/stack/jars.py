"""Fetch the Maven Central jars listed in ``deps/pom.xml`` once, and reuse them."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from rendezvous.errors import MissingTool, StackError
from rendezvous.settings import REPO_ROOT, StackSettings

POM = REPO_ROOT / "deps" / "pom.xml"


def _maven_properties(settings: StackSettings) -> dict[str, str]:
    return {
        "deps.dir": str(settings.jars_dir),
        "kafka.version": settings.kafka_version,
        "flink.version": settings.flink_version,
        "flink.kafka.connector.version": settings.flink_kafka_connector_version,
        "hadoop.version": settings.hadoop_version,
    }


def _fingerprint(settings: StackSettings) -> str:
    digest = hashlib.sha256(POM.read_bytes())
    for key, value in sorted(_maven_properties(settings).items()):
        if key == "deps.dir":  # where the jars live is not what they are
            continue
        digest.update(f"{key}={value}\n".encode())
    return digest.hexdigest()


def ensure_jars(settings: StackSettings, *, log=print) -> Path:
    """Return the jars folder, running Maven only when the descriptor or versions changed."""
    stamp = settings.jars_dir / ".fingerprint"
    wanted = _fingerprint(settings)
    if stamp.exists() and stamp.read_text() == wanted:
        return settings.jars_dir
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MissingTool(
            "Maven (mvn) is not on PATH; it fetches the Kafka broker and Flink connector jars. "
            "Install it (e.g. `apt-get install maven`) and run again"
        )
    if shutil.which("java") is None:
        raise MissingTool(
            "Java is not on PATH; install a JDK 17 (e.g. `apt-get install openjdk-17-jdk`)"
        )
    log(f"fetching jars from Maven Central into {settings.jars_dir} ...")
    for sub in ("kafka", "flink"):
        shutil.rmtree(settings.jars_dir / sub, ignore_errors=True)
    argv = [mvn, "-q", "-B", "-f", str(POM), "package"]
    argv += [f"-D{k}={v}" for k, v in _maven_properties(settings).items()]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise StackError(f"Maven could not fetch the jars listed in {POM}:\n{tail}")
    stamp.write_text(wanted)
    return settings.jars_dir
