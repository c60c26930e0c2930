"""Bounded in-memory inputs for a job's ``build()`` on a local Flink (a mini cluster in the
JVM that PyFlink starts for the test), in place of its Kafka source.

The Python workers unpickle what the job ships by module name, so what they run lives here, in
a module they can import as ``tests.integration.bounded``.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Sequence

from pyflink.common import Configuration, Duration, WatermarkStrategy
from pyflink.common.typeinfo import Types
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import DataStream, StreamExecutionEnvironment

from jobs.connectors import BYTES
from rendezvous.settings import REPO_ROOT, StackSettings
from rendezvous.stack import jars


class FirstField(TimestampAssigner):
    """The element's timestamp is the first field of a (timestamp, value) pair."""

    def extract_timestamp(self, value, record_timestamp: int) -> int:
        return value[0]


def second_field(pair):
    return pair[1]


def worker_path() -> str:
    """What the Python workers need on their path: the repository, then this interpreter's
    site-packages (thread mode's interpreter, embedded in the JVM, does not read a virtualenv's
    site-packages by itself; see ``rendezvous.stack.flink``)."""
    return os.pathsep.join([str(REPO_ROOT), sysconfig.get_paths()["purelib"]])


def local(env: StreamExecutionEnvironment) -> StreamExecutionEnvironment:
    """``env`` with the project's jar (the JVM filters of ``jobs.connectors``), this
    interpreter and :func:`worker_path` for the Python workers, parallelism 1.

    The workers' path is the job's ``python.pythonpath`` plus the PYTHONPATH of the JVM, which
    PyFlink starts on its first call and which keeps its environment: a test that starts it
    sets PYTHONPATH to :func:`worker_path` before (see test_join_build's ``env``)."""
    jar = jars.ensure_jars(StackSettings.from_env(), log=lambda msg: None) / "flink"
    env.add_jars((jar / jars.PROJECT_JAR).resolve().as_uri())
    env.set_python_executable(sys.executable)  # not the `python` on PATH
    env.configure(Configuration().set_string("python.pythonpath", worker_path()))
    env.set_parallelism(1)
    return env


def timestamped(
    env: StreamExecutionEnvironment, records: Sequence[tuple[int, bytes]]
) -> DataStream:
    """A bounded stream of raw values whose element timestamps are the given ones (as the Kafka
    source's are the broker's), in the given order, with watermarks that follow them (no
    out-of-orderness) and the end-of-input watermark after the last."""
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(
        Duration.of_millis(0)
    ).with_timestamp_assigner(FirstField())
    pairs = env.from_collection(
        [(ts, value) for ts, value in records], type_info=Types.TUPLE([Types.LONG(), BYTES])
    )
    return (
        pairs.assign_timestamps_and_watermarks(strategy)
        .name("timestamps")
        .map(second_field, output_type=BYTES)
        .name("values")
    )


def raw(value) -> bytes:
    """A value of a BYTES stream as ``execute_and_collect`` hands it over, as bytes: PyFlink
    converts a Java ``byte[]`` element by element, into a list of signed ints."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return bytes(b & 0xFF for b in value)
