"""Typed, frozen settings for the local stack, with ``RDV_*`` environment overrides.

Build one :class:`StackSettings` at the entry point (``StackSettings.from_env()``) and pass it
down; nothing else reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from rendezvous.errors import ConfigError

ENV_PREFIX = "RDV_"
REPO_ROOT = Path(__file__).resolve().parents[1]


def _default_home() -> Path:
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT / ".state"
    return Path.home() / ".rendezvous"


@dataclass(frozen=True)
class StackSettings:
    """Where the local stack lives, which ports it binds and how big it is."""

    home: Path = field(default_factory=_default_home)
    host: str = "127.0.0.1"

    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_heap: str = "512m"
    # Partitions per topic. Every job runs at parallelism 1 on the local stack, and with one
    # partition the rendezvous job's watermark follows every record, so heartbeats are needed
    # only when traffic stops (see rendezvous.proxy.app).
    kafka_partitions: int = 1

    flink_rest_port: int = 8081
    flink_rpc_port: int = 6123
    # TaskManager processes: each embeds its own Python interpreter (thread mode), so with
    # several the Python operators of different jobs no longer share one GIL. Jobs spread
    # over them (taskmanager.load-balance.mode: slots), and each has slots for every job: when
    # one dies, its jobs restart at once on the other, whose interpreter has already imported
    # the model libraries (a warm standby; see docs/reliability.md).
    flink_taskmanagers: int = 2
    flink_taskmanager_slots: int = 8
    flink_jobmanager_memory: str = "1024m"
    flink_taskmanager_memory: str = "3072m"
    # How often the archive job commits its Parquet files (its checkpoint interval). Each
    # commit is a burst of CPU that delays answers on a small machine: longer is cheaper,
    # shorter makes the archive fresher.
    archive_commit_s: int = 10
    # The serving jobs' (enrich, join, scoring) checkpoint interval. Each job's checkpoint
    # stalls its records for tens of milliseconds, and with seven jobs on two cores one or
    # another is checkpointing every second or two: the deadline misses at 500 req/s came in
    # those windows. Longer means fewer stalls, more to replay after a failure, and decisions
    # reaching the archive later (the join's decisions commit with its checkpoints).
    serving_checkpoint_s: int = 30

    mlflow_port: int = 5000
    proxy_port: int = 8000

    kafka_version: str = "4.2.0"
    flink_version: str = "2.3.0"
    flink_kafka_connector_version: str = "5.0.0-2.2"
    hadoop_version: str = "3.4.1"

    python: Path = field(default_factory=lambda: Path(sys.executable))
    start_timeout_s: float = 120.0

    # ---- derived locations -------------------------------------------------------------
    @property
    def jars_dir(self) -> Path:
        return self.home / "jars"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def archive_dir(self) -> Path:
        return self.data_dir / "archive"

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def flink_url(self) -> str:
        return f"http://{self.host}:{self.flink_rest_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def proxy_url(self) -> str:
        return f"http://{self.host}:{self.proxy_port}"

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> StackSettings:
        """Defaults, then ``RDV_<FIELD>`` variables, then explicit keyword overrides."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f.name, f.type, raw)
        values.update(overrides)
        settings = cls(**values)  # type: ignore[arg-type]
        return settings.validated()

    def to_env(self) -> dict[str, str]:
        """The ``RDV_*`` variables that make ``from_env()`` in a child process rebuild these."""
        return {ENV_PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}

    def validated(self) -> StackSettings:
        ports = {
            "kafka_port": self.kafka_port,
            "kafka_controller_port": self.kafka_controller_port,
            "flink_rest_port": self.flink_rest_port,
            "flink_rpc_port": self.flink_rpc_port,
            "mlflow_port": self.mlflow_port,
            "proxy_port": self.proxy_port,
        }
        if self.flink_taskmanagers < 1 or self.flink_taskmanager_slots < 1:
            raise ConfigError(
                f"flink_taskmanagers={self.flink_taskmanagers} and flink_taskmanager_slots="
                f"{self.flink_taskmanager_slots} must both be at least 1; set "
                f"{ENV_PREFIX}FLINK_TASKMANAGERS / {ENV_PREFIX}FLINK_TASKMANAGER_SLOTS"
            )
        if self.archive_commit_s < 1:
            raise ConfigError(
                f"archive_commit_s={self.archive_commit_s} must be at least 1 (seconds between "
                f"archive commits); set {ENV_PREFIX}ARCHIVE_COMMIT_S"
            )
        if self.serving_checkpoint_s < 1:
            raise ConfigError(
                f"serving_checkpoint_s={self.serving_checkpoint_s} must be at least 1 (seconds "
                f"between the serving jobs' checkpoints); set {ENV_PREFIX}SERVING_CHECKPOINT_S"
            )
        seen: dict[int, str] = {}
        for name, port in ports.items():
            if not 0 < port < 65536:
                raise ConfigError(
                    f"{name}={port} is not a TCP port; set {ENV_PREFIX}{name.upper()} to 1-65535"
                )
            if port in seen:
                raise ConfigError(
                    f"{name} and {seen[port]} are both {port}; give one of them another port "
                    f"with {ENV_PREFIX}{name.upper()}"
                )
            seen[port] = name
        return dataclasses.replace(self, home=Path(self.home).resolve(), python=Path(self.python))


def _parse(name: str, annotation: object, raw: str) -> object:
    kind = str(annotation)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw).expanduser()
    except ValueError:
        raise ConfigError(
            f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind}; fix or unset the variable"
        ) from None
    return raw
