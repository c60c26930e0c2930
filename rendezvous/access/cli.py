"""``rendezvous keys create|list|revoke``: the proxy's API keys, on the ``rdv.api-keys`` topic."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timezone

from rendezvous.clock import now_ms


def key_log(settings):
    """The key log the commands read and write (tests put another in its place)."""
    from rendezvous.access.log import KafkaKeyLog

    return KafkaKeyLog(settings.kafka)


def weighted_services(args: argparse.Namespace, settings) -> set[str]:
    """The services whose models have quota weights (a key's quota is then said in tokens):
    the ``--config`` file's, else those defined on the cluster (tests put another in its
    place)."""
    from rendezvous.access.cost import costs

    if getattr(args, "config", None):
        from rendezvous import config

        specs = list(config.load(args.config).services.values())
    else:
        from rendezvous import control

        defined = control.defined_services(control.KafkaControl(settings.kafka))
        specs = [definition.spec() for definition, _ in defined]
    return {name for name, cost in costs(specs).items() if cost.weighted}


def _unit(record, weighted: set[str]) -> str:
    from rendezvous.access.cost import unit

    return unit(record["services"], weighted)


def _issuer() -> str:
    from rendezvous.cli import _issuer

    return _issuer()


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _check_services(args: argparse.Namespace, services: list[str]) -> None:
    if not args.config:
        return
    from rendezvous import config
    from rendezvous.access.keys import ALL_SERVICES

    cfg = config.load(args.config)
    for name in services:
        if name != ALL_SERVICES:
            cfg.service(name)  # an unknown service is an error naming the configured ones


_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def period_ms(text: str) -> int:
    """``30s``, ``15m``, ``1h``, ``7d`` in milliseconds (argparse's type for --per)."""
    match = re.fullmatch(r"(\d{1,9})([smhd])", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a period; write a number and a unit: 30s, 15m, 1h or 7d"
        )
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


def cmd_create(args: argparse.Namespace, settings) -> int:
    from rendezvous.access.keys import ALL_SERVICES, new_key, quota, quota_text, scope_text

    if bool(args.service) == args.all_services:
        args.usage_error("name the services with --service (one or more), or --all-services")
    if (args.quota is None) != (args.per is None):
        args.usage_error("--quota N and --per PERIOD go together (e.g. --quota 10000 --per 1d)")
    services = [ALL_SERVICES] if args.all_services else args.service
    _check_services(args, services)
    budget = None
    if args.quota is not None:
        try:
            budget = quota(args.quota, args.per)
        except ValueError as exc:
            args.usage_error(str(exc))
    key, record = new_key(
        args.name, services, created_by=_issuer(), created_ms=now_ms(), quota=budget
    )
    # What the quota counts, found before the key is published (reading may fail).
    unit = _unit(record, weighted_services(args, settings)) if budget is not None else "requests"
    key_log(settings).publish(record)
    # The key alone on stdout, so that KEY=$(rendezvous keys create ...) works.
    print(key)
    print(
        f"created API key {record['key_id']} ({args.name}) for {scope_text(record)}, "
        f"{quota_text(record, unit)}; it is "
        f"shown only now (only its SHA-256 is kept): send it as 'Authorization: Bearer <key>'",
        file=sys.stderr,
    )
    return 0


def cmd_list(args: argparse.Namespace, settings) -> int:
    from rendezvous.access.keys import quota_text, scope_text

    keys = sorted(key_log(settings).read().values(), key=lambda r: r["created_ms"])
    if not args.all:
        keys = [r for r in keys if r["revoked_ms"] is None]
    if not keys:
        print("no API keys" if args.all else "no valid API keys (--all lists revoked ones too)")
        return 0
    weighted = weighted_services(args, settings) if any(r["quota"] for r in keys) else set()
    print(
        f"{'key id':<13} {'name':<20} {'created (UTC)':<19}  {'state':<27} {'quota':<28} services"
    )
    for r in keys:
        state = "valid" if r["revoked_ms"] is None else f"revoked {_when(r['revoked_ms'])}"
        print(
            f"{r['key_id']:<13} {r['name'][:20]:<20} {_when(r['created_ms']):<19}  "
            f"{state:<27} {quota_text(r, _unit(r, weighted)):<28} {scope_text(r)}"
        )
    return 0


def cmd_revoke(args: argparse.Namespace, settings) -> int:
    from rendezvous.access.keys import KEY_ID_RE, key_id_of, revoked

    # A whole key is taken too: its id is in it.
    key_id = key_id_of(args.key_id) or args.key_id
    if KEY_ID_RE.fullmatch(key_id) is None:
        print(
            f"error: {args.key_id[:40]!r} is not a key id (12 hex digits, as `rendezvous keys "
            f"list` shows them)",
            file=sys.stderr,
        )
        return 1
    log = key_log(settings)
    record = log.read().get(key_id)
    if record is None:
        print(
            f"error: no API key {key_id}; `rendezvous keys list --all` shows them", file=sys.stderr
        )
        return 1
    if record["revoked_ms"] is not None:
        print(f"API key {key_id} was already revoked at {_when(record['revoked_ms'])} UTC")
        return 0
    log.publish(revoked(record, revoked_by=_issuer(), revoked_ms=now_ms()))
    print(f"revoked API key {key_id} ({record['name']}); every proxy refuses it within a second")
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "keys",
        help="create, list and revoke the proxy's API keys",
        description="API keys for the proxy (enforced when its setting RDV_PROXY_REQUIRE_API_KEYS "
        "is 1). Each key may call the services it is scoped to. Keys are kept, as SHA-256 "
        "digests, on the compacted Kafka topic rdv.api-keys, which every proxy replica follows.",
    )
    sub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    c = sub.add_parser(
        "create",
        help="make a key and print it (once)",
        description="Make a key for the services named and print it on stdout; it cannot be "
        "shown again.",
    )
    c.add_argument("--name", required=True, help="who or what the key is for")
    c.add_argument(
        "--service", action="append", metavar="SERVICE", help="a service it may call (repeat)"
    )
    c.add_argument("--all-services", action="store_true", help="it may call every service")
    c.add_argument(
        "--quota",
        type=int,
        metavar="N",
        help="at most N requests per period (with --per); in tokens for services whose models "
        "have a quota_weight (a request costs the weights of the models that score it)",
    )
    c.add_argument(
        "--per",
        type=period_ms,
        metavar="PERIOD",
        help="the quota's period: 30s, 15m, 1h, 1d (windows aligned to the epoch, UTC)",
    )
    c.add_argument("--config", help="check the services against this configuration file")
    c.set_defaults(func=cmd_create, usage_error=c.error)
    ls = sub.add_parser("list", help="list the keys (never the keys themselves)")
    ls.add_argument("--all", action="store_true", help="revoked keys too")
    ls.add_argument(
        "--config",
        help="say quotas in tokens for this file's services with quota weights (default: the "
        "services defined on the cluster)",
    )
    ls.set_defaults(func=cmd_list)
    r = sub.add_parser("revoke", help="revoke a key: every proxy refuses it from then on")
    r.add_argument("key_id", help="the key's id (as `rendezvous keys list` shows it)")
    r.set_defaults(func=cmd_revoke)
    return p
