"""Archive job: model inputs (the decoy), scores, decisions and true labels (feedback) from Kafka
into Parquet tables.

All Flink SQL, no Python at run time: each table is read from its Kafka topic with Flink's Avro
format (:func:`rendezvous.archive.tables.kafka_ddl`), every item of every batch becomes a row
(:func:`rendezvous.archive.tables.insert_sql`), and the filesystem sink writes Parquet
partitioned by service, date and hour. The upstream jobs write these topics in Kafka
transactions and the archive reads committed records only (the proxy writes its labels outside
transactions: they are committed as they are written); files are committed on checkpoints
and the Kafka offsets are part of the checkpoint. So after a failure anywhere, every request
lands in each table exactly once, with no de-duplication state to outgrow. A label sent twice
is two records, both archived: the view ``labels`` keeps the first (rendezvous.archive.sql).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping

from pyflink.table import EnvironmentSettings, TableEnvironment, TableResult

from rendezvous.archive import layout, tables
from rendezvous.kafka import KafkaConnection


def build(t_env: TableEnvironment, sources: Mapping[str, str], sinks: Iterable[str]) -> TableResult:
    """Fill each archive table from its source, in one job; submits it and returns its result.

    ``sinks``: the CREATE TABLE statements of the archive tables (:func:`tables.filesystem_ddl`).
    ``sources``: per archive table, the CREATE TABLE statement of ``kafka_<table>``, the table
    its batches are read from (:func:`tables.kafka_ddl`: a ``kind`` column, then the batch
    record's fields).
    """
    for statement in sinks:
        t_env.execute_sql(statement)
    inserts = t_env.create_statement_set()
    for table, ddl in sources.items():
        t_env.execute_sql(ddl)
        inserts.add_insert_sql(tables.insert_sql(table))
    return inserts.execute()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--kafka-properties", help="Kafka client properties file")
    p.add_argument("--archive", required=True, help="archive root (folder or filesystem URI)")
    p.add_argument("--group-prefix", default="rdv")
    p.add_argument("--start", default="committed", choices=["committed", "earliest", "latest"])
    p.add_argument("--name", default="rendezvous-archive")
    p.add_argument(
        "--checkpoint-interval",
        default="10 s",
        help="how often files commit (each commit costs the machine a burst of CPU)",
    )
    args, _ = p.parse_known_args(argv)

    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = t_env.get_config()
    conf.set("pipeline.name", args.name)
    conf.set("execution.checkpointing.interval", args.checkpoint_interval)
    conf.set("table.local-time-zone", "UTC")  # dt and hr are UTC
    kafka = KafkaConnection.from_file(args.bootstrap, args.kafka_properties)
    sources = {
        table: tables.kafka_ddl(
            table,
            kafka=kafka,
            group=f"{args.group_prefix}-archive-{table}",
            start=args.start,
        )
        for table in layout.TABLES
    }
    build(t_env, sources, [tables.filesystem_ddl(args.archive, t) for t in layout.TABLES])


if __name__ == "__main__":
    main()
