"""A single-node Apache Kafka broker in KRaft mode, run from Maven Central jars."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import uuid
from pathlib import Path

from rendezvous import topics
from rendezvous.errors import StackError
from rendezvous.kafka import KafkaConnection
from rendezvous.settings import StackSettings
from rendezvous.stack.procs import Service, ensure_port_free, port_open

LOG4J2 = """\
Configuration:
  status: warn
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        Pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
      - name: kafka.server.BrokerServer
        level: INFO
"""


class KafkaBroker:
    name = "kafka"

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.dir = settings.home / "kafka"
        self.service = Service(self.name, settings.run_dir, settings.logs_dir)

    @property
    def address(self) -> str:
        return self.settings.kafka_bootstrap

    def _classpath(self) -> str:
        return str(self.settings.jars_dir / "kafka" / "*")

    def _write_config(self) -> Path:
        s = self.settings
        data = s.data_dir / "kafka"
        data.mkdir(parents=True, exist_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{s.host}:{s.kafka_controller_port}",
            "listeners": f"PLAINTEXT://{s.host}:{s.kafka_port},CONTROLLER://{s.host}:{s.kafka_controller_port}",
            "advertised.listeners": f"PLAINTEXT://{s.host}:{s.kafka_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": str(s.kafka_partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.hours": "168",
            # A restarted broker registers under a new incarnation, and the controller refuses
            # it while the previous incarnation's lease is valid; a controller that starts (as it
            # does with the broker, on one node) grants every registered broker a fresh lease.
            # With the default 9 s lease that wait was 10 of a restart's 14 s. The broker
            # renews its lease every 0.5 s, so a 3 s lease still rides out a stall of seconds.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            # A single broker on a small machine: the default 3 network and 8 I/O threads
            # hand every request between more threads than there are cores.
            "num.network.threads": "1",
            "num.io.threads": "2",
        }
        conf = self.dir / "server.properties"
        conf.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.dir / "log4j2.yaml").write_text(LOG4J2)
        return conf

    def _java_env(self) -> dict[str, str]:
        return dict(os.environ)

    def _format(self, conf: Path) -> None:
        id_file = self.dir / "cluster.id"
        if not id_file.exists():
            cluster_id = "-"
            while cluster_id.startswith("-"):  # the storage tool would read it as an option
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            id_file.write_text(cluster_id)
        argv = [
            "java",
            "-cp",
            self._classpath(),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            id_file.read_text().strip(),
            "-c",
            str(conf),
            "--ignore-formatted",
        ]
        done = subprocess.run(argv, capture_output=True, text=True, env=self._java_env())
        if done.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{done.stdout}{done.stderr}")

    def start(self) -> None:
        s = self.settings
        ensure_port_free(s.host, s.kafka_port, wanted_by="Kafka", setting="RDV_KAFKA_PORT")
        ensure_port_free(
            s.host,
            s.kafka_controller_port,
            wanted_by="the Kafka controller",
            setting="RDV_KAFKA_CONTROLLER_PORT",
        )
        conf = self._write_config()
        self._format(conf)
        argv = [
            "java",
            f"-Xms{s.kafka_heap}",
            f"-Xmx{s.kafka_heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.yaml'}",
            "-cp",
            self._classpath(),
            "kafka.Kafka",
            str(conf),
        ]
        self.service.start(argv, env=self._java_env(), cwd=self.dir)

    def ready(self) -> bool:
        from confluent_kafka.admin import AdminClient

        local = self.settings.kafka_is_local
        if local and not port_open(self.settings.host, self.settings.kafka_port):
            return False
        try:
            admin = AdminClient(self.settings.kafka.client_config({"socket.timeout.ms": 1000}))
            meta = admin.list_topics(timeout=1.0)
            return bool(meta.brokers)
        except Exception:
            return False

    def check_reachable(self, timeout_s: float = 10.0) -> None:
        """Raise StackError in one line, naming the setting to fix, unless the cluster answers
        with these credentials within ``timeout_s`` (see :func:`check_login`)."""
        check_login(self.settings.kafka, timeout_s=timeout_s, local=self.settings.kafka_is_local)

    def create_topics(self, names=topics.ALL) -> list[str]:
        """Create missing topics, and give the results topic the reply partitions it lacks;
        return what was done ("rdv.x", or "rdv.results (8 partitions, was 1)")."""
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient(self.settings.kafka.client_config())
        listed = admin.list_topics(timeout=10).topics
        existing = set(listed)
        grown = []
        if topics.RESULTS in names and topics.RESULTS in listed:
            grown = self._grow_results(admin, len(listed[topics.RESULTS].partitions))
        new = [
            NewTopic(
                name,
                num_partitions=self._partitions(name),
                replication_factor=1,
                config=_topic_config(name),
            )
            for name in names
            if name not in existing
        ]
        if not new:
            return grown
        for name, future in admin.create_topics(new, operation_timeout=30).items():
            try:
                future.result(timeout=30)
            except Exception as exc:  # already exists from a concurrent call is fine
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise StackError(f"could not create topic {name}: {exc}") from exc
        created = [t.topic for t in new]
        _wait_for_leaders(admin, created)
        return created + grown

    def _grow_results(self, admin, have: int) -> list[str]:
        """Add partitions to a results topic that has fewer than the settings ask for (a stack
        from before reply partitions): each is a reply partition a replica can read. Only this
        topic grows; the others are keyed by request ID, and adding partitions would move
        keys under the jobs' feet."""
        from confluent_kafka.admin import NewPartitions

        want = self._partitions(topics.RESULTS)
        if have >= want:
            return []
        futures = admin.create_partitions([NewPartitions(topics.RESULTS, want)])
        try:
            futures[topics.RESULTS].result(timeout=30)
        except Exception as exc:
            raise StackError(
                f"could not give {topics.RESULTS} {want} partitions (it has {have}): {exc}"
            ) from exc
        _wait_for_leaders(admin, [topics.RESULTS])
        return [
            f"{topics.RESULTS} ({want} partitions, was {have}; a running rendezvous-join keeps "
            "routing to the old ones until it is submitted again)"
        ]

    def _partitions(self, name: str) -> int:
        if name in topics.SINGLE_PARTITION:
            return 1
        if name == topics.RESULTS:
            return max(self.settings.kafka_partitions, self.settings.results_partitions)
        return self.settings.kafka_partitions

    def list_topics(self) -> dict[str, int]:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(self.settings.kafka.client_config())
        meta = admin.list_topics(timeout=5)
        return {
            name: len(t.partitions)
            for name, t in sorted(meta.topics.items())
            if not name.startswith("__")
        }


def _wait_for_leaders(admin, names: list[str], timeout_s: float = 30.0) -> None:
    """Wait until every partition of ``names`` has a leader: a topic just created answers
    NOT_LEADER_FOR_PARTITION for a moment, and the first client to use it would fail."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        meta = admin.list_topics(timeout=5)
        waiting = [
            name
            for name in names
            if name not in meta.topics
            or meta.topics[name].error is not None
            or not meta.topics[name].partitions
            or any(
                p.leader < 0 or p.error is not None for p in meta.topics[name].partitions.values()
            )
        ]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise StackError(
                f"topics without a leader {timeout_s:.0f} s after they were created: "
                f"{', '.join(waiting)}; see the broker's log (`rendezvous status`)"
            )
        time.sleep(0.1)


def check_login(conn: KafkaConnection, *, timeout_s: float = 10.0, local: bool = False) -> None:
    """Raise StackError in one line, naming the setting to fix, unless the cluster answers
    with these credentials within ``timeout_s``; a refused login fails as soon as the broker
    refuses it. The client's own log lines are kept out of the terminal."""
    import time

    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    from rendezvous.kafka import connection_problem

    errors: list[KafkaError] = []
    logged = _Collect()
    quiet = logging.getLogger("rendezvous.kafka.probe")
    quiet.propagate = False
    quiet.handlers[:] = [logged]
    admin = AdminClient(
        conn.client_config({"socket.timeout.ms": 5000, "error_cb": errors.append, "logger": quiet})
    )
    deadline = time.monotonic() + timeout_s
    last: KafkaError | None = None
    while True:
        try:
            if admin.list_topics(timeout=1.0).brokers:
                return
        except KafkaException as exc:
            last = exc.args[0] if exc.args else None
        admin.poll(0)  # serves error_cb
        fatal = [(e.name(), e.str()) for e in errors if e.name() in ("_AUTHENTICATION", "_SSL")]
        fatal += logged.refusals()
        if fatal or time.monotonic() > deadline:
            tried = [(e.name(), e.str()) for e in errors]
            if last is not None:
                tried.append((last.name(), last.str()))
            code, reason = (fatal or tried or [("", "timed out")])[-1]
            raise StackError(connection_problem(code, reason, conn, local=local))


class _Collect(logging.Handler):
    """librdkafka's log lines, kept to find a refused login in (it logs the broker's answer
    before, or instead of, reporting it to the error callback)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def refusals(self) -> list[tuple[str, str]]:
        found = []
        for message in self.messages:
            at = message.find("SASL authentication error")
            if at >= 0:
                found.append(("_AUTHENTICATION", message[at:].split(" (after ")[0]))
        return found


def _topic_config(name: str) -> dict[str, str]:
    config = {}
    if name in topics.LOG_APPEND_TIME:
        config["message.timestamp.type"] = "LogAppendTime"
    if name in topics.HEARTBEAT:
        # Heartbeats make these topics grow even without traffic: keep six hours, in hourly
        # segments so that old ones can actually be deleted.
        config["retention.ms"] = str(6 * 3600 * 1000)
        config["segment.ms"] = str(3600 * 1000)
    if name == topics.CONTROL:
        # The policy history: the enrich job re-reads it from the start on every run, so a
        # deleted record would silently bring an older policy back. A few records a change.
        config["retention.ms"] = "-1"
    if name in topics.COMPACTED:
        # A key's state is its latest record; older ones of the same key may go.
        config["cleanup.policy"] = "compact"
    if name == topics.USAGE:
        # A replica that stopped leaves its last counts behind; they matter until their window
        # ends, at most MAX_QUOTA_PERIOD_MS after they were written.
        config["cleanup.policy"] = "compact,delete"
        config["retention.ms"] = str(topics.MAX_QUOTA_PERIOD_MS + 24 * 3600 * 1000)
    return config
