"""One Kafka connection for every client: bootstrap servers plus the cluster's client properties.

Properties are written in librdkafka's names (confluent-kafka's, as the Python clients use them)
and translated for the Java client that Flink's connectors run (:meth:`java_properties`). A
property for one dialect only is written with a ``librdkafka.`` or ``java.`` prefix, e.g.
``java.ssl.truststore.location``. Each client adds its own settings (``linger.ms``, fetch waits,
``client.id``...) on top, and those win: the connection says how to reach the cluster, the
client says how it uses it.

Properties come from a ``key=value`` file (Java ``.properties`` syntax) so that secrets never
sit on a command line or in an environment variable; :func:`repr` and :meth:`describe` mask them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from rendezvous.errors import ConfigError

JAVA_PREFIX = "java."
LIBRDKAFKA_PREFIX = "librdkafka."
# The Kafka client inside flink-sql-connector-kafka is shaded: login modules named in
# sasl.jaas.config must carry the shaded package.
JAVA_KAFKA_PACKAGE = "org.apache.flink.kafka.shaded.org.apache.kafka"
_LOGIN_MODULES = {
    "PLAIN": "common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "common.security.scram.ScramLoginModule",
}
# librdkafka names with no one-to-one Java equivalent: give the Java client's own with ``java.``
# and move this one under ``librdkafka.``.
_LIBRDKAFKA_ONLY = frozenset(
    {
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.certificate.pem",
        "ssl.key.pem",
        "ssl.ca.pem",
        "enable.ssl.certificate.verification",
        "sasl.oauthbearer.method",
        "sasl.oauthbearer.client.id",
        "sasl.oauthbearer.client.secret",
        "sasl.kerberos.keytab",
        "sasl.kerberos.principal",
    }
)
# Java names librdkafka refuses: they need the ``java.`` prefix.
_JAVA_ONLY = frozenset(
    {
        "sasl.jaas.config",
        "ssl.truststore.location",
        "ssl.truststore.password",
        "ssl.truststore.type",
        "ssl.keystore.type",
        "ssl.keystore.certificate.chain",
        "ssl.keystore.key",
        "ssl.truststore.certificates",
    }
)
_SECRET = re.compile(r"password|secret|jaas|token|credential|\.key\.pem$|keystore\.key$", re.I)
MASK = "***"


def is_secret(name: str) -> bool:
    """Whether the value of property ``name`` must never be printed."""
    return _SECRET.search(name) is not None


def masked(properties: Mapping[str, object]) -> dict[str, object]:
    """``properties`` with every secret value replaced by ``***``."""
    return {k: MASK if is_secret(k) else v for k, v in properties.items()}


@dataclass(frozen=True, repr=False)
class KafkaConnection:
    """Where a Kafka cluster is and how to authenticate to it; immutable, secrets masked."""

    bootstrap: str
    properties: Mapping[str, str] = field(default_factory=dict)
    # Where the properties were read from (None: given in code); jobs are handed this path.
    source: Path | None = None

    def __post_init__(self) -> None:
        if not self.bootstrap.strip():
            raise ConfigError(
                "Kafka bootstrap servers are empty: expected host:port[,host:port]; "
                "set RDV_KAFKA_BOOTSTRAP"
            )
        props = {str(k): str(v) for k, v in self.properties.items()}
        if "bootstrap.servers" in props:
            raise ConfigError(
                f"{self._where()}: bootstrap.servers belongs in RDV_KAFKA_BOOTSTRAP, not the "
                "properties; remove it from the properties"
            )
        object.__setattr__(self, "properties", MappingProxyType(props))
        self.client_config()  # refuse now what a client would refuse later
        self.java_properties()

    def __hash__(self) -> int:
        return hash((self.bootstrap, tuple(sorted(self.properties.items())), self.source))

    def __reduce__(self):  # a mapping proxy does not pickle; jobs ship their settings to workers
        return (type(self), (self.bootstrap, dict(self.properties), self.source))

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_file(cls, bootstrap: str, path: Path | str | None) -> KafkaConnection:
        """``bootstrap`` plus the properties in ``path`` (none when ``path`` is None)."""
        if path is None:
            return cls(bootstrap)
        path = Path(path).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the Kafka properties file {path}: {exc.strerror}; fix the path in "
                "RDV_KAFKA_PROPERTIES (or RDV_PROXY_KAFKA_PROPERTIES)"
            ) from None
        return cls(bootstrap, parse_properties(text, path), source=path.resolve())

    # ---- dialects ----------------------------------------------------------------------
    def client_config(self, client: Mapping[str, object] | None = None) -> dict[str, object]:
        """The confluent-kafka configuration: the connection's properties in librdkafka's
        names, then ``client``'s own settings."""
        conf: dict[str, object] = {"bootstrap.servers": self.bootstrap}
        for name, value in self.properties.items():
            if name.startswith(JAVA_PREFIX):
                continue
            if name in _JAVA_ONLY:
                raise ConfigError(
                    f"{self._where()}: {name} is a Java client property that librdkafka "
                    f"refuses; write it as {JAVA_PREFIX}{name}"
                )
            conf[name.removeprefix(LIBRDKAFKA_PREFIX)] = value
        conf.update(client or {})
        return conf

    def java_properties(self) -> dict[str, str]:
        """The Java client's properties for Flink's KafkaSource and KafkaSink (bootstrap
        servers apart: the builders take those on their own)."""
        dialects = (JAVA_PREFIX, LIBRDKAFKA_PREFIX)
        props = {k: v for k, v in self.properties.items() if not k.startswith(dialects)}
        explicit = {
            k.removeprefix(JAVA_PREFIX): v
            for k, v in self.properties.items()
            if k.startswith(JAVA_PREFIX)
        }
        out: dict[str, str] = {}
        mechanism = props.pop("sasl.mechanisms", None) or props.pop("sasl.mechanism", None)
        props.pop("sasl.mechanism", None)
        if mechanism:
            out["sasl.mechanism"] = mechanism
        username, password = props.pop("sasl.username", None), props.pop("sasl.password", None)
        if (username is not None or password is not None) and "sasl.jaas.config" not in explicit:
            out["sasl.jaas.config"] = self._jaas(mechanism or "GSSAPI", username, password)
        ca = props.pop("ssl.ca.location", None)
        if ca is not None and "ssl.truststore.location" not in explicit:
            out["ssl.truststore.type"] = "PEM"
            out["ssl.truststore.location"] = ca
        algorithm = props.pop("ssl.endpoint.identification.algorithm", None)
        if algorithm is not None:
            out["ssl.endpoint.identification.algorithm"] = "" if algorithm == "none" else algorithm
        unsupported = sorted(set(props) & _LIBRDKAFKA_ONLY)
        if unsupported:
            name = unsupported[0]
            raise ConfigError(
                f"{self._where()}: {name} has no equivalent in the Java client that Flink's "
                f"Kafka connectors use; write it as {LIBRDKAFKA_PREFIX}{name} and give the "
                f"Java client's own with {JAVA_PREFIX} (e.g. {JAVA_PREFIX}ssl.keystore.location)"
            )
        out.update(props)
        out.update(explicit)
        return out

    def sql_options(self) -> dict[str, str]:
        """The ``properties.*`` options of a Flink SQL Kafka table."""
        options = {"properties.bootstrap.servers": self.bootstrap}
        options.update({f"properties.{k}": v for k, v in self.java_properties().items()})
        return options

    def _jaas(self, mechanism: str, username: str | None, password: str | None) -> str:
        module = _LOGIN_MODULES.get(mechanism.upper())
        if module is None or username is None or password is None:
            raise ConfigError(
                f"{self._where()}: sasl.username and sasl.password with sasl.mechanism="
                f"{mechanism} cannot be turned into the Java client's sasl.jaas.config: expected "
                f"both, with mechanism {' or '.join(_LOGIN_MODULES)}; otherwise give "
                f"{JAVA_PREFIX}sasl.jaas.config yourself"
            )

        def quoted(s: str) -> str:
            return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

        return (
            f"{JAVA_KAFKA_PACKAGE}.{module} required "
            f"username={quoted(username)} password={quoted(password)};"
        )

    # ---- printing ----------------------------------------------------------------------
    def _where(self) -> str:
        return f"Kafka properties {self.source}" if self.source else "Kafka properties"

    def describe(self) -> str:
        """One line for logs: the bootstrap servers and the properties, secrets masked."""
        if not self.properties:
            return self.bootstrap
        props = ", ".join(f"{k}={v}" for k, v in masked(self.properties).items())
        return f"{self.bootstrap} ({props})"

    def __repr__(self) -> str:
        return (
            f"KafkaConnection(bootstrap={self.bootstrap!r}, "
            f"properties={masked(self.properties)!r}, source={self.source!r})"
        )

    __str__ = describe


def parse_properties(text: str, where: object = "properties") -> dict[str, str]:
    """``key=value`` (or ``key: value``) lines, Java ``.properties`` style: ``#`` and ``!``
    comments, blank lines, and a trailing backslash continuing a value on the next line."""
    props: dict[str, str] = {}
    pending = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = pending + raw.strip() if pending else raw.strip()
        if not pending and (not line or line[0] in "#!"):
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending = line[:-1]
            continue
        pending = ""
        match = re.match(r"([^=:\s]+)(?:\s*[=:\s]\s*(.*))?$", line)
        if match is None:  # the line is not echoed: it may hold a secret
            raise ConfigError(
                f"{where}, line {number}: expected key=value, got a line with no key; "
                "fix the line or comment it out with #"
            )
        props[match.group(1)] = match.group(2) or ""
    return props


# librdkafka's error codes (confluent_kafka.KafkaError names) for a connection that failed.
_AUTH_CODES = frozenset({"_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED"})
_SSL_CODES = frozenset({"_SSL"})


def connection_problem(
    code: str, reason: str, connection: KafkaConnection, *, local: bool = False
) -> str:
    """One line for a Kafka cluster that could not be used, naming the setting to fix: the
    credentials in the properties file for an authentication failure, its ``ssl.*`` for a TLS
    one, the bootstrap servers otherwise. ``code`` is the librdkafka error's name."""
    reason = " ".join(reason.split()).rstrip(".")
    where = (
        f"the Kafka properties file {connection.source} (kafka_properties)"
        if connection.source
        else "a Kafka properties file (kafka_properties: none is set)"
    )
    if code in _AUTH_CODES:
        return (
            f"Kafka at {connection.bootstrap} refused the credentials ({reason}); fix "
            f"sasl.username / sasl.password / sasl.mechanism in {where}"
        )
    if code in _SSL_CODES:
        return f"TLS with Kafka at {connection.bootstrap} failed ({reason}); fix ssl.* in {where}"
    fix = "check kafka_bootstrap (RDV_KAFKA_BOOTSTRAP or the profile's)" + (
        f" and security.protocol in {where}" if connection.source else ""
    )
    if local:
        fix = "run `rendezvous up` first"
    return f"no Kafka broker answers at {connection.bootstrap} ({reason}); {fix}"
