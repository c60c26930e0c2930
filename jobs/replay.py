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

from pyflink.common import Row
from pyflink.common.typeinfo import Types
from pyflink.datastream import MapFunction, RuntimeContext, StreamExecutionEnvironment
from pyflink.datastream.execution_mode import RuntimeExecutionMode
from pyflink.table import StreamTableEnvironment

from jobs.common import now_ms
from rendezvous import archiving, models, scoring
from rendezvous.config import ModelSpec


def _type(avro):
    if isinstance(avro, list):
        (inner,) = [t for t in avro if t != "null"]
        return _type(inner)
    if isinstance(avro, dict):
        if avro["type"] == "array":
            return Types.OBJECT_ARRAY(_type(avro["items"]))
        if avro["type"] == "record":
            return Types.ROW_NAMED(
                [f["name"] for f in avro["fields"]], [_type(f["type"]) for f in avro["fields"]]
            )
        return _type(avro["type"])
    return {"string": Types.STRING(), "long": Types.LONG(), "boolean": Types.BOOLEAN(),
            "int": Types.INT(), "double": Types.DOUBLE()}[avro]  # fmt: skip


def row_type(table: str):
    cols = archiving.columns(table)
    return Types.ROW_NAMED([n for n, _ in cols], [_type(t) for _, t in cols])


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
        return Row(*archiving.replay_row(score, replay_id=self.replay_id, sla_ms=value["sla_ms"]))

    def close(self) -> None:
        if self.scorer is not None:
            self.scorer.close()


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def select_requests(service: str, since_ms: int | None, until_ms: int | None) -> str:
    """The archived requests of ``service`` received in [since, until) that reached the models."""
    where = [f"service = {_quote(service)}", "error IS NULL", "features IS NOT NULL"]
    if since_ms is not None:
        where.append(f"received_ms >= {int(since_ms)}")
        # Partition pruning: no folder before the window's first day is read.
        where.append(f"dt >= {_quote(archiving.partition(service, since_ms)[1])}")
    if until_ms is not None:
        where.append(f"received_ms < {int(until_ms)}")
        where.append(f"dt <= {_quote(archiving.partition(service, until_ms)[1])}")
    return (
        "SELECT request_id, service, received_ms, deadline_ms, features, sla_ms FROM requests "
        f"WHERE {' AND '.join(where)}"
    )


def main(argv: list[str] | None = None) -> None:
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

    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_runtime_mode(RuntimeExecutionMode.BATCH)
    env.set_parallelism(args.parallelism)
    t_env = StreamTableEnvironment.create(env)
    t_env.get_config().set("pipeline.name", f"rendezvous-replay {args.service} {args.replay_id}")
    t_env.get_config().set("python.execution-mode", "thread")
    # A batch run that fails is reported, not retried forever (the cluster's default).
    t_env.get_config().set("restart-strategy.type", "fixed-delay")
    t_env.get_config().set("restart-strategy.fixed-delay.attempts", "2")
    ddl = archiving.flink_ddl(args.archive, tables=("requests", "replay"))
    for statement in ddl.split(";\n"):
        if statement.strip():
            t_env.execute_sql(statement)

    requests = t_env.to_data_stream(
        t_env.sql_query(select_requests(args.service, args.since_ms, args.until_ms))
    )
    scored = requests.map(
        ReplayScore(spec, args.tracking_uri, args.replay_id), output_type=row_type("replay")
    ).name(f"score with {spec.name}")
    t_env.from_data_stream(scored).execute_insert("replay").wait()


if __name__ == "__main__":
    main()
