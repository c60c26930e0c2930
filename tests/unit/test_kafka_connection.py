"""KafkaConnection: merging client settings, both dialects, the properties file, masking."""

from __future__ import annotations

import pickle

import pytest

from rendezvous.errors import ConfigError
from rendezvous.kafka import (
    JAVA_KAFKA_PACKAGE,
    KafkaConnection,
    connection_problem,
    parse_properties,
)

pytestmark = pytest.mark.unit

SASL = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "alice",
    "sasl.password": 's3cr"et',
    "ssl.ca.location": "/etc/ca.pem",
}


def test_bootstrap_alone_gives_each_client_exactly_its_own_settings() -> None:
    kafka = KafkaConnection("k:9092")
    assert kafka.client_config({"linger.ms": 0, "acks": 1}) == {
        "bootstrap.servers": "k:9092",
        "linger.ms": 0,
        "acks": 1,
    }
    assert kafka.client_config() == {"bootstrap.servers": "k:9092"}
    assert kafka.java_properties() == {}
    assert kafka.sql_options() == {"properties.bootstrap.servers": "k:9092"}
    assert str(kafka) == "k:9092"


def test_client_settings_win_over_the_connection_properties() -> None:
    kafka = KafkaConnection("k:9092", {"linger.ms": "5", "security.protocol": "SSL"})
    conf = kafka.client_config({"linger.ms": 0})
    assert conf["linger.ms"] == 0 and conf["security.protocol"] == "SSL"


def test_sasl_and_a_ca_file_translate_for_the_java_client() -> None:
    java = KafkaConnection("k:9092", SASL).java_properties()
    assert java["security.protocol"] == "SASL_SSL"
    assert java["sasl.mechanism"] == "SCRAM-SHA-512"
    assert java["sasl.jaas.config"] == (
        f"{JAVA_KAFKA_PACKAGE}.common.security.scram.ScramLoginModule required "
        'username="alice" password="s3cr\\"et";'
    )
    assert java["ssl.truststore.type"] == "PEM"
    assert java["ssl.truststore.location"] == "/etc/ca.pem"
    assert not {"sasl.username", "sasl.password", "ssl.ca.location"} & set(java)


def test_the_confluent_config_is_accepted_by_librdkafka() -> None:
    from confluent_kafka import Producer

    conf = KafkaConnection("127.0.0.1:1", SASL).client_config({"linger.ms": 0})
    assert conf["sasl.password"] == 's3cr"et'
    Producer({**conf, "ssl.ca.location": "probe"}).flush(0)  # no unknown property names


def test_dialect_prefixes_reach_one_client_only() -> None:
    kafka = KafkaConnection(
        "k:9092",
        {
            "java.sasl.jaas.config": "custom;",
            "librdkafka.ssl.certificate.location": "/c.pem",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "u",
            "sasl.password": "p",
        },
    )
    conf, java = kafka.client_config(), kafka.java_properties()
    assert conf["ssl.certificate.location"] == "/c.pem" and "sasl.jaas.config" not in conf
    assert java["sasl.jaas.config"] == "custom;"  # given: not derived from username/password
    assert "ssl.certificate.location" not in java
    assert kafka.sql_options()["properties.sasl.jaas.config"] == "custom;"


def test_endpoint_identification_off_is_spelled_per_dialect() -> None:
    kafka = KafkaConnection("k:9092", {"ssl.endpoint.identification.algorithm": "none"})
    assert kafka.client_config()["ssl.endpoint.identification.algorithm"] == "none"
    assert kafka.java_properties()["ssl.endpoint.identification.algorithm"] == ""


@pytest.mark.parametrize(
    ("props", "words"),
    [
        ({"sasl.jaas.config": "x"}, "java.sasl.jaas.config"),
        ({"ssl.certificate.location": "/c"}, "librdkafka.ssl.certificate.location"),
        ({"sasl.mechanism": "GSSAPI", "sasl.username": "u", "sasl.password": "p"}, "GSSAPI"),
        ({"bootstrap.servers": "x:1"}, "RDV_KAFKA_BOOTSTRAP"),
    ],
)
def test_a_property_one_client_would_refuse_is_refused_at_once(props, words) -> None:
    with pytest.raises(ConfigError, match=words):
        KafkaConnection("k:9092", props)


def test_empty_bootstrap_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="RDV_KAFKA_BOOTSTRAP"):
        KafkaConnection(" ")


def test_secrets_are_masked_in_repr_and_describe() -> None:
    kafka = KafkaConnection(
        "k:9092",
        {**SASL, "java.ssl.truststore.password": "tpw", "librdkafka.ssl.key.pem": "KEY"},
    )
    for text in (repr(kafka), kafka.describe(), str(kafka), f"{kafka}"):
        for secret in ('s3cr"et', "s3cr", "tpw", "KEY"):
            assert secret not in text
        assert "sasl.username=alice" in text or "'sasl.username': 'alice'" in text
        assert "***" in text


def test_properties_file_parsing(tmp_path) -> None:
    path = tmp_path / "client.properties"
    path.write_text(
        "# cluster credentials\n"
        "security.protocol=SASL_SSL\n"
        "! another comment\n"
        "\n"
        "sasl.mechanism : PLAIN\n"
        "sasl.username=alice\n"
        "sasl.password=pa=ss:word\n"
        "java.sasl.jaas.config=org.example.Login required \\\n"
        '    username="alice";\n'
    )
    kafka = KafkaConnection.from_file("k:9092", path)
    assert kafka.source == path.resolve()
    assert dict(kafka.properties) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "alice",
        "sasl.password": "pa=ss:word",
        "java.sasl.jaas.config": 'org.example.Login required username="alice";',
    }
    assert KafkaConnection.from_file("k:9092", None) == KafkaConnection("k:9092")


def test_a_bad_line_or_a_missing_file_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="line 2"):
        parse_properties("a=1\n=secret\n")
    with pytest.raises(ConfigError, match="RDV_KAFKA_PROPERTIES"):
        KafkaConnection.from_file("k:9092", tmp_path / "missing.properties")


def test_connection_is_frozen_hashable_and_pickles() -> None:
    kafka = KafkaConnection("k:9092", SASL)
    with pytest.raises(AttributeError):
        kafka.bootstrap = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        kafka.properties["sasl.password"] = "x"  # type: ignore[index]
    copy = pickle.loads(pickle.dumps(kafka))
    assert copy == kafka and hash(copy) == hash(kafka)


# ---- a cluster that cannot be used, in one line ---------------------------------------------


def test_refused_credentials_name_the_properties_file_and_the_keys(tmp_path):
    props = tmp_path / "client.properties"
    props.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-256\n")
    conn = KafkaConnection.from_file("k1:9093", props)
    reason = (
        "SASL authentication error: Authentication failed during authentication due to "
        "invalid credentials with SASL mechanism SCRAM-SHA-256."
    )
    line = connection_problem("_AUTHENTICATION", reason, conn)
    assert line == (
        "Kafka at k1:9093 refused the credentials (SASL authentication error: Authentication "
        "failed during authentication due to invalid credentials with SASL mechanism "
        f"SCRAM-SHA-256); fix sasl.username / sasl.password / sasl.mechanism in the Kafka "
        f"properties file {props.resolve()} (kafka_properties)"
    )


def test_an_unreachable_broker_names_the_bootstrap_setting_or_up_for_the_local_one():
    conn = KafkaConnection("k1:9093")
    remote = connection_problem("_TRANSPORT", "Connection refused", conn)
    assert remote.startswith("no Kafka broker answers at k1:9093 (Connection refused); check ")
    assert remote.endswith("check kafka_bootstrap (RDV_KAFKA_BOOTSTRAP or the profile's)")
    local = connection_problem("_TRANSPORT", "Connection refused", conn, local=True)
    assert local.endswith("run `rendezvous up` first")
    assert "fix ssl.*" in connection_problem("_SSL", "certificate verify failed", conn)
