"""Replay job (batch): score a service's archived requests with one model, into ``replay``.

The archived ``requests`` table holds every request as the models saw it (after enrichment);
this job reads a service's rows in a time window from the Parquet files, scores each with the
model named by ``--model-uri`` (loaded once per worker, as the live score job does), and writes
the scores, tagged with ``--replay-id``, to the ``replay`` table next to the live ones. Flink
runs it in batch mode with ``--parallelism`` workers; the files are committed when it ends.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from pyflink.common import Row
from pyflink.common.typeinfo import Types
from pyflink.datastream import MapFunction, RuntimeContext, StreamExecutionEnvironment
from pyflink.datastream.execution_mode import RuntimeExecutionMode
from pyflink.table import StreamTableEnvironment, Table, TableResult

from rendezvous import models, scoring, serde
from rendezvous.archive import layout, tables
from rendezvous.clock import now_ms
from rendezvous.config import ModelSpec


@dataclass(frozen=True)
class ReplaySettings:
    archive: str
    service: str
    spec: ModelSpec
    replay_id: str
    tracking_uri: str | None
    since_ms: int | None
    until_ms: int | None
    parallelism: int


def parse_args(argv: list[str] | None) -> ReplaySettings:
    p = argparse.ArgumentParser()
    p.add_argument("--archive", required=True, help="archive root (folder or filesystem URI)")
    p.add_argument("--service", required=True)
    p.add_argument("--model", required=True, help="the model as JSON: name, role, uri/callable")
    p.add_argument("--replay-id", required=True)
    p.add_argument("--tracking-uri")
    p.add_argument("--since-ms", type=int)
    p.add_argument("--until-ms", type=int)
    p.add_argument("--parallelism", type=int, default=2)
    args, _ = p.parse_known_args(argv)
    model = json.loads(args.model)
    spec = ModelSpec(
        name=model["name"],
        role=model["role"],
        uri=model.get("uri"),
        callable=model.get("callable"),
        params=model.get("params") or {},
    )
    return ReplaySettings(
        archive=args.archive,
        service=args.service,
        spec=spec,
        replay_id=args.replay_id,
        tracking_uri=args.tracking_uri,
        since_ms=args.since_ms,
        until_ms=args.until_ms,
        parallelism=args.parallelism,
    )


class _FlinkTypes(serde.TypeFold):
    """An Avro type as Flink type information (nullability is not part of it)."""

    _PRIMITIVES = {
        "string": Types.STRING,
        "long": Types.LONG,
        "boolean": Types.BOOLEAN,
        "int": Types.INT,
        "double": Types.DOUBLE,
    }

    def primitive(self, name, path):
        if name not in self._PRIMITIVES:
            self.unsupported(name, path)
        return self._PRIMITIVES[name]()

    def array(self, items, path):
        return Types.OBJECT_ARRAY(items)

    def record(self, fields, path):
        return Types.ROW_NAMED([n for n, _ in fields], [t for _, t in fields])


def row_type(table: str):
    """The Flink row type of a row of ``table``: its columns, the partition columns as strings."""
    types = [
        serde.fold_type(f["type"], _FlinkTypes(), path=f"{table}.{f['name']}")
        for f in layout.avro_schema(table)["fields"]
    ]
    types += [Types.STRING() for _ in layout.PARTITIONS]
    return Types.ROW_NAMED(list(layout.columns(table)), types)


class ReplayScore(MapFunction):
    def __init__(self, spec: ModelSpec, tracking_uri: str | None, replay_id: str) -> None:
        self.spec = spec
        self.tracking_uri = tracking_uri
        self.replay_id = replay_id
        self.scorer = None

    def open(self, runtime_context: RuntimeContext) -> None:
        # A fixed version for the whole run: an alias is resolved once and not followed.
        self.scorer = models.load_scorer(
            self.spec, tracking_uri=self.tracking_uri, follow_alias_s=None
        )

    def map(self, value: Row) -> Row:
        record = {
            "request_id": value["request_id"],
            "service": value["service"],
            "received_ms": value["received_ms"],
            "deadline_ms": value["deadline_ms"],
            "features": value["features"],
            "error": None,
        }
        score = scoring.score_record(self.scorer, value["service"], record, now_ms)
        return Row(*tables.replay_row(score, replay_id=self.replay_id, sla_ms=value["sla_ms"]))

    def close(self) -> None:
        if self.scorer is not None:
            self.scorer.close()


def build(
    t_env: StreamTableEnvironment, requests: Table, sink: str, settings: ReplaySettings
) -> TableResult:
    """Score ``requests`` (the columns of :func:`tables.select_requests`) with the settings'
    model and insert the ``replay`` rows into the table named ``sink``; submits the job and
    returns its result."""
    scored = (
        t_env.to_data_stream(requests)
        .map(
            ReplayScore(settings.spec, settings.tracking_uri, settings.replay_id),
            output_type=row_type(layout.REPLAY),
        )
        .name(f"score with {settings.spec.name}")
    )
    return t_env.from_data_stream(scored).execute_insert(sink)


def main(argv: list[str] | None = None) -> None:
    s = parse_args(argv)
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_runtime_mode(RuntimeExecutionMode.BATCH)
    env.set_parallelism(s.parallelism)
    t_env = StreamTableEnvironment.create(env)
    t_env.get_config().set("pipeline.name", f"rendezvous-replay {s.service} {s.replay_id}")
    t_env.get_config().set("python.execution-mode", "thread")
    # A batch run that fails is reported, not retried forever (the cluster's default).
    t_env.get_config().set("restart-strategy.type", "fixed-delay")
    t_env.get_config().set("restart-strategy.fixed-delay.attempts", "2")
    for table in (layout.REQUESTS, layout.REPLAY):
        t_env.execute_sql(tables.filesystem_ddl(s.archive, table))
    requests = t_env.sql_query(tables.select_requests(s.service, s.since_ms, s.until_ms))
    build(t_env, requests, layout.REPLAY, s).wait()


if __name__ == "__main__":
    main()
