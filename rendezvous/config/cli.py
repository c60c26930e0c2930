"""``rendezvous config check|schema|reference``: the configuration file, offline."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_check(args: argparse.Namespace, settings) -> int:
    from rendezvous import config

    path = Path(args.file)
    cfg, problems = config.check(config.read(path), source=str(path))
    if cfg is not None and args.resolve:
        from rendezvous.config.resolve import resolve

        problems = resolve(cfg, base_dir=path.parent, tracking_uri=settings.mlflow_url)
    for p in problems:
        print(f"{path}: {p}")
    if problems:
        print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''}", file=sys.stderr)
        return 1
    services = ", ".join(cfg.services) if cfg else ""
    checked = "valid, and its models, callables and tables resolve" if args.resolve else "valid"
    print(f"{path}: {checked} (services: {services})")
    return 0


def cmd_schema(args: argparse.Namespace, settings) -> int:
    from rendezvous.config.format import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_reference(args: argparse.Namespace, settings) -> int:
    from rendezvous.config.reference import markdown

    sys.stdout.write(markdown())
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "config",
        help="check a configuration file, print its JSON Schema or its reference",
        description="Work with service configuration files without a running stack.",
    )
    sub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    c = sub.add_parser(
        "check",
        help="validate a file and print every problem (exit 1 if any)",
        description="Validate a configuration file offline and print every problem, one per "
        "line, each naming its field path and the fix. With --resolve, also check what needs "
        "the services: MLflow model URIs and aliases exist (at RDV_MLFLOW_URL or the stack's "
        "server), callables import with their params, lookup tables are readable.",
    )
    c.add_argument("file", help="the configuration (YAML, or JSON with a .json name)")
    c.add_argument(
        "--resolve", action="store_true", help="also check models, callables and lookup tables"
    )
    c.set_defaults(func=cmd_check)
    s = sub.add_parser("schema", help="print the format's JSON Schema (draft 2020-12)")
    s.set_defaults(func=cmd_schema)
    r = sub.add_parser("reference", help="print the format's reference (Markdown)")
    r.set_defaults(func=cmd_reference)
    return p
