"""The ``rendezvous`` command line."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from rendezvous.clock import now_ms
from rendezvous.errors import JobFailed, NotEnoughSlots, RendezvousError
from rendezvous.settings import StackSettings

if TYPE_CHECKING:
    from rendezvous.policy import History, Policy


def _stack(settings: StackSettings):
    from rendezvous.stack import Stack

    return Stack(settings)


def cmd_up(args: argparse.Namespace, settings: StackSettings) -> int:
    if not settings.flink_is_local:
        from rendezvous.errors import StackError

        raise StackError(
            f"`rendezvous up` starts the local stack; Flink here is {settings.flink_url} "
            f"(profile {settings.profile!r} or RDV_FLINK_REST_URL): unset it to run locally"
        )
    sizes = {"flink_taskmanagers": args.taskmanagers, "flink_taskmanager_slots": args.slots}
    sizes = {name: value for name, value in sizes.items() if value is not None}
    if sizes:
        # Beside a running JobManager only the missing TaskManagers start, with these slots:
        # the cluster grows and its jobs keep running.
        settings = StackSettings(**{**settings.model_dump(), **sizes})
    stack = _stack(settings)
    print(f"starting the local stack in {settings.home}")
    timings = stack.up()
    print()
    print(f"  Kafka bootstrap  {settings.kafka_bootstrap}")
    print(f"  Flink web UI     {settings.flink_url}")
    print(f"  MLflow UI        {settings.mlflow_url}")
    print(f"ready in {timings['total']:.1f}s")
    if args.supervise:
        from rendezvous.stack.supervise import supervise

        supervise(stack, interval_s=settings.supervise_interval_s)
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
        pids = ",".join(str(p) if p else "-" for p in row.pids) or "external"
        print(f"{row.name:<20} {'up' if row.up else 'down':<6} {row.address:<28} {pids}")
    flink_up = next(r.up for r in rows if r.name == "flink")
    from rendezvous.stack.flink import metrics_endpoints

    endpoints = metrics_endpoints(settings)
    if endpoints:
        print("\nPrometheus endpoints (Flink's reporter; the proxy serves /metrics too):")
        for name, url in endpoints.items():
            print(f"  {name:<20} {url}")
    if flink_up:
        from rendezvous import deploy

        jobs = stack.flink.jobs()
        print(f"\nFlink jobs ({len(jobs)}):")
        for job in sorted(jobs, key=lambda j: j.get("name", "")):
            print(f"  {job['jid']}  {job['state']:<10} {job['name']}")
            if _failing(job):
                try:
                    failure = deploy.job_failure(stack, job["jid"])
                except (OSError, ValueError):  # the job left the cluster meanwhile
                    failure = None
                if failure is not None:
                    hint = deploy.failure_hint(stack, failure)
                    print(f"      cause: {failure.line}" + (f"; {hint}" if hint else ""))
    kafka_up = next(r.up for r in rows if r.name == "kafka")
    if kafka_up:
        _print_services(stack, settings, stack.flink.jobs() if flink_up else [])
        topics = stack.kafka.list_topics()
        print(f"\nTopics ({len(topics)}):")
        for name, parts in topics.items():
            print(f"  {name:<28} {parts} partition{'s' if parts != 1 else ''}")
    return 0 if all(r.up for r in rows) else 3


def _print_services(stack, settings: StackSettings, jobs: list[dict]) -> None:
    """Each service defined on the cluster: where it comes from, its jobs, whether it answers."""
    from rendezvous import control, deploy

    defined = control.defined_services(control.KafkaControl(settings.kafka))
    print(f"\nServices ({len(defined)}):")
    if not defined:
        print("  none defined: `rendezvous submit --config FILE` defines a file's services")
        return
    working = deploy.working_jobs(jobs)
    for definition, policy in defined:
        status = deploy.service_status(definition.spec(), policy.preference, working)
        print(f"  {definition.service:<24} {status.state:<9} {status.detail}")
        print(f"  {'':<24} from {definition.source} (definition v{definition.version})")
        marked = [name if name in working else f"{name} (not running)" for name in status.jobs]
        print(f"  {'':<24} jobs: {', '.join(marked)}")


def _failing(job: dict) -> bool:
    """Failed, failing, restarting, or live with tasks not running (a restart loop between
    two restarts): a job whose latest failure is worth a line."""
    if job["state"] in ("FAILED", "FAILING", "RESTARTING"):
        return True
    tasks = job.get("tasks", {})
    idle = tasks.get("running", 0) < tasks.get("total", 0)
    return idle and job["state"] in ("RUNNING", "CREATED", "INITIALIZING")


DEFAULT_CONFIG = "rendezvous.yaml"


def _config_path(args: argparse.Namespace, settings: StackSettings):
    from pathlib import Path

    from rendezvous.errors import ConfigError

    path = Path(args.config) if args.config else settings.home / "demo" / DEFAULT_CONFIG
    if not path.exists():
        raise ConfigError(
            f"no configuration at {path}; pass --config FILE (or run `rendezvous demo` to create one)"
        )
    return path


def _services(args: argparse.Namespace, settings: StackSettings):
    """The services a command works on: the file's with --config, else every service defined
    on the cluster, else the demo's file."""
    from rendezvous import config, control

    if args.config:
        return config.load(_config_path(args, settings))
    defined = control.defined_services(control.KafkaControl(settings.kafka))
    if defined:
        return config.Config(
            services={d.service: d.spec() for d, _ in defined},
            source=f"the services defined on {settings.kafka.describe()}",
        )
    return config.load(_config_path(args, settings))


def cmd_submit(args: argparse.Namespace, settings: StackSettings) -> int:
    from rendezvous import deploy

    stack = _stack(settings)
    stack.kafka.check_reachable()
    stack.flink.check_reachable()
    try:
        deploy.submit(
            stack,
            _config_path(args, settings),
            only=args.only,
            prune=args.prune,
            issued_by=_issuer(),
        )
    except (NotEnoughSlots, JobFailed) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return 0


def cmd_remove(args: argparse.Namespace, settings: StackSettings) -> int:
    from rendezvous import deploy

    stack = _stack(settings)
    stack.kafka.check_reachable()
    stack.flink.check_reachable()
    deploy.remove(stack, args.service, issued_by=_issuer())
    return 0


def cmd_topics(args: argparse.Namespace, settings: StackSettings) -> int:
    """Create the project's topics that are missing on the Kafka cluster (with their
    partitions, retention and compaction), as `rendezvous up` does on the local broker."""
    stack = _stack(settings)
    stack.kafka.check_reachable()
    created = stack.kafka.create_topics()
    print(f"created {', '.join(created)}" if created else "every topic is there already")
    return 0


def cmd_ddl(args: argparse.Namespace, settings: StackSettings) -> int:
    from rendezvous.archive.tables import flink_ddl

    print(flink_ddl(args.archive or str(settings.archive_dir)), end="")
    return 0


def cmd_cancel(args: argparse.Namespace, settings: StackSettings) -> int:
    from rendezvous import deploy

    if not deploy.cancel(_stack(settings), only=args.only):
        print("no rendezvous job is running" + (f" matching {args.only}" if args.only else ""))
    return 0


def cmd_guard(args: argparse.Namespace, settings: StackSettings) -> int:
    from rendezvous import guard_loop

    cfg = _services(args, settings)
    rules = guard_loop.guarded(cfg, args.service)
    tracking = None if args.no_mlflow else (args.tracking_uri or settings.mlflow_url)
    try:
        guard_loop.run(settings, cfg, rules, tracking_uri=tracking, check_every_s=args.every)
    except KeyboardInterrupt:
        print("guard stopped")
    return 0


def _issuer() -> str:
    """Who issues a policy change from this process: user@host."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name (a container user without a passwd entry)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _rules(policy: Policy) -> str:
    split = f", split {policy.split.describe()}" if policy.split is not None else ""
    return f"preference {' > '.join(policy.preference)}, SLA {policy.sla_ms} ms{split}"


def cmd_split(args: argparse.Namespace, settings: StackSettings) -> int:
    from rendezvous import control, traffic
    from rendezvous.errors import PolicyError

    if args.off == (args.arms is not None):
        args.usage_error("give the arms (MODEL=WEIGHT,...), or --off to remove the split")
    if args.off and args.key is not None:
        args.usage_error("--key goes with arms, not with --off")
    try:
        arms = None if args.off else traffic.parse_arms(args.arms)
    except traffic.TrafficError as exc:
        args.usage_error(exc.message)
    cfg = _services(args, settings)
    log = control.KafkaControl(settings.kafka)
    try:
        policy = control.split(
            log,
            cfg,
            args.service,
            arms,
            key=args.key,
            issued_by=_issuer(),
            issued_ms=now_ms(),
        )
    except PolicyError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(
        f"{args.service}: {_rules(policy)} (policy version {policy.version}); applies to "
        "requests accepted from now on"
    )
    return 0


def cmd_promote(args: argparse.Namespace, settings: StackSettings) -> int:

    from rendezvous import control
    from rendezvous.errors import PolicyError

    going_back = args.undo or args.to_version is not None
    if going_back == (args.model is not None):
        args.usage_error("name a MODEL to promote, or use --undo or --to-version N, not both")
    if going_back and args.sla_ms is not None:
        args.usage_error(
            "--sla-ms goes with promoting a MODEL; --undo and --to-version restore the earlier SLA"
        )
    if going_back and args.condition is not None:
        args.usage_error("--if goes with promoting a MODEL, not with --undo or --to-version")
    if args.window is not None and args.condition is None:
        args.usage_error('--window goes with --if (e.g. --if "agreement>=0.95" --window 24h)')
    gate = None
    if args.condition is not None:
        from rendezvous.archive import evidence

        # Bad input fails before anything is read.
        gate = evidence.parse_condition(args.condition), args.window or "24h"
        evidence.parse_window(gate[1])
    cfg = _services(args, settings)
    log = control.KafkaControl(settings.kafka)
    figures = None
    if gate is not None:
        spec = cfg.service(args.service)
        from rendezvous import policy as policy_mod

        policy_mod.check_promotable(spec, args.model)
        current = control.current_policy(log, cfg, args.service)
        figures = _evidence_holds(args, settings, current, *gate)
        if figures is None:
            return 1
    issued = {"issued_by": _issuer(), "issued_ms": now_ms()}
    follower = None
    if not args.no_mlflow:
        from rendezvous.models import promotion

        follower = promotion.Follower(
            args.tracking_uri or settings.mlflow_url, cfg.service(args.service)
        )
    try:
        if args.undo:
            earlier, policy = control.undo(log, cfg, args.service, **issued, registry=follower)
            done = f"restored policy version {earlier} as version {policy.version}"
        elif args.to_version is not None:
            policy = control.restore(
                log, cfg, args.service, args.to_version, **issued, registry=follower
            )
            if policy.version == args.to_version:
                print(
                    f"{args.service}: policy version {policy.version} is the current one "
                    f"({_rules(policy)}); nothing to restore"
                )
                return 0
            done = f"restored policy version {args.to_version} as version {policy.version}"
        else:
            policy = control.promote(
                log,
                cfg,
                args.service,
                args.model,
                sla_ms=args.sla_ms,
                **issued,
                registry=follower,
            )
            done = f"policy version {policy.version}"
    except PolicyError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(f"{args.service}: {_rules(policy)} ({done}); applies to requests accepted from now on")
    if follower is not None:
        evidence = None if gate is None else {"condition": args.condition, "window": gate[1]}
        _record_promotion(follower, issued, evidence, figures)
    return 0


def _record_promotion(follower, issued: dict, evidence, figures) -> None:
    """Say where ``@champion`` went (the control record carries it) and log the change as an
    MLflow run (see rendezvous.models.promotion); a registry that cannot be reached is a
    warning: the policy change stands."""
    from rendezvous.models import promotion

    def warn(exc: Exception) -> None:
        if isinstance(exc, RendezvousError):
            print(f"warning: the promotion is not recorded in MLflow: {exc}", file=sys.stderr)
        else:  # MLflow's own errors: the policy change stands all the same
            print(
                f"warning: MLflow at {follower.tracking_uri} refused the promotion record: {exc}",
                file=sys.stderr,
            )

    if follower.error is not None:
        warn(follower.error)
        return
    if follower.result is not None:
        print(follower.result.line())
    try:
        run_id = follower.finish(
            issued_by=issued["issued_by"],
            at_ms=issued["issued_ms"],
            evidence=evidence,
            figures=figures,
        )
    except Exception as exc:
        warn(exc)
        return
    if run_id is not None:
        print(f"MLflow: promotion run {run_id} in experiment {promotion.EXPERIMENT}")


def _evidence_holds(
    args: argparse.Namespace, settings: StackSettings, current: Policy, clauses, span: str
) -> dict[str, float] | None:
    """Print the model's figures over the archive's last ``span`` against ``clauses``; the
    figures when every clause passes, None when one fails (the refusal goes to stderr)."""
    from datetime import datetime, timezone
    from pathlib import Path

    from rendezvous.archive import evidence
    from rendezvous.archive.metrics import OutputFields
    from rendezvous.archive.report import Window

    now = datetime.now(timezone.utc)
    window = Window(now - evidence.parse_window(span), now)
    found = evidence.gather(
        Path(args.archive) if args.archive else settings.archive_dir,
        service=args.service,
        model=args.model,
        window=window,
        reference=current.preference[0] if current.preference else None,
        fields=OutputFields(
            label=args.label_field, value=args.output_field, threshold=args.threshold
        ),
    )
    verdicts = evidence.judge(clauses, found.figures)
    for line in evidence.lines(found, verdicts, span=span):
        print(line)
    if found.figures["n"] > 0 and all(v.passed for v in verdicts):
        print(f"every clause passes: promoting {args.model}")
        return dict(found.figures)
    print(f"error: {evidence.refusal(found, verdicts)}", file=sys.stderr)
    return None


def _when(issued_ms: int | None) -> str:
    from datetime import datetime, timezone

    if issued_ms is None:
        return "-"
    return datetime.fromtimestamp(issued_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def history_lines(history: History) -> list[str]:
    """A service's policy history, oldest first, one line a version; the current one marked."""
    by = max(len(c.issued_by) for c in history.changes)
    lines = []
    for change in history.changes:
        p = change.policy
        mark = "  (current)" if change is history.current else ""
        moved = change.registry
        alias = (
            f", @{moved['alias']} -> {moved['registered_model']} v{moved['version']}"
            if moved is not None and moved.get("moved")
            else ""
        )
        lines.append(
            f"v{p.version:<4} {_when(change.issued_ms):<19}  {change.issued_by:<{by}}  "
            f"{_rules(p)}, grace {p.grace_ms} ms{alias}{mark}"
        )
    return lines


def cmd_models(args: argparse.Namespace, settings: StackSettings) -> int:
    from rendezvous import control

    cfg = _services(args, settings)
    histories = control.histories(control.KafkaControl(settings.kafka), cfg)
    for service in cfg.services.values():
        history = histories[service.name]
        policy = history.current.policy
        print(
            f"{service.name}: SLA {policy.sla_ms} ms, preference {' > '.join(policy.preference)} (v{policy.version})"
        )
        for m in service.models:
            rank = policy.preference.index(m.name) + 1 if m.name in policy.preference else "-"
            extra = ""
            if policy.split is not None and m.name in policy.split.models:
                extra += f"  arm {policy.split.shares[m.name]:.0%}"
            if m.sampling is not None:
                extra += f"  sample {m.sample:g}"
            print(
                f"  {m.name:<16} {m.role:<11} rank {rank!s:<3} {m.uri or m.callable or ''}{extra}"
            )
        print("  policy history (UTC):")
        for line in history_lines(history):
            print(f"    {line}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rendezvous",
        description="Rendezvous ML serving on Flink, Kafka and MLflow.",
    )
    parser.add_argument(
        "--profile",
        metavar="NAME",
        help="the connection profile to use (Kafka, Flink, MLflow; see rendezvous/profiles.py); "
        "default: $RDV_PROFILE, else the local stack",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("up", help="start Kafka, Flink and MLflow on loopback")
    p.add_argument(
        "--taskmanagers",
        type=int,
        metavar="N",
        help="Flink TaskManagers (default: RDV_FLINK_TASKMANAGERS); with the stack up, "
        "starts the missing ones beside the running jobs",
    )
    p.add_argument(
        "--slots",
        type=int,
        metavar="S",
        help="task slots of each TaskManager started now (default: RDV_FLINK_TASKMANAGER_SLOTS)",
    )
    p.add_argument(
        "--supervise",
        action="store_true",
        help="stay in the foreground and start again whatever stops (every "
        "RDV_SUPERVISE_INTERVAL_S); after a lost JobManager, resubmit the defined files",
    )
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="stop what `up` started")
    p.add_argument("--purge", action="store_true", help="also delete data and logs")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", help="show components, Flink jobs and topics")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "submit",
        help="define a configuration's services on the cluster and submit their jobs",
        description="Publish the file's services on the control topic (beside those of "
        "other files, which stay as they are), then submit what is missing: the shared "
        "enrich, rendezvous and archive jobs, and one scoring job per model.",
    )
    p.add_argument("--config", help="service configuration (YAML or JSON)")
    p.add_argument("--only", nargs="*", help="submit only jobs whose name contains one of these")
    p.add_argument(
        "--prune",
        action="store_true",
        help="remove the file's services and cancel the scoring jobs of its models that it "
        "no longer lists",
    )
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser(
        "remove",
        help="take a service off the cluster (its definition and scoring jobs), nothing else",
    )
    p.add_argument("service")
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser(
        "topics", help="create the topics the jobs and the proxy use, where they are missing"
    )
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser("ddl", help="print the archive tables as Flink SQL (filesystem, Parquet)")
    p.add_argument("--archive", help="archive root (default: the stack's archive folder)")
    p.set_defaults(func=cmd_ddl)

    p = sub.add_parser("cancel", help="cancel the running jobs (all, or those named with --only)")
    p.add_argument("--only", nargs="*", help="cancel only jobs whose name contains one of these")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser(
        "promote",
        help="make a model the first choice of a service, at runtime; or undo that",
        description="Publish a new version of a service's policy on the control topic; the "
        "jobs apply it to requests accepted from then on, with no restart. With a MODEL, it "
        "goes first in the preference order. --undo brings back the version before the "
        "current one, --to-version N version N: the same preference, SLA and grace, under a "
        "new version number (see the versions with `rendezvous models`).",
    )
    from rendezvous.archive import evidence

    p.add_argument("service")
    p.add_argument("model", nargs="?", help="the model to put first (not with --undo/--to-version)")
    back = p.add_mutually_exclusive_group()
    back.add_argument(
        "--undo", action="store_true", help="republish the policy before the current one"
    )
    back.add_argument(
        "--to-version", type=int, metavar="N", help="republish the policy of version N"
    )
    p.add_argument("--sla-ms", type=int, help="also change the SLA")
    p.add_argument(
        "--config",
        help="service configuration (YAML or JSON); default: the services defined on the "
        "cluster, else the demo's file",
    )
    p.add_argument(
        "--if",
        dest="condition",
        metavar="CONDITION",
        help='promote only if the archive shows it: clauses FIGURE OP NUMBER joined by "and", '
        'e.g. "agreement>=0.95 and late_rate<=0.01 and n>=500"; figures: '
        f"{evidence.valid_names()} (agreement and delta_mean against the current first "
        "choice; n is the requests the model scored; labelled, accuracy, auc and log_loss "
        "need true labels)",
    )
    p.add_argument(
        "--window",
        metavar="SPAN",
        help="with --if: the archive's last SPAN is the evidence (30m, 24h, 7d; default 24h)",
    )
    p.add_argument(
        "--archive", metavar="PATH", help="with --if: archive root (default: the stack's)"
    )
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking server whose registry follows the promotion (default: the stack's)",
    )
    p.add_argument(
        "--no-mlflow",
        action="store_true",
        help="leave the registry's @champion alias alone and log no promotion run",
    )
    from rendezvous.archive.report import add_output_args

    add_output_args(p)
    p.set_defaults(func=cmd_promote, usage_error=p.error)

    p = sub.add_parser(
        "guard",
        help="watch the live first choice of guarded services and take it off when it fails",
        description="Read the answers as callers get them and, for each service with a "
        "`guard` section, take the live first choice off when its error rate, late rate or "
        "output PSI over the section's window stays above the threshold for its time: the "
        "policy version before it comes back (else the next model in the preference), on the "
        "control topic, with the reason, and the event is logged as an MLflow run. Runs until "
        "interrupted.",
    )
    p.add_argument(
        "--config",
        help="service configuration (YAML or JSON); default: the services defined on the "
        "cluster, else the demo's file",
    )
    p.add_argument(
        "--service", action="append", help="guard only this service (repeatable; default: all)"
    )
    p.add_argument(
        "--every", type=float, default=1.0, metavar="S", help="seconds between checks (1)"
    )
    p.add_argument("--tracking-uri", help="MLflow tracking server (default: the stack's)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log demotions to MLflow")
    p.set_defaults(func=cmd_guard)

    p = sub.add_parser(
        "split",
        help="set the weights of a service's sticky A/B split at runtime, or remove it",
        description="Publish a new version of a service's policy whose split has these arms "
        "(model=weight, any positive scale): requests accepted from then on get the arm a "
        "stable hash of their key picks, and the arm's model answers first. Keys keep their "
        "arm unless a changed weight moves the boundary past them. `rendezvous promote --undo` "
        "takes a change back like any other.",
    )
    p.add_argument("service")
    p.add_argument("arms", nargs="?", help="the arms, e.g. gbm=90,lr=10")
    p.add_argument(
        "--key",
        help="the request field that picks the arm (default: the split's current key; needed "
        "when the service has no split yet)",
    )
    p.add_argument("--off", action="store_true", help="remove the split")
    p.add_argument(
        "--config",
        help="service configuration (YAML or JSON); default: the services defined on the "
        "cluster, else the demo's file",
    )
    p.set_defaults(func=cmd_split, usage_error=p.error)

    p = sub.add_parser(
        "models", help="list each service's models, roles, current preference and policy history"
    )
    p.add_argument(
        "--config",
        help="service configuration (YAML or JSON); default: the services defined on the "
        "cluster, else the demo's file",
    )
    p.set_defaults(func=cmd_models)

    from rendezvous.access.cli import add_cli as add_keys_cli
    from rendezvous.archive import policy_replay, replay, report, sql
    from rendezvous.config.cli import add_cli as add_config_cli
    from rendezvous.demo import add_cli as add_demo_cli
    from rendezvous.proxy import add_cli as add_proxy_cli

    add_proxy_cli(sub)
    add_demo_cli(sub)
    sql.add_cli(sub)
    report.add_cli(sub)
    replay.add_cli(sub)
    policy_replay.add_cli(sub)
    add_config_cli(sub)
    add_keys_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = StackSettings.from_env(**({"profile": args.profile} if args.profile else {}))
        return args.func(args, settings)
    except RendezvousError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
