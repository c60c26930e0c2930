"""Fetch the Maven Central jars listed in ``deps/pom.xml`` once, and reuse them; compile the
project's own Flink functions (``java/``) into one more jar beside them."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from rendezvous.errors import MissingTool, StackError
from rendezvous.settings import REPO_ROOT, StackSettings

POM = REPO_ROOT / "deps" / "pom.xml"
JAVA_SOURCES = REPO_ROOT / "java" / "src" / "main" / "java"
JAVA_RESOURCES = REPO_ROOT / "java" / "src" / "main" / "resources"
PROJECT_JAR = "rendezvous-flink.jar"


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
    for source in _java_files():
        digest.update(source.relative_to(REPO_ROOT).as_posix().encode())
        digest.update(source.read_bytes())
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
    build_project_jar(settings.jars_dir / "flink" / PROJECT_JAR, settings.jars_dir / "flink")
    stamp.write_text(wanted)
    return settings.jars_dir


def _java_sources() -> list[Path]:
    return sorted(JAVA_SOURCES.rglob("*.java"))


def _java_files() -> list[Path]:
    return _java_sources() + sorted(p for p in JAVA_RESOURCES.rglob("*") if p.is_file())


def build_project_jar(out: Path, connectors: Path) -> Path:
    """Compile ``java/`` against the PyFlink distribution's jars and the connector and format
    jars in ``connectors`` into ``out``, with its resources (the format factory's service
    file)."""
    from rendezvous.stack.flink import pyflink_home

    javac, jar = shutil.which("javac"), shutil.which("jar")
    if javac is None or jar is None:
        raise MissingTool(
            "javac is not on PATH; the project's Flink functions need a JDK 17, not only a JRE "
            "(e.g. `apt-get install openjdk-17-jdk-headless`)"
        )
    with tempfile.TemporaryDirectory() as classes:
        steps = (
            [
                javac,
                "--release",
                "17",
                "-cp",
                os.pathsep.join([str(pyflink_home() / "lib" / "*"), str(connectors / "*")]),
                "-d",
                classes,
                *map(str, _java_sources()),
            ],
            [
                jar,
                "--create",
                "--file",
                str(out),
                "-C",
                classes,
                ".",
                "-C",
                str(JAVA_RESOURCES),
                ".",
            ],
        )
        for argv in steps:
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                raise StackError(f"building {out.name} failed:\n{done.stdout}{done.stderr}")
    return out
