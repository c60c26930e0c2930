"""A service's policy: how its rendezvous chooses an answer, and how the policy changes.

Pure: no Kafka, no Flink, no clock. A policy (``schemas/policy.avsc``) is the preference order,
the SLA and the grace period, with a version that increases with every change, and the A/B
split in force (:class:`rendezvous.traffic.Split`, carried by the control record beside the
policy: the requests carry the arm it picked, not the split). Version 0 comes
from the configuration; every later version is a control record on ``rdv.control``. A record
takes effect when its version is higher than the one in force, so the jobs (through
:class:`PolicyBook`) and the history that the CLI shows (:class:`History`) agree on what was
applied.

Every change is a new version, a return to an earlier policy too: undoing a promotion
republishes the earlier preference, SLA and grace exactly, under the next version number, and
the decisions name the version they were made under.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from rendezvous.errors import PolicyError, RendezvousError
from rendezvous.traffic import Split

if TYPE_CHECKING:  # the configuration package loads pydantic; the rendezvous core needs none
    from rendezvous.config import Config, ServiceSpec

FROM_CONFIGURATION = "configuration"  # who issued version 0


@dataclass(frozen=True)
class Policy:
    """One version of a service's policy: the record of ``schemas/policy.avsc``."""

    preference: tuple[str, ...]  # model names, most preferred first
    sla_ms: int
    grace_ms: int  # how long late scores are still collected for the decision
    version: int
    split: Split | None = None  # the A/B split in force; None: the preference alone

    @classmethod
    def from_record(cls, record: Mapping[str, Any], split: Split | None = None) -> Policy:
        return cls(
            preference=tuple(record["preference"]),
            sla_ms=int(record["sla_ms"]),
            grace_ms=int(record["grace_ms"]),
            version=int(record["version"]),
            split=split,
        )

    @classmethod
    def from_control(cls, control: Mapping[str, Any]) -> Policy:
        """The policy a control record issues (a record written before splits has none)."""
        return cls.from_record(control["policy"], Split.from_record(control.get("split")))

    def to_record(self) -> dict[str, Any]:
        """The ``Policy`` record (without the split: see :meth:`Change.to_control`)."""
        return {
            "preference": list(self.preference),
            "sla_ms": self.sla_ms,
            "grace_ms": self.grace_ms,
            "version": self.version,
        }

    def supersedes(self, current: Policy | None) -> bool:
        """Whether this policy replaces ``current``: only a higher version does."""
        return current is None or self.version > current.version


# Stamped on the requests of a service the enrich job has no policy for (they are answered
# with an error); also the policy version of an orphan decision, whose request never came.
NO_POLICY = Policy(preference=(), sla_ms=0, grace_ms=0, version=-1)


def initial(spec: ServiceSpec) -> Policy:
    """Version 0: the configuration's preference order, SLA, grace and split."""
    return Policy(tuple(spec.preference), spec.sla_ms, spec.grace_ms, version=0, split=spec.split)


def check_promotable(spec: ServiceSpec, model: str, *, as_what: str = "the first choice") -> None:
    """Raise unless ``model`` is one of the service's models that can answer every request."""
    found = spec.model(model)
    if found.role == "decoy":
        raise RendezvousError(
            f"{model} is the decoy of {spec.name}; a decoy cannot answer requests"
        )
    if found.sampling is not None:
        raise RendezvousError(
            f"{model} of {spec.name} scores only a sample ({found.sample:g}) of requests; "
            f"{as_what} must score every request: remove its `sample` in the configuration first"
        )


def with_split(
    spec: ServiceSpec,
    current: Policy,
    arms: list[tuple[str, float]] | None,
    *,
    key: str | None = None,
) -> Policy:
    """The next version with the split's arms (weights) replaced, or the split removed
    (``arms`` None). The key stays the one in force unless ``key`` is given; a service without
    a split needs one."""
    if arms is None:
        if current.split is None:
            raise PolicyError(f"{spec.name} has no split to remove")
        return replace(current, split=None, version=current.version + 1)
    key = key or (current.split.key if current.split is not None else None)
    if key is None:
        raise PolicyError(
            f"{spec.name} has no split yet; name the request field that picks the arm with --key FIELD"
        )
    fields = [f.name for f in spec.input_fields] if spec.input_fields is not None else None
    if fields is not None and key not in fields:
        raise PolicyError(
            f"--key {key}: not one of the input fields of {spec.name} ({', '.join(fields)})"
        )
    for model, _ in arms:
        check_promotable(spec, model, as_what="an arm's model")
    return replace(current, split=Split(key, tuple(arms)), version=current.version + 1)


def promote(spec: ServiceSpec, current: Policy, model: str, *, sla_ms: int | None = None) -> Policy:
    """``model`` first, the others after it in their order; the SLA changed if given.

    Promoting a model back is not an undo: the model it replaced stays in the order, second.
    :meth:`History.undo` brings back the earlier order exactly.
    """
    check_promotable(spec, model)
    return Policy(
        preference=(model, *(p for p in current.preference if p != model)),
        sla_ms=sla_ms if sla_ms is not None else current.sla_ms,
        grace_ms=current.grace_ms,
        version=current.version + 1,
        split=current.split,
    )


@dataclass(frozen=True)
class Change:
    """One version of a service's policy, when it was issued (ms, UTC) and by whom, and the
    registry alias it moved (the control record's ``registry``: an ``AliasMove`` record)."""

    policy: Policy
    issued_ms: int | None  # None for the configuration's version 0
    issued_by: str
    registry: Mapping[str, Any] | None = None

    @classmethod
    def from_control(cls, record: Mapping[str, Any]) -> Change:
        return cls(
            Policy.from_control(record),
            record["issued_ms"],
            record.get("issued_by") or "",
            record.get("registry"),
        )

    def to_control(self, service: str) -> dict[str, Any]:
        """The control record (``schemas/control.avsc``) that issues this change."""
        if self.issued_ms is None:
            raise ValueError(f"version {self.policy.version} of {service} has no issue time")
        return {
            "service": service,
            "policy": self.policy.to_record(),
            "issued_ms": self.issued_ms,
            "issued_by": self.issued_by,
            "split": None if self.policy.split is None else self.policy.split.to_record(),
            "registry": None if self.registry is None else dict(self.registry),
        }


@dataclass(frozen=True)
class History:
    """Every version of a service's policy that took effect, oldest first; the last is current."""

    service: str
    changes: tuple[Change, ...]

    @property
    def current(self) -> Change:
        return self.changes[-1]

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(c.policy.version for c in self.changes)

    def version(self, number: int) -> Change:
        for change in self.changes:
            if change.policy.version == number:
                return change
        raise PolicyError(
            f"{self.service} has no policy version {number}; its versions are "
            f"{', '.join(map(str, self.versions))} (see `rendezvous models`)"
        )

    def previous(self) -> Change:
        """The version before the current one: what an undo brings back."""
        if len(self.changes) < 2:
            raise PolicyError(
                f"{self.service}: nothing to undo; its policy has not changed since the "
                f"configuration's version {self.current.policy.version}"
            )
        return self.changes[-2]

    def undo(self) -> Policy:
        """The previous version's rules again, as the next version."""
        return self._again(self.previous())

    def restore(self, number: int) -> Policy:
        """Version ``number``'s rules again, as the next version; the current policy itself
        when ``number`` is the current version (there is nothing to change)."""
        earlier = self.version(number)
        if earlier is self.current:
            return earlier.policy
        return self._again(earlier)

    def _again(self, earlier: Change) -> Policy:
        return replace(earlier.policy, version=self.current.policy.version + 1)


def histories(config: Config, controls: Iterable[Mapping[str, Any]]) -> dict[str, History]:
    """The policy history of every configured service from control records in topic order.

    Each starts with the configuration's version 0; a record joins when its version is higher
    than the last one taken (the rule the jobs apply), records of other services are ignored.
    """
    taken: dict[str, list[Change]] = {
        name: [Change(initial(spec), None, FROM_CONFIGURATION)]
        for name, spec in config.services.items()
    }
    for record in controls:
        changes = taken.get(record["service"])
        if changes is None:
            continue
        change = Change.from_control(record)
        if change.policy.supersedes(changes[-1].policy):
            changes.append(change)
    return {name: History(name, tuple(changes)) for name, changes in taken.items()}


class PolicyBook:
    """The current policy of every service: its definition's, then control records."""

    def __init__(self, config: Config | None = None) -> None:
        self.policies: dict[str, Policy] = {
            name: initial(spec) for name, spec in (config.services.items() if config else ())
        }

    def define(self, spec: ServiceSpec) -> None:
        """A service defined: version 0 from its definition, unless it holds a policy already
        (a definition changed later brings its rules as a policy change of their own)."""
        self.policies.setdefault(spec.name, initial(spec))

    def get(self, service: str) -> Policy | None:
        return self.policies.get(service)

    def apply(self, control: Mapping[str, Any]) -> bool:
        """Take a control record if it is newer than what is held; True when taken."""
        policy = Policy.from_control(control)
        if not policy.supersedes(self.policies.get(control["service"])):
            return False
        self.policies[control["service"]] = policy
        return True
