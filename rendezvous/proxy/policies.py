"""The policy in force for each service, followed from the control topic.

A promotion (``rendezvous promote``, ``--sla-ms`` and ``--grace-ms`` included), a split or a
resubmitted file with a new SLA is the next version of the service's policy on
``rdv.control``. The jobs follow that topic; so does every proxy replica, which needs the SLA
to set each request's deadline and to know when to answer on the pipeline's behalf. Without
it, a replica kept the SLA of the configuration it was started with.

:class:`Policies` holds, for each configured service, its specification with the SLA and grace
of the highest policy version read so far: one dictionary look-up per request.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from rendezvous import serde, topics
from rendezvous.access.log import KafkaRecordLog, MemoryLog, Record
from rendezvous.config import ServiceSpec
from rendezvous.kafka import KafkaConnection

log = logging.getLogger(__name__)


def service_of(record: Record) -> str:
    return record["service"]


class KafkaPolicyLog(KafkaRecordLog):
    """The policy records of ``rdv.control``; the service definitions beside them (another
    record kind on the same topic) are passed over without a word."""

    def __init__(self, kafka: KafkaConnection, *, topic: str = topics.CONTROL, **kw: Any) -> None:
        super().__init__(kafka, topic=topic, kind=serde.Kind.CONTROL, key_of=service_of, **kw)

    def decode(self, value: bytes | None, key: bytes | None) -> tuple[str, Record | None] | None:
        if value is None:
            return None  # the control topic is not compacted; a tombstone means nothing here
        try:
            kind, record = serde.decode(value)
        except serde.SerdeError as exc:
            log.warning("skipped a record on %s that cannot be read: %s", self.topic, exc)
            return None
        if kind != serde.Kind.CONTROL:
            return None
        return self.key_of(record), record


class MemoryPolicyLog(MemoryLog):
    """Policy records in a list, for tests."""

    key_of = staticmethod(service_of)


class Policies:
    """Each configured service's specification under the policy in force."""

    def __init__(self, services: dict[str, ServiceSpec]) -> None:
        self._configured = dict(services)
        self._current = dict(services)
        self._versions: dict[str, int] = {}
        self.caught_up = False

    def spec(self, name: str) -> ServiceSpec:
        """The service's specification with the SLA and grace in force (KeyError if unknown)."""
        return self._current[name]

    def version(self, name: str) -> int | None:
        """The policy version read for ``name``; None while only the configuration's holds."""
        return self._versions.get(name)

    def on_record(self, service: str, record: Record | None) -> None:
        """Apply one control record: a higher version than the one read replaces it. Called
        on the following thread; one dictionary assignment, so readers never see half of it."""
        if record is None or service not in self._configured:
            return
        policy = record["policy"]
        version = int(policy["version"])
        if version <= self._versions.get(service, -1):
            return
        base = self._configured[service]
        self._current[service] = dataclasses.replace(
            base, sla_ms=int(policy["sla_ms"]), grace_ms=int(policy["grace_ms"])
        )
        self._versions[service] = version
        if int(policy["sla_ms"]) != base.sla_ms:
            log.info(
                "service %s: policy v%d, SLA %d ms (configuration: %d ms)",
                service,
                version,
                policy["sla_ms"],
                base.sla_ms,
            )

    def on_caught_up(self) -> None:
        self.caught_up = True
