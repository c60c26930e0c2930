"""A minimal job that proves the wiring: Kafka in -> a Python operator -> Kafka out.

It reads TICK records, appends ``+flink`` to their source and writes them back.
"""

from __future__ import annotations

import argparse

from pyflink.datastream import StreamExecutionEnvironment

from jobs.connectors import BYTES, kafka_sink, kafka_source, no_watermarks
from rendezvous import serde
from rendezvous.kafka import KafkaConnection


def relabel(value: bytes) -> bytes:
    tick = serde.decode_as(serde.Kind.TICK, value)
    tick["source"] += "+flink"
    return serde.encode(serde.Kind.TICK, tick)


def build(env: StreamExecutionEnvironment, source, sink) -> None:
    stream = env.from_source(source, no_watermarks(), "smoke-in", type_info=BYTES).uid("smoke-in")
    stream.map(relabel, output_type=BYTES).name("relabel").uid("relabel").sink_to(sink).name(
        "smoke-out"
    ).uid("smoke-out")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", default="rdv-smoke")
    parser.add_argument("--kafka-properties", help="Kafka client properties file")
    args = parser.parse_args(argv)
    kafka = KafkaConnection.from_file(args.bootstrap, args.kafka_properties)
    env = StreamExecutionEnvironment.get_execution_environment()
    build(
        env,
        kafka_source(kafka, [args.input], args.group, start="earliest"),
        kafka_sink(kafka, args.output),
    )
    env.execute(f"rendezvous-smoke {args.input}->{args.output}")


if __name__ == "__main__":
    main()
