"""The project's Flink functions in Java, compiled as the stack compiles them and run on the
records the Python side writes."""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from rendezvous import serde
from rendezvous.settings import StackSettings
from rendezvous.stack import jars
from rendezvous.stack.flink import pyflink_home

pytestmark = pytest.mark.unit

HARNESS = """
import dev.rendezvous.flink.DropHeartbeats;
import java.util.HexFormat;

public class Harness {
    public static void main(String[] args) throws Exception {
        DropHeartbeats f = new DropHeartbeats();
        for (String hex : args) {
            System.out.println(f.filter(HexFormat.of().parseHex(hex)) ? "keep" : "drop");
        }
    }
}
"""


@pytest.fixture(scope="module")
def connectors() -> Path:
    """The fetched connector and format jars (Maven runs only when they are missing)."""
    return jars.ensure_jars(StackSettings.from_env(), log=lambda msg: None) / "flink"


@pytest.fixture(scope="module")
def jar(connectors, tmp_path_factory) -> Path:
    return jars.build_project_jar(tmp_path_factory.mktemp("jar") / jars.PROJECT_JAR, connectors)


def test_drop_heartbeats_drops_exactly_the_empty_batches(tmp_path, jar):
    (tmp_path / "Harness.java").write_text(HARNESS)
    heartbeats = [serde.empty_batch(kind) for kind in serde.BATCH_OF]
    request = {
        "request_id": "r-1",
        "service": "s",
        "received_ms": 1,
        "deadline_ms": 2,
        "payload": "{}",
        "reply_to": "t",
    }
    records = [
        serde.encode_batch(serde.Kind.REQUEST, "b-1", [request]),
        serde.encode_batch(serde.Kind.REQUEST, "", [request]),  # items, though no batch ID
        serde.encode(serde.Kind.REQUEST, request),
        b"",
        b"\x00\x00",
    ]
    classpath = os.pathsep.join([str(jar), str(pyflink_home() / "lib" / "*")])
    done = subprocess.run(
        [
            "java",
            "-cp",
            classpath,
            str(tmp_path / "Harness.java"),
            *(v.hex() for v in heartbeats + records),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == ["drop"] * len(heartbeats) + ["keep"] * len(records)
    assert all(serde.is_heartbeat(v) for v in heartbeats)
    assert not any(serde.is_heartbeat(v) for v in records)


def test_the_batch_format_is_registered_for_flink_sql(jar):
    with zipfile.ZipFile(jar) as z:
        names = set(z.namelist())
        services = z.read("META-INF/services/org.apache.flink.table.factories.Factory").decode()
    assert "dev/rendezvous/flink/BatchAvroFormatFactory.class" in names
    assert services.split() == ["dev.rendezvous.flink.BatchAvroFormatFactory"]
