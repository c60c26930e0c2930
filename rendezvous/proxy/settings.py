"""Typed, frozen settings of one proxy replica, with ``RDV_PROXY_*`` environment overrides.

Build one :class:`ProxySettings` at the entry point (``ProxySettings.from_env()``) and pass it
down; nothing else in the proxy reads the environment.
"""

from __future__ import annotations

import re
import ssl
import uuid
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from rendezvous.errors import ConfigError
from rendezvous.kafka import KafkaConnection
from rendezvous.settings import EnvSettings, optional_path

ENV_PREFIX = "RDV_PROXY_"
REPLICA_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _new_replica_id() -> str:
    return uuid.uuid4().hex[:12]


class ProxySettings(EnvSettings):
    """Where the proxy listens, which Kafka it talks to, and its limits."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)
    what: ClassVar[str] = "proxy setting"

    bootstrap: str = "127.0.0.1:9092"
    # The Kafka client properties file (security.protocol, sasl.*, ssl.*; see rendezvous.kafka).
    kafka_properties: Path | None = None
    # Where input schemas declared {from_model: m} are read from (the model's MLflow signature).
    tracking_uri: str = ""
    config: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    replica_id: str = Field(default_factory=_new_replica_id)
    # The partition of the results topic this replica reads, and names in its requests'
    # reply_to so that the rendezvous job writes their results there (rendezvous.replies):
    # "auto" (a stable hash of replica_id over the topic's partitions), a partition number,
    # or "all" (read every partition; requests name none).
    results_partition: str = "auto"

    # Access control: every scoring and status request needs an API key (`rendezvous keys`),
    # read from the rdv.api-keys topic; health, readiness, metrics and /docs stay open.
    require_api_keys: bool = False
    # How often a replica publishes its count of each key's requests (rdv.usage): the quotas
    # of keys used on several replicas can be exceeded by what the others admit in this time.
    usage_interval_ms: int = 1000

    max_body_bytes: int = 1 << 20
    # The whole body must arrive within this long of the handler asking for it; a body shorter
    # than its Content-Length, or one trickling in, gets 408 and the connection is closed.
    body_timeout_ms: int = 5000
    result_grace_ms: int = 15
    # The pipeline decides this long before the SLA (at most a quarter of it): a decision taken
    # at its deadline, a fallback when the champion is silent, then still reaches the proxy by
    # the SLA instead of after it (the result path is a watermark step and a Kafka hop).
    decision_lead_ms: int = 15
    # At most one batch per interval under load: every batch costs the stack about as much CPU
    # whatever its size, so longer intervals buy capacity with latency (see docs/benchmark.md).
    batch_interval_ms: int = 40
    batch_max_requests: int = 500
    # Sync requests in flight at once: where the adaptive limit starts, and its ceiling.
    admission_initial: int = 200
    admission_max: int = 5000
    tick_interval_ms: int = 10
    idle_tick_interval_ms: int = 1000
    cache_size: int = 100_000
    cache_ttl_ms: int = 600_000
    delivery_timeout_ms: int = 5000
    ready_probe_interval_ms: int = 1000
    # Where the feedback endpoint looks past requests and their labels up (the archive root;
    # `rendezvous proxy` uses the stack's). None: only the results this replica read are known.
    archive: Path | None = None
    # How far back the feedback endpoint looks for a request's decision (0: the whole archive).
    feedback_lookback_days: int = 30

    # TLS (see rendezvous.proxy.tls): with a certificate (PEM, the server's first, then its
    # intermediates), the replica serves HTTPS only; without, plain HTTP.
    tls_cert: Path | None = None
    # Its private key (PEM); None: in the certificate's file.
    tls_key: Path | None = None
    # The key's password, when it is encrypted (from the environment only, never a flag).
    tls_key_password: SecretStr | None = None
    # CA certificates (PEM): clients must present a certificate signed by one (mutual TLS).
    tls_client_ca: Path | None = None
    # Under mutual TLS, the client certificate and key the project's own commands present
    # to a local replica (the demo's requests, a replacement's readiness waits).
    tls_probe_cert: Path | None = None
    tls_probe_key: Path | None = None

    @property
    def tls_key_password_text(self) -> str | None:
        p = self.tls_key_password
        return None if p is None else p.get_secret_value()

    @cached_property
    def server_ssl(self) -> ssl.SSLContext | None:
        """The replica's TLS context, loaded from its files (None: plain HTTP); reading the
        files at construction makes a bad certificate, key or password fail at start."""
        from rendezvous.proxy import tls

        return tls.server_context(self)

    @property
    def fixed_results_partition(self) -> int | None:
        """The results partition named by number, else None ("auto" or "all")."""
        return int(self.results_partition) if self.results_partition.isdigit() else None

    @cached_property
    def kafka(self) -> KafkaConnection:
        """The connection the proxy's producer and results reader build from."""
        return KafkaConnection.from_file(self.bootstrap, self.kafka_properties)

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        defaults: Mapping[str, object] | None = None,
        **overrides: object,
    ) -> ProxySettings:
        """Class defaults, then ``defaults`` (e.g. from the stack settings), then
        ``RDV_PROXY_<FIELD>`` variables, then explicit keyword overrides (e.g. CLI flags)."""
        values = cls.env_values(env)
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(**{**(defaults or {}), **values, **given}, _from_env=set(values) - set(given))

    def validated(self) -> ProxySettings:
        """These settings; construction has validated them already."""
        return self

    @field_validator(
        "config",
        "kafka_properties",
        "archive",
        "tls_cert",
        "tls_key",
        "tls_client_ca",
        "tls_probe_cert",
        "tls_probe_key",
        mode="before",
    )
    @classmethod
    def _optional_path(cls, value: object) -> object:
        return optional_path(value)

    @model_validator(mode="after")
    def _check(self) -> ProxySettings:
        def need(cond: bool, name: str, what: str, got: object) -> None:
            if not cond:
                raise ConfigError(
                    f"proxy setting {name}={got!r} is invalid: expected {what}; "
                    f"set {ENV_PREFIX}{name.upper()}"
                )

        need(0 < self.port < 65536, "port", "a TCP port 1-65535", self.port)
        need(bool(self.bootstrap.strip()), "bootstrap", "host:port[,host:port]", self.bootstrap)
        need(
            REPLICA_ID_RE.fullmatch(self.replica_id) is not None,
            "replica_id",
            "1-64 characters of letters, digits, '.', '_' or '-'",
            self.replica_id,
        )
        need(
            self.results_partition in ("auto", "all")
            or (self.results_partition.isdigit() and len(self.results_partition) <= 6),
            "results_partition",
            "auto, all, or a partition number of the results topic",
            self.results_partition,
        )
        need(
            self.usage_interval_ms >= 10,
            "usage_interval_ms",
            "milliseconds >= 10 (how often quota counts are shared between replicas)",
            self.usage_interval_ms,
        )
        need(self.max_body_bytes >= 64, "max_body_bytes", "at least 64 bytes", self.max_body_bytes)
        need(
            self.body_timeout_ms >= 1,
            "body_timeout_ms",
            "milliseconds >= 1 (the longest a request body may take to arrive)",
            self.body_timeout_ms,
        )
        need(
            self.result_grace_ms >= 0, "result_grace_ms", "milliseconds >= 0", self.result_grace_ms
        )
        need(
            self.decision_lead_ms >= 0,
            "decision_lead_ms",
            "milliseconds >= 0",
            self.decision_lead_ms,
        )
        need(
            self.batch_interval_ms >= 0,
            "batch_interval_ms",
            "milliseconds >= 0 (the least time between two batches of requests; 0: no wait)",
            self.batch_interval_ms,
        )
        need(
            self.batch_max_requests >= 1,
            "batch_max_requests",
            "at least 1 request per batch",
            self.batch_max_requests,
        )
        need(
            1 <= self.admission_initial <= self.admission_max,
            "admission_initial",
            f"between 1 and admission_max ({self.admission_max})",
            self.admission_initial,
        )
        need(
            self.tick_interval_ms >= 0,
            "tick_interval_ms",
            "milliseconds >= 0 (0 turns the clock heartbeat off)",
            self.tick_interval_ms,
        )
        need(
            self.idle_tick_interval_ms >= 1,
            "idle_tick_interval_ms",
            "milliseconds >= 1 (the heartbeat cadence with no request waiting)",
            self.idle_tick_interval_ms,
        )
        need(self.cache_size >= 1, "cache_size", "at least 1 entry", self.cache_size)
        need(self.cache_ttl_ms >= 1, "cache_ttl_ms", "milliseconds >= 1", self.cache_ttl_ms)
        need(
            self.delivery_timeout_ms >= 1,
            "delivery_timeout_ms",
            "milliseconds >= 1",
            self.delivery_timeout_ms,
        )
        need(
            self.ready_probe_interval_ms >= 1,
            "ready_probe_interval_ms",
            "milliseconds >= 1",
            self.ready_probe_interval_ms,
        )
        need(
            self.feedback_lookback_days >= 0,
            "feedback_lookback_days",
            "days >= 0 (0: the whole archive)",
            self.feedback_lookback_days,
        )
        self.kafka  # noqa: B018 - read the properties file now, not at the first client
        self.server_ssl  # noqa: B018 - and the certificate and key, before anything listens
        return self
