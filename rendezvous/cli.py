"""The ``rendezvous`` command line."""

from __future__ import annotations

import argparse
import sys

from rendezvous.errors import RendezvousError
from rendezvous.settings import StackSettings


def _stack(settings: StackSettings):
    from rendezvous.stack import Stack

    return Stack(settings)


def cmd_up(args: argparse.Namespace, settings: StackSettings) -> int:
    stack = _stack(settings)
    print(f"starting the local stack in {settings.home}")
    timings = stack.up()
    print()
    print(f"  Kafka bootstrap  {settings.kafka_bootstrap}")
    print(f"  Flink web UI     {settings.flink_url}")
    print(f"  MLflow UI        {settings.mlflow_url}")
    print(f"ready in {timings['total']:.1f}s")
    return 0


def cmd_down(args: argparse.Namespace, settings: StackSettings) -> int:
    stopped = _stack(settings).down(purge=args.purge)
    print("stopped " + (", ".join(stopped) if stopped else "nothing (nothing was running)"))
    if args.purge:
        print(f"removed data and logs under {settings.home}")
    return 0


def cmd_status(args: argparse.Namespace, settings: StackSettings) -> int:
    stack = _stack(settings)
    rows = stack.status()
    print(f"{'component':<20} {'state':<6} {'address':<28} pid")
    for row in rows:
        pids = ",".join(str(p) if p else "-" for p in row.pids)
        print(f"{row.name:<20} {'up' if row.up else 'down':<6} {row.address:<28} {pids}")
    flink_up = next(r.up for r in rows if r.name == "flink")
    if flink_up:
        jobs = stack.flink.jobs()
        print(f"\nFlink jobs ({len(jobs)}):")
        for job in sorted(jobs, key=lambda j: j.get("name", "")):
            print(f"  {job['jid']}  {job['state']:<10} {job['name']}")
    kafka_up = next(r.up for r in rows if r.name == "kafka")
    if kafka_up:
        topics = stack.kafka.list_topics()
        print(f"\nTopics ({len(topics)}):")
        for name, parts in topics.items():
            print(f"  {name:<28} {parts} partition{'s' if parts != 1 else ''}")
    return 0 if all(r.up for r in rows) else 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rendezvous",
        description="Rendezvous ML serving on Flink, Kafka and MLflow.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("up", help="start Kafka, Flink and MLflow on loopback")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="stop what `up` started")
    p.add_argument("--purge", action="store_true", help="also delete data and logs")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", help="show components, Flink jobs and topics")
    p.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = StackSettings.from_env()
        return args.func(args, settings)
    except RendezvousError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
