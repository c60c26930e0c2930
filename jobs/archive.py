"""Archive job: model inputs (the decoy), scores and decisions from Kafka into Parquet tables.

Three Kafka sources; a Python step turns each record into an archive row
(:mod:`rendezvous.archiving`); Flink SQL keeps the first row per key (a request ID, or a request
ID and model for scores: upstream jobs deliver at least once, so a retried record is dropped
here) and its filesystem sink writes Parquet partitioned by service, date and hour. Files are
committed on checkpoints and the Kafka offsets are part of the checkpoint, so after a failure
every request lands in each table exactly once.
"""

from __future__ import annotations

import argparse

from pyflink.common import Row
from pyflink.common.typeinfo import Types
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.table import Schema, StreamTableEnvironment

from jobs.connectors import BYTES, kafka_source, no_watermarks
from rendezvous import archiving, serde, topics


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


KEYS = {"requests": ("request_id",), "scores": ("request_id", "model"),
        "decisions": ("request_id",)}  # fmt: skip

# kind of Kafka record -> (table, row builder)
_ROWS = {
    serde.Kind.MODEL_INPUT: ("requests", archiving.request_row),
    serde.Kind.SCORE: ("scores", archiving.score_row),
    serde.Kind.DECISION: ("decisions", archiving.decision_row),
}


def rows_of(table: str):
    """Archive rows of ``table`` from a Kafka value: every item of a batch, or one record."""
    kinds = {k for k, (t, _) in _ROWS.items() if t == table}
    kinds |= {serde.BATCH_OF[k] for k in kinds}

    def convert(value: bytes):
        if not value or value[0] not in kinds:
            return  # heartbeats, and the model-input copies that share the scores topic
        try:
            kind, _, records = serde.decode_items(value)
        except serde.SerdeError:
            return
        build = _ROWS[kind][1]
        for record in records:
            row = build(record)
            if table == "decisions":
                *head, scores, s, d, h = row
                row = (*head, [Row(*x) for x in scores], s, d, h)
            yield Row(*row)

    return convert


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--archive", required=True, help="archive root (folder or filesystem URI)")
    p.add_argument("--group-prefix", default="rdv")
    p.add_argument("--start", default="committed", choices=["committed", "earliest", "latest"])
    p.add_argument("--name", default="rendezvous-archive")
    p.add_argument("--dedup-ttl", default="1 h")
    p.add_argument(
        "--checkpoint-interval",
        default="10 s",
        help="how often files commit (each commit costs the machine a burst of CPU)",
    )
    args, _ = p.parse_known_args(argv)

    env = StreamExecutionEnvironment.get_execution_environment()
    t_env = StreamTableEnvironment.create(env)
    t_env.get_config().set("pipeline.name", args.name)
    t_env.get_config().set("python.execution-mode", "thread")
    t_env.get_config().set("execution.checkpointing.interval", args.checkpoint_interval)
    # How long a key is remembered for de-duplication (retries come within seconds).
    t_env.get_config().set("table.exec.state.ttl", args.dedup_ttl)
    for statement in archiving.flink_ddl(args.archive).split(";\n"):
        if statement.strip():
            t_env.execute_sql(statement)

    sources = {"requests": topics.MODEL_INPUT, "scores": topics.SCORES,
               "decisions": topics.DECISIONS}  # fmt: skip
    inserts = t_env.create_statement_set()
    for table, topic in sources.items():
        group = f"{args.group_prefix}-archive-{table}"
        stream = (
            env.from_source(
                kafka_source(
                    args.bootstrap, [topic], group, start=args.start, latency_critical=False
                ),
                no_watermarks(),
                topic,
                type_info=BYTES,
            )  # fmt: skip
            .uid(f"archive-{table}-source")
            .flat_map(rows_of(table), output_type=row_type(table))
            .name(f"{table} rows")
            .uid(f"archive-{table}-rows")
        )
        with_time = Schema.new_builder().column_by_expression("proc_time", "PROCTIME()").build()
        t_env.create_temporary_view(f"{table}_rows", t_env.from_data_stream(stream, with_time))
        cols = ", ".join(f"`{name}`" for name, _ in archiving.columns(table))
        key = ", ".join(f"`{k}`" for k in KEYS[table])
        inserts.add_insert_sql(
            f"INSERT INTO `{table}` SELECT {cols} FROM (SELECT *, ROW_NUMBER() OVER ("
            f"PARTITION BY {key} ORDER BY proc_time ASC) AS rn FROM `{table}_rows`) WHERE rn = 1"
        )
    inserts.execute()


if __name__ == "__main__":
    main()
