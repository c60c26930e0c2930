"""Archive job: model inputs (the decoy), scores and decisions from Kafka into Parquet tables.

All Flink SQL, no Python at run time: each table is read from its Kafka topic with Flink's Avro
format (:func:`rendezvous.archiving.kafka_ddl`), every item of every batch becomes a row
(:func:`rendezvous.archiving.insert_sql`), and the filesystem sink writes Parquet partitioned by
service, date and hour. The upstream jobs write these topics in Kafka transactions and the
archive reads committed records only; files are committed on checkpoints and the Kafka offsets
are part of the checkpoint. So after a failure anywhere, every request lands in each table
exactly once, with no de-duplication state to outgrow.
"""

from __future__ import annotations

import argparse

from pyflink.table import EnvironmentSettings, TableEnvironment

from rendezvous import archiving


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
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
    for statement in archiving.flink_ddl(args.archive).split(";\n"):
        if statement.strip():
            t_env.execute_sql(statement)
    inserts = t_env.create_statement_set()
    for table in archiving.TABLES:
        group = f"{args.group_prefix}-archive-{table}"
        t_env.execute_sql(
            archiving.kafka_ddl(table, bootstrap=args.bootstrap, group=group, start=args.start)
        )
        inserts.add_insert_sql(archiving.insert_sql(table))
    inserts.execute()


if __name__ == "__main__":
    main()
