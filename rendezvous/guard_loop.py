"""``rendezvous guard``: the shell around :mod:`rendezvous.guard`.

It reads every partition of the results topic from its live end, feeds the answers to a
:class:`~rendezvous.guard.Watch`, re-reads the services' policies from the control topic now
and then (a promotion made by hand is followed), and when a rule is broken for its time takes
the first choice off on the control topic (``issued_by`` says why; ``rendezvous models``
lists it, and the decisions carry the new policy version) and logs the event as an MLflow run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rendezvous import control, serde, topics
from rendezvous.clock import now_ms
from rendezvous.config.spec import Config
from rendezvous.errors import PolicyError, RendezvousError
from rendezvous.guard import Breach, GuardRule, Watch
from rendezvous.settings import StackSettings

log = logging.getLogger(__name__)

EXPERIMENT = "rendezvous-guard"
ISSUER = "rendezvous guard"
REGISTRY_TIMEOUT_S = 2.0  # how long a demotion waits for MLflow to move the alias


@dataclass(frozen=True)
class Demotion:
    """One first choice taken off."""

    breach: Breach
    how: str  # "restored policy version 2" / "promoted challenger"
    policy_version: int
    first_choice: str
    run_id: str | None  # the MLflow run, when it could be logged


def guarded(config: Config, services: list[str] | None = None) -> dict[str, GuardRule]:
    """The rules of the services that have one (of ``services``, when named)."""
    if services:
        missing = [s for s in services if s not in config.services]
        if missing:
            raise RendezvousError(
                f"no service {', '.join(missing)} in {config.source}; its services are "
                f"{', '.join(config.services)}"
            )
    rules = {
        name: spec.guard
        for name, spec in config.services.items()
        if spec.guard is not None and (not services or name in services)
    }
    if not rules:
        raise RendezvousError(
            f"no service in {config.source} has a guard section; add one, e.g. "
            "`guard: {error_rate: 0.05, late_rate: 0.05, for_s: 30}`"
        )
    return rules


def run(
    settings: StackSettings,
    config: Config,
    rules: dict[str, GuardRule],
    *,
    tracking_uri: str | None = None,
    check_every_s: float = 1.0,
    policies_every_s: float = 5.0,
    stop: threading.Event | None = None,
    say: Callable[[str], None] = print,
) -> list[Demotion]:
    """Watch until ``stop`` is set (or forever); returns the demotions made."""
    from confluent_kafka import Consumer, TopicPartition

    stop = stop or threading.Event()
    ctl = control.KafkaControl(settings.kafka)
    watch = Watch(rules)
    consumer = Consumer(
        settings.kafka.client_config(
            {"group.id": "rdv-guard", "enable.auto.commit": False, "auto.offset.reset": "latest"}
        )
    )
    done: list[Demotion] = []
    try:
        meta = consumer.list_topics(topics.RESULTS, timeout=10).topics[topics.RESULTS]
        # From the end as it is now, resolved here rather than at the first fetch: a result
        # written after "guarding" is said is one the guard counts.
        ends = []
        for p in meta.partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topics.RESULTS, p), timeout=10)
            ends.append(TopicPartition(topics.RESULTS, p, high))
        consumer.assign(ends)
        _follow_policies(ctl, config, watch, rules)
        say(
            "guarding "
            + "; ".join(f"{s} ({r.describe()})" for s, r in rules.items())
            + f" on {settings.kafka.describe()}"
        )
        next_check = next_policies = time.monotonic()
        while not stop.is_set():
            for msg in consumer.consume(500, 0.2):
                if msg.error() or serde.is_heartbeat(msg.value()):
                    continue
                try:
                    results = serde.items_as(serde.Kind.RESULT, msg.value())
                except serde.SerdeError:
                    continue
                for r in results:
                    watch.add(r, r["decided_ms"])
            now = time.monotonic()
            if now >= next_policies:
                _follow_policies(ctl, config, watch, rules)
                next_policies = now + policies_every_s
            if now < next_check:
                continue
            next_check = now + check_every_s
            for service in rules:
                breach = watch.check(service, now_ms())
                if breach is None:
                    continue
                demotion = _demote(ctl, config, rules[service], breach, tracking_uri, say)
                if demotion is not None:
                    done.append(demotion)
                    watch.first_choice(service, demotion.first_choice, now_ms())
    finally:
        consumer.close()
    return done


def _follow_policies(
    ctl: control.ControlLog, config: Config, watch: Watch, rules: dict[str, GuardRule]
) -> None:
    histories = control.histories(ctl, config)  # one read of the topic for every service
    for service in rules:
        policy = histories[service].current.policy
        if policy.preference:
            watch.first_choice(service, policy.preference[0], now_ms())


def _demote(
    ctl: control.ControlLog,
    config: Config,
    rule: GuardRule,
    breach: Breach,
    tracking_uri: str | None,
    say: Callable[[str], None],
) -> Demotion | None:
    why = breach.why(rule)
    follower = None
    if tracking_uri:
        from rendezvous.models import promotion

        # A demotion does not wait on a registry that hangs: the alias moves with it, or not.
        follower = promotion.Follower(
            tracking_uri, config.service(breach.service), timeout_s=REGISTRY_TIMEOUT_S
        )
    try:
        how, policy = control.demote(
            ctl,
            config,
            breach.service,
            breach.model,
            issued_by=f"{ISSUER}: {why}",
            issued_ms=breach.at_ms,
            registry=follower,
        )
    except PolicyError as exc:
        say(f"{breach.service}: {why}; not taken off: {exc.message}")
        return None
    first = policy.preference[0]
    say(
        f"{breach.service}: took {breach.model} off ({why}); {how}: {first} answers first "
        f"(policy version {policy.version})"
    )
    run_id = None
    if tracking_uri and follower is not None:
        if follower.result is not None:
            say(f"{breach.service}: {follower.result.line()}")
        try:
            if follower.error is not None:
                raise follower.error
            run_id = log_to_mlflow(tracking_uri, breach, rule, how, policy.version, first)
            follower.finish(issued_by=f"{ISSUER}: {why}", at_ms=breach.at_ms)
        except Exception as exc:  # the demotion stands; the record of it is best effort
            say(f"{breach.service}: could not log the demotion to MLflow at {tracking_uri}: {exc}")
    return Demotion(breach, how, policy.version, first, run_id)


def log_to_mlflow(
    tracking_uri: str, breach: Breach, rule: GuardRule, how: str, version: int, first: str
) -> str:
    """One run in the ``rendezvous-guard`` experiment: what was taken off, why, what took over."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = found.experiment_id if found else client.create_experiment(EXPERIMENT)
    run_id = client.create_run(
        experiment_id, run_name=f"demote {breach.service}/{breach.model}"
    ).info.run_id
    f = breach.figures
    figures = {
        "answers": f.answers,
        "error_rate": f.error_rate,
        "late_rate": f.late_rate,
        "psi": f.psi,
        "breach_s": (breach.at_ms - breach.since_ms) / 1000,
    }
    params = {
        "service": breach.service,
        "demoted": breach.model,
        "first_choice": first,
        "policy_version": str(version),
        "action": how,
        "rule": rule.describe(),
    }
    client.log_batch(
        run_id,
        [Metric(k, v, breach.at_ms, 0) for k, v in figures.items() if v == v],
        [Param(k, v) for k, v in params.items()],
        [RunTag("mlflow.note.content", breach.why(rule))],
    )
    client.set_terminated(run_id)
    return run_id
