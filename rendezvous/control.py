"""The control topic: reading each service's policy history and publishing a new version.

``rdv.control`` has one partition, so its order is global. It holds two kinds of record: each
service's definition (:mod:`rendezvous.catalog`) and its policy changes
(:mod:`rendezvous.policy`). The enrich job reads all of it when it opens and follows it after,
applying every record whose version is higher than the one in force; what this module reads
is the same sequence. A change is read-then-write: the version it publishes is one more than
the current version read.

:class:`KafkaControl` reads and writes the topic on a broker; :class:`MemoryControl` is the
same log in a list, for tests and for callers that already hold the records.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from rendezvous import catalog as catalog_mod
from rendezvous import policy as policy_mod
from rendezvous import serde, topics
from rendezvous.catalog import Catalog, Definition
from rendezvous.errors import PolicyError, RendezvousError
from rendezvous.kafka import KafkaConnection
from rendezvous.policy import Change, History, Policy

if TYPE_CHECKING:
    from rendezvous.config import Config, ServiceSpec


class ControlLog(Protocol):
    def entries(self) -> list[tuple[serde.Kind, dict[str, Any]]]:
        """Every record on the log, oldest first: policy changes (``CONTROL``) and service
        definitions (``SERVICE``)."""
        ...

    def append(self, kind: serde.Kind, record: dict[str, Any]) -> None:
        """Append a record; it is on the log when this returns."""
        ...

    def read(self) -> list[dict[str, Any]]:
        """Every policy change on the log, oldest first."""
        ...

    def publish(self, record: dict[str, Any]) -> None:
        """Append a policy change."""
        ...


class _Log:
    """The policy view over :meth:`entries` and :meth:`append`."""

    def read(self) -> list[dict[str, Any]]:
        return [record for kind, record in self.entries() if kind == serde.Kind.CONTROL]

    def publish(self, record: dict[str, Any]) -> None:
        self.append(serde.Kind.CONTROL, record)

    def catalog(self) -> Catalog:
        """The services defined now (see :mod:`rendezvous.catalog`)."""
        return Catalog(record for kind, record in self.entries() if kind == serde.Kind.SERVICE)


class MemoryControl(_Log):
    """A control log in a list (policy changes, unless given as ``(kind, record)`` pairs)."""

    def __init__(self, records: list[Any] | None = None) -> None:
        self.log: list[tuple[serde.Kind, dict[str, Any]]] = [
            r if isinstance(r, tuple) else (serde.Kind.CONTROL, r) for r in records or []
        ]

    def entries(self) -> list[tuple[serde.Kind, dict[str, Any]]]:
        return list(self.log)

    def append(self, kind: serde.Kind, record: dict[str, Any]) -> None:
        self.log.append((kind, record))


# Answers for a partition whose leader is not known yet (a topic just created).
_NO_LEADER_YET = frozenset(
    {
        "NOT_LEADER_FOR_PARTITION",
        "LEADER_NOT_AVAILABLE",
        "UNKNOWN_TOPIC_OR_PART",
        "_UNKNOWN_PARTITION",
    }
)


class KafkaControl(_Log):
    """The control topic on a Kafka broker."""

    def __init__(
        self, kafka: KafkaConnection, *, topic: str = topics.CONTROL, timeout_s: float = 10.0
    ) -> None:
        self.kafka = kafka
        self.bootstrap = kafka.bootstrap
        self.topic = topic
        self.timeout_s = timeout_s

    def entries(self) -> list[tuple[serde.Kind, dict[str, Any]]]:
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        consumer = Consumer(
            self.kafka.client_config({"group.id": "rdv-cli", "enable.auto.commit": False})
        )
        records: list[tuple[serde.Kind, dict[str, Any]]] = []
        try:
            # A topic just created may not have its leader yet: retriable errors are retried.
            until = time.monotonic() + self.timeout_s
            while True:
                try:
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(self.topic, 0), timeout=self.timeout_s
                    )
                    break
                except KafkaException as exc:
                    err = exc.args[0] if exc.args else None
                    passing = err is not None and (err.retriable() or err.name() in _NO_LEADER_YET)
                    if passing and time.monotonic() < until:
                        time.sleep(0.2)
                        continue
                    raise RendezvousError(
                        f"could not read {self.topic} at {self.bootstrap}: {exc}; is Kafka up (`rendezvous status`)?"
                    ) from exc
            if high <= low:
                return records
            consumer.assign([TopicPartition(self.topic, 0, low)])
            deadline = time.monotonic() + self.timeout_s
            seen = low
            while seen < high:
                if time.monotonic() > deadline:
                    raise RendezvousError(
                        f"read {seen - low} of the {high - low} records of {self.topic} at "
                        f"{self.bootstrap} in {self.timeout_s:.0f}s; the services and their "
                        "policies need all of them: is Kafka up (`rendezvous status`)?"
                    )
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                seen = msg.offset() + 1
                try:
                    kind, record = serde.decode(msg.value())
                except serde.SerdeError:
                    continue  # the enrich job dead-letters it and applies nothing from it
                if kind in (serde.Kind.CONTROL, serde.Kind.SERVICE):
                    records.append((kind, record))
        finally:
            consumer.close()
        return records

    def append(self, kind: serde.Kind, record: dict[str, Any]) -> None:
        from confluent_kafka import Producer

        producer = Producer(self.kafka.client_config({"linger.ms": 0}))
        value = serde.encode(kind, record)
        producer.produce(self.topic, value=value, key=record["service"].encode())
        if producer.flush(10) != 0:
            what = "policy change" if kind == serde.Kind.CONTROL else "service definition"
            raise RendezvousError(
                f"could not write the {what} to {self.topic} at {self.bootstrap}; is Kafka up (`rendezvous status`)?"
            )


def histories(log: ControlLog, config: Config) -> dict[str, History]:
    """The policy history of every configured service."""
    return policy_mod.histories(config, log.read())


def history(log: ControlLog, config: Config, service: str) -> History:
    config.service(service)  # an unknown service is an error that lists the configured ones
    return histories(log, config)[service]


def current_policy(log: ControlLog, config: Config, service: str) -> Policy:
    """The policy in force for ``service``: the configuration's, then the control topic's."""
    return history(log, config, service).current.policy


class RegistryHook(Protocol):
    """Moves a model-registry alias with a change of first choice, so that the control record
    carries the move (:class:`rendezvous.models.promotion.Follower`)."""

    def move(self, before: Policy, after: Policy) -> Mapping[str, Any] | None:
        """Called before the record is written: the ``AliasMove`` record, or None."""
        ...

    def revert(self) -> None:
        """Called when writing the record failed: undo what :meth:`move` did."""
        ...


def publish(
    log: ControlLog,
    service: str,
    policy: Policy,
    *,
    issued_by: str,
    issued_ms: int,
    before: Policy | None = None,
    registry: RegistryHook | None = None,
) -> Change:
    """Write ``policy`` as ``service``'s next change; with ``registry``, the alias move from
    ``before`` to it is made first and carried by the record."""
    moved = registry.move(before, policy) if registry is not None and before is not None else None
    change = Change(policy, issued_ms, issued_by, moved)
    try:
        log.publish(change.to_control(service))
    except BaseException:
        if moved is not None and registry is not None:
            registry.revert()
        raise
    return change


def promote(
    log: ControlLog,
    config: Config,
    service: str,
    model: str,
    *,
    sla_ms: int | None = None,
    issued_by: str,
    issued_ms: int,
    registry: RegistryHook | None = None,
) -> Policy:
    """Make ``model`` the first choice of ``service`` (no restart); returns the new policy."""
    spec = config.service(service)
    policy_mod.check_promotable(spec, model)  # before the topic is read
    current = current_policy(log, config, service)
    new = policy_mod.promote(spec, current, model, sla_ms=sla_ms)
    return publish(
        log,
        service,
        new,
        issued_by=issued_by,
        issued_ms=issued_ms,
        before=current,
        registry=registry,
    ).policy


def demote(
    log: ControlLog,
    config: Config,
    service: str,
    model: str,
    *,
    issued_by: str,
    issued_ms: int,
    registry: RegistryHook | None = None,
) -> tuple[str, Policy]:
    """Take ``model`` off as ``service``'s first choice: the latest earlier policy version
    that put another model first comes back (as the next version), else the next model in the
    preference is promoted. Returns how, in words, and the new policy.

    Refused (PolicyError) when ``model`` is no longer the first choice (someone changed the
    policy meanwhile) or no other model can answer first.
    """
    from rendezvous import guard

    spec = config.service(service)
    past = history(log, config, service)
    current = past.current.policy
    if not current.preference or current.preference[0] != model:
        first = current.preference[0] if current.preference else "no model"
        raise PolicyError(
            f"{service}: {model} is no longer the first choice ({first} is, policy version "
            f"{current.version}); nothing to take off"
        )
    number = guard.fallback_version(past, model)
    if number is not None:
        new, how = past.restore(number), f"restored policy version {number}"
    else:
        roles = {m.name: m.role for m in spec.models}
        successor = guard.next_in_line(current.preference, model, roles)
        if successor is None:
            raise PolicyError(
                f"{service}: no model but {model} can answer first (the rest of the preference "
                "is the backstop); leaving the policy as it is"
            )
        new, how = policy_mod.promote(spec, current, successor), f"promoted {successor}"
    publish(
        log,
        service,
        new,
        issued_by=issued_by,
        issued_ms=issued_ms,
        before=current,
        registry=registry,
    )
    return how, new


def split(
    log: ControlLog,
    config: Config,
    service: str,
    arms: list[tuple[str, float]] | None,
    *,
    key: str | None = None,
    issued_by: str,
    issued_ms: int,
) -> Policy:
    """Publish the next version of ``service``'s policy with the split's weights replaced (or
    the split removed, ``arms`` None); requests accepted from then on get the new arms."""
    spec = config.service(service)
    new = policy_mod.with_split(spec, current_policy(log, config, service), arms, key=key)
    return publish(log, service, new, issued_by=issued_by, issued_ms=issued_ms).policy


def undo(
    log: ControlLog,
    config: Config,
    service: str,
    *,
    issued_by: str,
    issued_ms: int,
    registry: RegistryHook | None = None,
) -> tuple[int, Policy]:
    """Republish the version before the current one as the next version.

    Returns the version brought back and the new policy. Undoing twice brings back what the
    first undo replaced: an undo is a change like any other.
    """
    past = history(log, config, service)
    earlier = past.previous().policy.version
    new = past.undo()
    publish(
        log,
        service,
        new,
        issued_by=issued_by,
        issued_ms=issued_ms,
        before=past.current.policy,
        registry=registry,
    )
    return earlier, new


def restore(
    log: ControlLog,
    config: Config,
    service: str,
    version: int,
    *,
    issued_by: str,
    issued_ms: int,
    registry: RegistryHook | None = None,
) -> Policy:
    """Republish version ``version`` as the next version; returns the new policy.

    When ``version`` is the current one nothing is published and its policy is returned.
    """
    past = history(log, config, service)
    new = past.restore(version)
    if new != past.current.policy:
        publish(
            log,
            service,
            new,
            issued_by=issued_by,
            issued_ms=issued_ms,
            before=past.current.policy,
            registry=registry,
        )
    return new


# ---- service definitions -----------------------------------------------------------------


def _rules(policy: Policy) -> tuple[Any, ...]:
    return (policy.preference, policy.sla_ms, policy.grace_ms, policy.split)


def define(
    log: ControlLog,
    defined: dict[str, Definition],
    *,
    source: str,
    prune: bool = False,
    issued_by: str,
    issued_ms: int,
) -> tuple[catalog_mod.Plan, Callable[[], list[Change]]]:
    """What submitting a file's services (:func:`rendezvous.catalog.from_file`) changes, and
    the function that publishes it.

    Nothing is written until the returned function is called (the caller checks the cluster
    first); it appends the definitions, then, for each service whose definition brings other
    rules (preference, SLA, grace) than the ones it had, a policy change that puts them in
    force, and returns those changes. A service's promotions stay in force when its
    definition changes anything else.
    """
    entries = log.entries()
    held = Catalog(record for kind, record in entries if kind == serde.Kind.SERVICE)
    plan = catalog_mod.plan(
        held, source, defined, prune=prune, issued_ms=issued_ms, issued_by=issued_by
    )
    controls = [record for kind, record in entries if kind == serde.Kind.CONTROL]
    last_defined: dict[str, Definition] = {}
    for kind, record in entries:
        if kind == serde.Kind.SERVICE and record.get("definition") is not None:
            last_defined[record["service"]] = Definition.from_record(record)

    def apply() -> list[Change]:
        changes = []
        for definition in plan.publish:
            log.append(serde.Kind.SERVICE, definition.to_record())
        for definition in plan.publish:
            if definition.removed:
                continue
            spec = definition.spec()
            before = held.latest.get(spec.name)
            wanted = policy_mod.initial(spec)
            unchanged = (
                before is not None
                and not before.removed
                and _rules(policy_mod.initial(before.spec())) == _rules(wanted)
            )
            if unchanged:
                continue  # the file's rules did not change: a promotion stays in force
            # The policy in force as the jobs hold it: version 0 of the last definition the
            # service had (this one, if it had none), then the control records.
            base = last_defined.get(spec.name)
            v0 = base.spec() if base is not None else spec
            current = policy_mod.histories(_one(v0), controls)[spec.name].current.policy
            if _rules(current) == _rules(wanted):
                continue
            new = replace(wanted, version=current.version + 1)
            changes.append(
                publish(
                    log, spec.name, new, issued_by=f"{issued_by} ({source})", issued_ms=issued_ms
                )
            )
        return changes

    return plan, apply


def remove(log: ControlLog, service: str, *, issued_by: str, issued_ms: int) -> Definition:
    """Remove a service from the cluster's catalog; returns its last definition."""
    held = log.catalog().get(service)
    if held is None:
        known = ", ".join(log.catalog().services) or "none"
        raise RendezvousError(
            f"service {service!r} is not defined on this cluster; defined services: {known}"
        )
    log.append(
        serde.Kind.SERVICE,
        catalog_mod.removal(held, issued_ms=issued_ms, issued_by=issued_by).to_record(),
    )
    return held


def _one(spec: ServiceSpec) -> Config:
    from rendezvous.config import Config

    return Config(services={spec.name: spec})


def defined_services(log: ControlLog) -> list[tuple[Definition, Policy]]:
    """Every service defined on the cluster now, with the policy in force, by name."""
    entries = log.entries()
    held = Catalog(record for kind, record in entries if kind == serde.Kind.SERVICE)
    controls = [record for kind, record in entries if kind == serde.Kind.CONTROL]
    out = []
    for name, definition in held.services.items():
        spec = definition.spec()
        current = policy_mod.histories(_one(spec), controls)[name].current.policy
        out.append((definition, current))
    return out
