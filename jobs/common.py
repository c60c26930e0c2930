"""What every job shares: its arguments and the execution environment."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pyflink.common import Configuration
from pyflink.datastream import StreamExecutionEnvironment

from rendezvous import config
from rendezvous.kafka import KafkaConnection


@dataclass(frozen=True)
class JobSettings:
    kafka: KafkaConnection
    config_path: Path | None
    service: str | None
    model: str | None
    tracking_uri: str | None
    group_prefix: str
    start: str
    checkpoint_interval: str | None = None  # e.g. "30 s"; None: the cluster's

    def config(self) -> config.Config:
        if self.config_path is None:
            raise config.ConfigError("this job was submitted without --config")
        return config.load(self.config_path)


def parse_args(
    argv: list[str] | None, *, needs_service: bool = False, needs_model: bool = False
) -> JobSettings:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--kafka-properties", type=Path, help="Kafka client properties file")
    parser.add_argument("--config", type=Path, help="the configuration (scoring jobs)")
    parser.add_argument("--service", required=needs_service)
    parser.add_argument("--model", required=needs_model)
    parser.add_argument("--tracking-uri")
    parser.add_argument("--group-prefix", default="rdv")
    parser.add_argument(
        "--start", default="committed", choices=["committed", "live", "earliest", "latest"]
    )
    parser.add_argument("--checkpoint-interval", help='e.g. "30 s" (default: the cluster\'s)')
    args = parser.parse_args(argv)
    return JobSettings(
        kafka=KafkaConnection.from_file(args.bootstrap, args.kafka_properties),
        config_path=args.config.resolve() if args.config else None,
        service=args.service,
        model=args.model,
        tracking_uri=args.tracking_uri,
        group_prefix=args.group_prefix,
        start=args.start,
        checkpoint_interval=args.checkpoint_interval,
    )


def environment(
    *,
    latency_critical: bool = False,
    watermarks: bool = False,
    process: bool = False,
    checkpoint_interval: str | None = None,
    restarts: Mapping[str, str] | None = None,
) -> StreamExecutionEnvironment:
    """The job's environment. Python runs in thread mode (inside the TaskManager's JVM), or with
    ``process`` in a Python worker process of the job's own (its own interpreter lock, at the
    cost of a gRPC round trip per record: each record is a bundle of its own, so nothing waits
    for a bundle to fill).

    ``latency_critical``: the serving path's records are batches of requests, a few hundred per
    second at most, so every network buffer is flushed as soon as a record is in it instead of
    on the cluster's buffer timeout. ``watermarks``: the job decides on event time and needs
    frequent watermarks; other jobs switch the periodic watermark timer off.
    ``checkpoint_interval``: this job's, instead of the cluster's. ``restarts``: this job's
    restart-strategy options (see rendezvous.restarts), instead of the cluster's strategy.
    """
    conf = Configuration()
    if process:
        conf.set_string("python.execution-mode", "process")
        conf.set_string("python.fn-execution.bundle.size", "1")
        conf.set_string("python.fn-execution.bundle.time", "1")
    else:
        conf.set_string("python.execution-mode", "thread")
    if latency_critical:
        conf.set_string("execution.buffer-timeout.interval", "0 ms")
    conf.set_string("pipeline.auto-watermark-interval", "5 ms" if watermarks else "0 ms")
    if checkpoint_interval:
        conf.set_string("execution.checkpointing.interval", checkpoint_interval)
    for key, value in (restarts or {}).items():
        conf.set_string(key, value)
    return StreamExecutionEnvironment.get_execution_environment(conf)
