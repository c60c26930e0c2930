"""The control topic: reading each service's policy history and publishing a new version.

``rdv.control`` has one partition, so its order is global; the enrich job reads it from the
start and applies every record whose version is higher than the one in force (see
:mod:`rendezvous.policy`). What this module reads is the same sequence. A policy change is
read-then-write: the version it publishes is one more than the current version read.

:class:`KafkaControl` reads and writes the topic on a broker; :class:`MemoryControl` is the
same log in a list, for tests and for callers that already hold the records.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from rendezvous import policy as policy_mod
from rendezvous import serde, topics
from rendezvous.errors import RendezvousError
from rendezvous.kafka import KafkaConnection
from rendezvous.policy import Change, History, Policy

if TYPE_CHECKING:
    from rendezvous.config import Config


class ControlLog(Protocol):
    def read(self) -> list[dict[str, Any]]:
        """Every control record on the log, oldest first."""
        ...

    def publish(self, record: dict[str, Any]) -> None:
        """Append a control record; it is on the log when this returns."""
        ...


class MemoryControl:
    """A control log in a list."""

    def __init__(self, records: list[dict[str, Any]] | None = None) -> None:
        self.records = list(records or [])

    def read(self) -> list[dict[str, Any]]:
        return list(self.records)

    def publish(self, record: dict[str, Any]) -> None:
        self.records.append(record)


class KafkaControl:
    """The control topic on a Kafka broker."""

    def __init__(
        self, kafka: KafkaConnection, *, topic: str = topics.CONTROL, timeout_s: float = 10.0
    ) -> None:
        self.kafka = kafka
        self.bootstrap = kafka.bootstrap
        self.topic = topic
        self.timeout_s = timeout_s

    def read(self) -> list[dict[str, Any]]:
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        consumer = Consumer(
            self.kafka.client_config({"group.id": "rdv-cli", "enable.auto.commit": False})
        )
        records: list[dict[str, Any]] = []
        try:
            try:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, 0), timeout=self.timeout_s
                )
            except KafkaException as exc:
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
                        f"{self.bootstrap} in {self.timeout_s:.0f}s; the policy history needs "
                        "all of them: is Kafka up (`rendezvous status`)?"
                    )
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                seen = msg.offset() + 1
                try:
                    kind, record = serde.decode(msg.value())
                except serde.SerdeError:
                    continue  # the enrich job dead-letters it and applies no policy from it
                if kind == serde.Kind.CONTROL:
                    records.append(record)
        finally:
            consumer.close()
        return records

    def publish(self, record: dict[str, Any]) -> None:
        from confluent_kafka import Producer

        producer = Producer(self.kafka.client_config({"linger.ms": 0}))
        value = serde.encode(serde.Kind.CONTROL, record)
        producer.produce(self.topic, value=value, key=record["service"].encode())
        if producer.flush(10) != 0:
            raise RendezvousError(
                f"could not write the policy change to {self.topic} at {self.bootstrap}; is Kafka up (`rendezvous status`)?"
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


def publish(
    log: ControlLog, service: str, policy: Policy, *, issued_by: str, issued_ms: int
) -> Change:
    change = Change(policy, issued_ms, issued_by)
    log.publish(change.to_control(service))
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
) -> Policy:
    """Make ``model`` the first choice of ``service`` (no restart); returns the new policy."""
    spec = config.service(service)
    policy_mod.check_promotable(spec, model)  # before the topic is read
    new = policy_mod.promote(spec, current_policy(log, config, service), model, sla_ms=sla_ms)
    return publish(log, service, new, issued_by=issued_by, issued_ms=issued_ms).policy


def undo(
    log: ControlLog, config: Config, service: str, *, issued_by: str, issued_ms: int
) -> tuple[int, Policy]:
    """Republish the version before the current one as the next version.

    Returns the version brought back and the new policy. Undoing twice brings back what the
    first undo replaced: an undo is a change like any other.
    """
    past = history(log, config, service)
    earlier = past.previous().policy.version
    new = past.undo()
    publish(log, service, new, issued_by=issued_by, issued_ms=issued_ms)
    return earlier, new


def restore(
    log: ControlLog, config: Config, service: str, version: int, *, issued_by: str, issued_ms: int
) -> Policy:
    """Republish version ``version`` as the next version; returns the new policy.

    When ``version`` is the current one nothing is published and its policy is returned.
    """
    past = history(log, config, service)
    new = past.restore(version)
    if new != past.current.policy:
        publish(log, service, new, issued_by=issued_by, issued_ms=issued_ms)
    return new
