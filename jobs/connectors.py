"""Kafka sources and sinks for the jobs: the one module that builds connectors.

Values travel as raw bytes (see :mod:`rendezvous.serde`); decoding happens in Python, so a
record that does not decode becomes a dead letter instead of failing the source.
"""

from __future__ import annotations

from pyflink.common import Duration, WatermarkStrategy
from pyflink.common.typeinfo import Types
from pyflink.datastream import DataStream
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
)
from pyflink.java_gateway import get_gateway

from rendezvous.kafka import KafkaConnection

BYTES = Types.PRIMITIVE_ARRAY(Types.BYTE())

_SHADED = "org.apache.flink.kafka.shaded.org.apache.kafka.common.serialization."


def _java_class(name: str):
    return get_gateway().jvm.java.lang.Class.forName(name)


def kafka_source(
    kafka: KafkaConnection,
    topics: list[str],
    group_id: str,
    *,
    start: str = "committed",
    bounded: bool = False,
    latency_critical: bool = True,
) -> KafkaSource:
    """A source of raw Kafka values; element timestamps are the Kafka record timestamps.

    ``start``: ``committed`` (the group's offsets, else earliest), ``live`` (the group's offsets,
    else latest: a model added to a running service scores traffic from now on, not the
    retained history), ``earliest`` or ``latest``.
    ``bounded``: stop at the offsets that are latest when the job starts (replay, tests).
    ``latency_critical``: fetch each record as soon as it is written; otherwise (the archive)
    let the broker gather up to 1 MB or 500 ms per fetch, which costs it far fewer requests.
    Either way a quiet topic costs one fetch per 500 ms: the broker answers a waiting fetch
    as soon as ``fetch.min.bytes`` have arrived, so a long wait adds no latency.
    """
    jvm = get_gateway().jvm
    initializers = {
        "earliest": KafkaOffsetsInitializer.earliest,
        "latest": KafkaOffsetsInitializer.latest,
        "committed": lambda: KafkaOffsetsInitializer.committed_offsets(
            _offset_reset_strategy("EARLIEST")
        ),
        "live": lambda: KafkaOffsetsInitializer.committed_offsets(_offset_reset_strategy("LATEST")),
    }
    builder = KafkaSource.builder().set_bootstrap_servers(kafka.bootstrap)
    _set_properties(builder, kafka)
    builder = (
        builder.set_topics(*topics)
        .set_group_id(group_id)
        .set_starting_offsets(initializers[start]())
        .set_property("fetch.min.bytes", "1" if latency_critical else str(1 << 20))
        .set_property("fetch.max.wait.ms", "500")
        .set_property("partition.discovery.interval.ms", "10000")
        .set_property("commit.offsets.on.checkpoint", "true")
        .set_property("client.id.prefix", group_id)
    )
    if bounded:
        builder.set_bounded(KafkaOffsetsInitializer.latest())
    deserializer = (
        jvm.org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema
    ).valueOnly(_java_class(_SHADED + "ByteArrayDeserializer"))
    builder._j_builder.setDeserializer(deserializer)
    return builder.build()


def _offset_reset_strategy(name: str):
    from pyflink.datastream.connectors.kafka import KafkaOffsetResetStrategy

    return getattr(KafkaOffsetResetStrategy, name)


def _set_properties(builder, kafka: KafkaConnection) -> None:
    """The connection's properties (security and the like) first: each connector's own
    settings below override them."""
    for name, value in kafka.java_properties().items():
        builder.set_property(name, value)


def kafka_sink(
    kafka: KafkaConnection,
    topic: str,
    *,
    exactly_once: bool = False,
    txn_prefix: str = "",
    reply_routed: bool = False,
) -> KafkaSink:
    """A sink of raw values to ``topic``; the record timestamp is the element's timestamp.

    With ``reply_routed``, each value starts with the partition to write it to
    (:func:`rendezvous.replies.routed`; ``dev.rendezvous.flink.ReplyRouted`` in the project's jar
    cuts it off)."""
    jvm = get_gateway().jvm
    if reply_routed:
        j_schema = jvm.dev.rendezvous.flink.ReplyRouted(topic)
    else:
        j_schema = (
            jvm.org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema.builder()
            .setTopic(topic)
            .setKafkaValueSerializer(_java_class(_SHADED + "ByteArraySerializer"))
            .build()
        )
    builder = KafkaSink.builder().set_bootstrap_servers(kafka.bootstrap)
    _set_properties(builder, kafka)
    if reply_routed:
        # PyFlink's set_record_serializer inspects the schema as one its own builder made;
        # a schema of the project's own goes to the Java builder as it is.
        builder._j_builder.setRecordSerializer(j_schema)
    else:
        builder.set_record_serializer(KafkaRecordSerializationSchema(j_schema))
    builder = builder.set_property("linger.ms", "0").set_property("compression.type", "none")
    if exactly_once:
        builder.set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
        builder.set_transactional_id_prefix(txn_prefix or f"rdv-{topic}")
        # Longer than a checkpoint interval plus a recovery (a transaction the broker aborts
        # before its checkpoint commits it is missing from the archive), and short, because an
        # open transaction left by a job that is gone holds back every read_committed reader
        # of the topic (the archive) until the broker aborts it.
        builder.set_property("transaction.timeout.ms", str(5 * 60 * 1000))
    else:
        builder.set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
    return builder.build()


def event_time(*, out_of_order_ms: int = 5, idle_ms: int | None = 100) -> WatermarkStrategy:
    """Watermarks from Kafka record timestamps, per partition; with ``idle_ms``, a partition
    silent that long is left out of the watermark until it has records again."""
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(out_of_order_ms))
    return strategy if idle_ms is None else strategy.with_idleness(Duration.of_millis(idle_ms))


def without_heartbeats(stream: DataStream, name: str) -> DataStream:
    """``stream`` less its heartbeats, dropped in the JVM (``dev.rendezvous.flink.DropHeartbeats``
    in the project's jar): the watermark has read their timestamps at the source already, and
    no Python operator downstream pays a crossing for a record with nothing in it."""
    j_filter = get_gateway().jvm.dev.rendezvous.flink.DropHeartbeats()
    return DataStream(stream._j_data_stream.filter(j_filter)).name(name).uid(name)


def no_watermarks() -> WatermarkStrategy:
    return WatermarkStrategy.no_watermarks()
