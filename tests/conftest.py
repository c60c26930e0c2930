"""The test harness: one local stack per session, fresh topics per test.

Unit tests (``tests/unit``) touch no service and are marked ``unit`` automatically. Integration
tests ask for the ``stack`` fixture, which starts Kafka, Flink and MLflow on free ports in a
temporary state folder the first time a test needs it and stops them at the end of the session.
Set ``RDV_TEST_USE_RUNNING=1`` to run against a stack you already started with
``rendezvous up`` instead (its ``RDV_*`` settings are read from the environment).

A stack that cannot start is an error, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from rendezvous.settings import REPO_ROOT, StackSettings

USE_RUNNING_ENV = "RDV_TEST_USE_RUNNING"
TESTS_HOME = REPO_ROOT / ".state" / "tests"
PORT_FIELDS = (
    "kafka_port",
    "kafka_controller_port",
    "flink_rest_port",
    "flink_rpc_port",
    "mlflow_port",
    "proxy_port",
)

# Start and stop durations of the session's stack, shown in the terminal summary.
_TIMINGS: dict[str, float] = {}
# Set when the stack failed to start: its state folder (logs) is kept for a post-mortem.
_KEPT: list[Path] = []
# When tests failed: the lines of the stack's Flink logs that tell why a process went away,
# printed in the summary (a clean checkout's state folder is gone once the run ends).
_POST_MORTEM: list[str] = []
_FATAL = re.compile(
    r"fatal|OutOfMemoryError|Terminating TaskManagerRunner|Terminating cluster entrypoint|"
    r"did not exit gracefully|RECEIVED SIGNAL|Exception in thread",
    re.IGNORECASE,
)


# ---- collection ------------------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unit_dir = Path(__file__).parent / "unit"
    for item in items:
        if unit_dir in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.unit)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if _TIMINGS:
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in _TIMINGS.items())
        terminalreporter.write_line(f"test stack: {parts}")
    for home in _KEPT:
        terminalreporter.write_line(f"test stack failed to start; logs kept in {home / 'logs'}")
    for line in _POST_MORTEM:
        terminalreporter.write_line(line)


def _post_mortem(logs_dir: Path, per_file: int = 12) -> list[str]:
    """The last lines of each Flink process's log that say why it stopped or failed."""
    found = []
    for log in sorted(logs_dir.glob("flink-*.log")) + sorted(logs_dir.glob("flink/*.log")):
        with contextlib.suppress(OSError):
            hits = [ln.rstrip()[:300] for ln in log.open(errors="replace") if _FATAL.search(ln)]
            if hits:
                found.append(f"test stack log {log.name}, last lines telling why a process ended:")
                found.extend("  " + hit for hit in hits[-per_file:])
    return found


# ---- helpers ---------------------------------------------------------------------------


# Ports the tests pick lie below the kernel's ephemeral range (32768-60999 by default), so no
# outgoing connection is handed one of them between the moment it is chosen and the moment a
# server binds it; and none is handed out twice in one test process.
_PICK_RANGE = (20000, 32000)
_HANDED_OUT: set[int] = set()
_RNG = random.Random()


def free_port_block(size: int, host: str = "127.0.0.1", attempts: int = 500) -> int:
    """The first of ``size`` consecutive free TCP ports on ``host`` that no other caller in this
    process was given; each is checked by binding it."""
    low, high = _PICK_RANGE
    for _ in range(attempts):
        first = _RNG.randrange(low, high - size)
        block = range(first, first + size)
        if _HANDED_OUT.intersection(block):
            continue
        with ExitStack() as held:
            try:
                for port in block:
                    sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    sock.bind((host, port))
            except OSError:
                continue
        _HANDED_OUT.update(block)
        return first
    raise AssertionError(f"no {size} consecutive free ports on {host} in {attempts} attempts")


def free_port(host: str = "127.0.0.1") -> int:
    """One free TCP port (see :func:`free_port_block`)."""
    return free_port_block(1, host)


def free_ports(names: tuple[str, ...] = PORT_FIELDS, host: str = "127.0.0.1") -> dict[str, int]:
    """Distinct free TCP ports on ``host``, one per name."""
    return {name: free_port(host) for name in names}


def settings_env(settings: StackSettings) -> dict[str, str]:
    """The ``RDV_*`` variables that make ``StackSettings.from_env()`` rebuild ``settings``."""
    return settings.to_env()


def wait_until(
    probe: Callable[[], object], *, timeout_s: float, what: str, interval_s: float = 0.1
) -> object:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def _stack_pids(stack) -> dict[str, int]:
    services = (*stack.flink.services, stack.mlflow.service, stack.kafka.service)
    return {svc.name: pid for svc in (*services, *stack.extra_services()) if (pid := svc.pid())}


def _test_settings() -> StackSettings:
    """Settings for a fresh state folder on free ports that reuses the already fetched jars.

    ``ensure_jars`` fetches them once into the default state folder. The test home's ``jars``
    folder links to its ``kafka`` and ``flink`` folders and carries its own fingerprint stamp
    (the stamp covers the jars folder's path too), so ``Stack.up()`` finds the jars current and
    never runs Maven on, or rewrites the stamp of, the shared folder.
    """
    from rendezvous.stack import jars

    shared = jars.ensure_jars(StackSettings.from_env(), log=lambda msg: None).resolve()
    home = TESTS_HOME / uuid.uuid4().hex[:12]
    home.mkdir(parents=True)
    try:
        # The serving jobs checkpoint every 10 s here, not every 30 s: the join's decisions
        # reach the archive on its checkpoints, and the tests wait for them there.
        taskmanagers = StackSettings.from_env().flink_taskmanagers
        settings = StackSettings.from_env(
            home=home,
            serving_checkpoint_s=10,
            flink_metrics_port=free_port_block(1 + taskmanagers),
            **free_ports(),
        )
        settings.jars_dir.mkdir()
        for sub in ("kafka", "flink"):
            (settings.jars_dir / sub).symlink_to(shared / sub, target_is_directory=True)
        (settings.jars_dir / ".fingerprint").write_text(jars._fingerprint(settings))
    except BaseException:
        _remove_home(home)
        raise
    return settings


def _remove_home(home: Path) -> None:
    for link in (home / "jars").glob("*"):
        if link.is_symlink():
            link.unlink()  # never let rmtree near the shared jars
    shutil.rmtree(home, ignore_errors=True)
    with contextlib.suppress(OSError):
        TESTS_HOME.rmdir()  # only when no other session's home is left in it


# ---- the stack -------------------------------------------------------------------------


def _use_running() -> bool:
    return os.environ.get(USE_RUNNING_ENV, "") == "1"


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[StackSettings]:
    """Settings of the stack under test: a private one on free ports, or the running one."""
    if _use_running():
        yield StackSettings.from_env()
        return
    settings = _test_settings()
    try:
        yield settings
    finally:
        if settings.home not in _KEPT:
            _remove_home(settings.home)


@pytest.fixture(scope="session")
def stack(stack_settings: StackSettings, request: pytest.FixtureRequest) -> Iterator:
    """A running :class:`rendezvous.stack.Stack`; started here unless RDV_TEST_USE_RUNNING=1."""
    from rendezvous.stack import Stack

    stack = Stack(stack_settings, log=lambda msg: None)
    if _use_running():
        down = [row for row in stack.status() if row.name in ("kafka", "flink", "mlflow")]
        down = [f"{row.name} ({row.address})" for row in down if not row.up]
        if down:
            pytest.fail(
                f"{USE_RUNNING_ENV}=1 but the stack in {stack_settings.home} is not up "
                f"({', '.join(down)} not answering); run `rendezvous up` first or unset "
                f"{USE_RUNNING_ENV} to let the tests start their own stack",
                pytrace=False,
            )
        yield stack
        return

    t0 = time.monotonic()
    try:
        stack.up()
    except BaseException:
        with contextlib.suppress(Exception):  # the start error is the one to report
            stack.down()
        _KEPT.append(stack_settings.home)
        raise
    _TIMINGS["start"] = time.monotonic() - t0
    try:
        yield stack
    finally:
        if request.session.testsfailed:
            _POST_MORTEM.extend(_post_mortem(stack_settings.logs_dir))
        pids = _stack_pids(stack)
        t0 = time.monotonic()
        stack.down(purge=True)
        _TIMINGS["stop"] = time.monotonic() - t0
        from rendezvous.stack.procs import pid_alive

        left = {name: pid for name, pid in pids.items() if pid_alive(pid)}
        pid_files = sorted(p.name for p in stack_settings.run_dir.glob("*.pid"))
        assert not left and not pid_files, (
            f"the test stack left processes {left} / pid files {pid_files} in "
            f"{stack_settings.run_dir}"
        )


@pytest.fixture
def stack_env(stack_settings: StackSettings) -> dict[str, str]:
    """The ``RDV_*`` variables that describe the stack under test (for the CLI)."""
    return settings_env(stack_settings)


# ---- Kafka helpers ---------------------------------------------------------------------


@pytest.fixture
def unique_topic(stack) -> Iterator[Callable[..., str]]:
    """A factory: ``unique_topic()`` creates a fresh topic and returns its name.

    ``unique_topic("in", partitions=2)`` gives ``t-in-<random>`` with two partitions. The
    topics are deleted when the test ends.
    """
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": stack.settings.kafka_bootstrap})
    created: list[str] = []

    def make(label: str = "", *, partitions: int = 1) -> str:
        name = "t-" + (f"{label}-" if label else "") + uuid.uuid4().hex[:10]
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)],
            operation_timeout=30,
        )
        futures[name].result(timeout=30)
        created.append(name)

        def known() -> bool:
            meta = admin.list_topics(topic=name, timeout=5).topics.get(name)
            return meta is not None and meta.error is None and len(meta.partitions) == partitions

        wait_until(known, timeout_s=30, what=f"topic {name} in the broker's metadata")
        return name

    yield make
    if created:
        for future in admin.delete_topics(created, operation_timeout=30).values():
            future.result(timeout=30)


@pytest.fixture
def kafka_producer(stack) -> Iterator:
    """A ``confluent_kafka.Producer`` on the test broker; flushed when the test ends."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": stack.settings.kafka_bootstrap, "linger.ms": 0})
    yield producer
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} produced records were not delivered within 30s"


@pytest.fixture
def kafka_consumer(stack) -> Callable[..., list]:
    """``kafka_consumer(topic, n, timeout_s=30)``: the first ``n`` records of ``topic``.

    Reads every partition from the beginning (no consumer group rebalance to wait for) and
    returns ``confluent_kafka.Message`` objects in the order they arrived; fails with the
    count it got when ``n`` records do not arrive within ``timeout_s``.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    def consume(topic: str, n: int, *, timeout_s: float = 30.0) -> list:
        consumer = Consumer(
            {
                "bootstrap.servers": stack.settings.kafka_bootstrap,
                "group.id": f"test-{uuid.uuid4().hex[:10]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 50,
            }
        )
        try:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            assert not meta.error, f"topic {topic}: {meta.error}"
            consumer.assign(
                [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)]
            )
            got: list = []
            deadline = time.monotonic() + timeout_s
            while len(got) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"got {len(got)} of {n} records from topic {topic} within {timeout_s:.0f}s"
                    )
                msg = consumer.poll(min(left, 0.5))
                if msg is None:
                    continue
                assert not msg.error(), f"consuming {topic}: {msg.error()}"
                got.append(msg)
            return got
        finally:
            consumer.close()

    return consume
