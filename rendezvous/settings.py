"""Typed, frozen settings for the local stack, with ``RDV_*`` environment overrides.

Build one :class:`StackSettings` at the entry point (``StackSettings.from_env()``) and pass it
down; nothing else reads the environment. :class:`EnvSettings` is the base of every settings
object of the project (pydantic-settings, frozen, errors as :class:`ConfigError`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Mapping
from dataclasses import FrozenInstanceError
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from rendezvous.errors import ConfigError
from rendezvous.kafka import KafkaConnection

ENV_PREFIX = "RDV_"
REPO_ROOT = Path(__file__).resolve().parents[1]


class _MappingEnv(EnvSettingsSource):
    """The environment source of pydantic-settings over a given mapping (not ``os.environ``),
    reading only variables spelled in capitals, as ``RDV_KAFKA_PORT``."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        prefix = settings_cls.model_config.get("env_prefix", "")
        self._env = {k: v for k, v in env.items() if k.startswith(prefix) and k == k.upper()}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._env, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


class EnvSettings(BaseSettings):
    """Frozen settings from keyword values; :meth:`env_values` reads the ``<prefix><FIELD>``
    variables of a mapping. Construction reads no environment of its own, so
    ``Settings(field=value)`` is exactly the defaults plus ``value``. A value of the wrong
    type, or an unknown field, is a :class:`ConfigError` naming the variable to fix."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", env_prefix=ENV_PREFIX)
    what: ClassVar[str] = "setting"  # how error messages call one of these

    def __init__(self, **values: Any) -> None:
        from_env: Collection[str] = values.pop("_from_env", ())
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise type(self)._config_error(exc, from_env) from None

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}: settings are frozen")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # the environment comes in through from_env() only

    @classmethod
    def env_values(cls, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The fields set by ``<prefix><FIELD>`` variables of ``env`` (default: ``os.environ``),
        as their raw strings."""
        return _MappingEnv(cls, os.environ if env is None else env)()

    @classmethod
    def variable(cls, name: str) -> str:
        return f"{cls.model_config.get('env_prefix', '')}{name.upper()}"

    @classmethod
    def _config_error(cls, exc: ValidationError, from_env: Collection[str]) -> ConfigError:
        problems = exc.errors(include_url=False)
        unknown = sorted(str(p["loc"][0]) for p in problems if p["type"] == "extra_forbidden")
        if unknown:
            return ConfigError(
                f"unknown {cls.what}(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(cls.model_fields))}"
            )
        problem = problems[0]
        name = str(problem["loc"][0]) if problem["loc"] else "?"
        field = cls.model_fields.get(name)
        kind = _kind(field.annotation) if field else "value"
        got = problem.get("input")
        if name in from_env:
            return ConfigError(
                f"{cls.variable(name)}={got!r} is not a valid {kind}; fix or unset the variable"
            )
        return ConfigError(
            f"{cls.what} {name}={got!r} is not a valid {kind}: {problem['msg']}; "
            f"set {cls.variable(name)}"
        )

    def to_env(self) -> dict[str, str]:
        """The variables that make ``from_env()`` in a child process rebuild these."""
        return {
            self.variable(name): str(value)
            for name in type(self).model_fields
            if (value := getattr(self, name)) is not None
        }


def _kind(annotation: object) -> str:
    name = getattr(annotation, "__name__", None)
    return name if isinstance(name, str) else str(annotation).replace("pathlib.", "")


def optional_path(value: object) -> object:
    """An empty variable means no path; ``~`` is the user's folder."""
    if value == "":
        return None
    return Path(value).expanduser() if isinstance(value, (str, Path)) else value


def _default_home() -> Path:
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT / ".state"
    return Path.home() / ".rendezvous"


class StackSettings(EnvSettings):
    """Where the local stack lives, which ports it binds and how big it is, and the Kafka
    connection every client of the stack uses (:attr:`kafka`)."""

    home: Path = Field(default_factory=_default_home)
    host: str = "127.0.0.1"

    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_heap: str = "512m"
    # Partitions per topic. Every job runs at parallelism 1 on the local stack, and with one
    # partition the rendezvous job's watermark follows every record, so heartbeats are needed
    # only when traffic stops (see rendezvous.proxy.app).
    kafka_partitions: int = 1
    # Partitions of the results topic: each proxy replica reads one (its reply partition, see
    # rendezvous.replies), so up to this many replicas read none of each other's results.
    results_partitions: int = 8
    # The Kafka cluster every client connects to (empty: the local broker, host:kafka_port),
    # and a properties file with its client properties (security.protocol, sasl.*, ssl.*;
    # see rendezvous.kafka).
    kafka_bootstrap: str = Field("", validate_default=True)
    kafka_properties: Path | None = None

    flink_rest_port: int = 8081
    flink_rpc_port: int = 6123
    # Flink's Prometheus reporter on the local cluster: the JobManager serves /metrics on this
    # port and TaskManager i (1, 2, ...) on this port + i, so each process has a port of its
    # own and a scrape target names the process. 0: no reporter (see docs/metrics.md).
    flink_metrics_port: int = 9249
    # A Flink session cluster of your own (its REST address, e.g. http://flink-jm:8081);
    # empty: the local one, http://host:flink_rest_port.
    flink_rest_url: str = ""
    # An MLflow tracking server of your own (MLflow's own MLFLOW_TRACKING_USERNAME,
    # MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN authenticate); empty: the local one.
    mlflow_tracking_uri: str = ""
    # The named profile these settings came from (see rendezvous.profiles); empty: none.
    profile: str = ""
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
    # Parallel tasks of the shared jobs (a scoring job's is its model's `parallelism` in the
    # configuration). Each task takes a slot, and a job's input topics need at least as many
    # partitions (kafka_partitions): the rendezvous job is keyed by batch, so its tasks share
    # the join's state and timers by key.
    enrich_parallelism: int = 1
    join_parallelism: int = 1
    archive_parallelism: int = 1

    mlflow_port: int = 5000
    proxy_port: int = 8000

    kafka_version: str = "4.2.0"
    flink_version: str = "2.3.0"
    flink_kafka_connector_version: str = "5.0.0-2.2"
    hadoop_version: str = "3.4.1"

    # The Python that runs this package where commands run (and the local stack's jobs).
    python: Path = Field(default_factory=lambda: Path(sys.executable))
    # The Python interpreter on the Flink TaskManagers (Flink's python.executable, given to
    # every job with `flink run -pyexec`): a path on the workers, which need the third-party
    # packages only (the project's code ships with each job; see rendezvous.shipping). Empty:
    # `python` for the local stack; for a cluster of your own, no -pyexec (Flink's own
    # python.executable resolution, default `python`).
    flink_python: str = ""
    start_timeout_s: float = 120.0
    # How often `rendezvous up --supervise` checks the stack's processes.
    supervise_interval_s: float = 2.0

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

    @cached_property
    def kafka(self) -> KafkaConnection:
        """The connection every Kafka client of the stack builds from."""
        return KafkaConnection.from_file(self.kafka_bootstrap, self.kafka_properties)

    @property
    def flink_url(self) -> str:
        return self.flink_rest_url.rstrip("/") or f"http://{self.host}:{self.flink_rest_port}"

    @property
    def flink_metrics_ports(self) -> dict[str, int]:
        """The local cluster's Prometheus endpoints: process name -> port (empty: none)."""
        if not self.flink_metrics_port:
            return {}
        ports = {"flink-jobmanager": self.flink_metrics_port}
        for i in range(self.flink_taskmanagers):
            name = "flink-taskmanager" if i == 0 else f"flink-taskmanager-{i + 1}"
            ports[name] = self.flink_metrics_port + 1 + i
        return ports

    @property
    def mlflow_url(self) -> str:
        return self.mlflow_tracking_uri or f"http://{self.host}:{self.mlflow_port}"

    @property
    def kafka_is_local(self) -> bool:
        """Whether Kafka is the broker `rendezvous up` starts here (no bootstrap of its own)."""
        return self.kafka_bootstrap == self._local_broker()

    @property
    def mlflow_is_local(self) -> bool:
        """Whether MLflow is the server `rendezvous up` starts here (no tracking URI of its own)."""
        return not self.mlflow_tracking_uri

    @property
    def flink_is_local(self) -> bool:
        """Whether Flink is the cluster `rendezvous up` starts here (no REST URL of its own)."""
        return not self.flink_rest_url

    @property
    def cluster_python(self) -> str | None:
        """The interpreter jobs are told to run on the TaskManagers; None: no -pyexec."""
        if self.flink_python:
            return self.flink_python
        return str(self.python) if self.flink_is_local else None

    @property
    def ship_dir(self) -> Path:
        """Where the zips of the project's code shipped with the jobs are kept."""
        return self.home / "ship"

    @property
    def proxy_url(self) -> str:
        return f"http://{self.host}:{self.proxy_port}"

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> StackSettings:
        """Defaults, then the named profile (``RDV_PROFILE``, or ``profile=``; see
        :mod:`rendezvous.profiles`), then ``RDV_<FIELD>`` variables, then explicit keyword
        overrides."""
        from rendezvous import profiles

        values = cls.env_values(env)
        name = str(overrides.get("profile") or values.get("profile") or "")
        base = profiles.load(name, env) if name else {}
        return cls(
            **{**base, **values, **overrides, "profile": name},
            _from_env=set(values) - set(overrides),
        )

    def validated(self) -> StackSettings:
        """These settings; construction has validated them already."""
        return self

    def to_env(self) -> dict[str, str]:
        env = super().to_env()
        if self.kafka_bootstrap == self._local_broker():
            del env[self.variable("kafka_bootstrap")]  # derived: a child derives it again
        return env

    def _local_broker(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, home: Path) -> Path:
        return home.expanduser().resolve()

    @field_validator("python", mode="after")
    @classmethod
    def _expand_python(cls, python: Path) -> Path:
        return python.expanduser()

    @field_validator("kafka_properties", mode="before")
    @classmethod
    def _properties_path(cls, value: object) -> object:
        return optional_path(value)

    @field_validator("kafka_bootstrap", mode="after")
    @classmethod
    def _local_broker_by_default(cls, bootstrap: str, info: ValidationInfo) -> str:
        if bootstrap or "kafka_port" not in info.data:
            return bootstrap
        return f"{info.data['host']}:{info.data['kafka_port']}"

    @model_validator(mode="after")
    def _check(self) -> StackSettings:
        ports = {
            "kafka_port": self.kafka_port,
            "kafka_controller_port": self.kafka_controller_port,
            "flink_rest_port": self.flink_rest_port,
            "flink_rpc_port": self.flink_rpc_port,
            "mlflow_port": self.mlflow_port,
            "proxy_port": self.proxy_port,
        }
        for i, port in enumerate(self.flink_metrics_ports.values()):
            ports["flink_metrics_port" + (f"+{i}" if i else "")] = port
        if self.flink_taskmanagers < 1 or self.flink_taskmanager_slots < 1:
            raise ConfigError(
                f"flink_taskmanagers={self.flink_taskmanagers} and flink_taskmanager_slots="
                f"{self.flink_taskmanager_slots} must both be at least 1; set "
                f"{ENV_PREFIX}FLINK_TASKMANAGERS / {ENV_PREFIX}FLINK_TASKMANAGER_SLOTS"
            )
        for name in ("kafka_partitions", "results_partitions"):
            if not 1 <= getattr(self, name) <= 1024:
                raise ConfigError(
                    f"{name}={getattr(self, name)} must be from 1 to 1024 (partitions per "
                    f"topic); set {ENV_PREFIX}{name.upper()}"
                )
        for name in ("enrich_parallelism", "join_parallelism", "archive_parallelism"):
            if not 1 <= getattr(self, name) <= 64:
                raise ConfigError(
                    f"{name}={getattr(self, name)} must be from 1 to 64 (parallel tasks of "
                    f"the job); set {ENV_PREFIX}{name.upper()}"
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
            setting = ENV_PREFIX + name.split("+", 1)[0].upper()
            if not 0 < port < 65536:
                raise ConfigError(f"{name}={port} is not a TCP port; set {setting} to 1-65535")
            if port in seen:
                raise ConfigError(
                    f"{name} and {seen[port]} are both {port}; give one of them another port "
                    f"with {setting}"
                )
            seen[port] = name
        self.kafka  # noqa: B018 - read the properties file now, not at the first client
        return self
