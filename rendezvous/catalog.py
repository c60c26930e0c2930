"""The services a cluster serves: their definitions, kept on the control topic.

Submitting a configuration file publishes one definition record per service in it
(``schemas/service.avsc``) on ``rdv.control``, beside the policy changes: the file's format
version, the service's section as written, and the text of its lookup tables, so that the
definition needs nothing from the submitter's filesystem. The enrich job and ``rendezvous
status`` read them; any number of files can be submitted to one cluster.

Each service's definitions are versioned like its policy: a record takes effect when its
version is higher than the one held, so reading the topic again from any offset (a job
restored from a checkpoint) never brings back an older definition. A record without a
definition removes the service.

A service belongs to the file that defined it: a second file defining the same name is
refused, so submitting one file never changes another's services. Pure: no Kafka, no clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rendezvous.errors import ConfigError

if TYPE_CHECKING:
    from rendezvous.config import ServiceSpec

# A lookup table travels inside the definition record; keep it well under Kafka's 1 MB.
MAX_TABLE_BYTES = 256 * 1024


@dataclass(frozen=True)
class Definition:
    """One version of a service's definition (``definition`` None: the service was removed)."""

    service: str
    version: int
    source: str  # the configuration file (absolute path) that owns the service
    format_version: int = 0
    section: Mapping[str, Any] | None = None  # the service's section of the file, as written
    tables: Mapping[str, str] = field(default_factory=dict)  # lookup table path -> CSV text
    issued_ms: int = 0
    issued_by: str = ""

    @property
    def removed(self) -> bool:
        return self.section is None

    def spec(self) -> ServiceSpec:
        """The validated service (a removed service has none)."""
        from rendezvous import config

        if self.section is None:
            raise ConfigError(f"service {self.service!r} was removed (version {self.version})")
        data = {"version": self.format_version, "services": {self.service: self.section}}
        return config.parse(data, source=self.source).services[self.service]

    def content(self) -> tuple[Any, ...]:
        """What the service is, without who issued it when: equal content, same service."""
        return (self.format_version, _canonical(self.section), _canonical(self.tables))

    def to_record(self) -> dict[str, Any]:
        definition = None
        if self.section is not None:
            definition = json.dumps(
                {
                    "format_version": self.format_version,
                    "section": self.section,
                    "tables": dict(self.tables),
                },
                sort_keys=True,
                separators=(",", ":"),
            )
        return {
            "service": self.service,
            "version": self.version,
            "definition": definition,
            "source": self.source,
            "issued_ms": self.issued_ms,
            "issued_by": self.issued_by,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Definition:
        body = record.get("definition")
        data = json.loads(body) if body is not None else {}
        return cls(
            service=record["service"],
            version=int(record["version"]),
            source=record["source"],
            format_version=int(data.get("format_version", 0)),
            section=data.get("section"),
            tables=data.get("tables", {}),
            issued_ms=int(record["issued_ms"]),
            issued_by=record.get("issued_by") or "",
        )


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class Catalog:
    """The latest definition of every service, from definition records in topic order."""

    def __init__(self, records: Iterable[Mapping[str, Any]] = ()) -> None:
        self.latest: dict[str, Definition] = {}
        for record in records:
            self.apply(record)

    def apply(self, record: Mapping[str, Any]) -> Definition | None:
        """Take a definition record if its version is higher than the one held; returns the
        definition taken, else None."""
        new = Definition.from_record(record)
        held = self.latest.get(new.service)
        if held is not None and new.version <= held.version:
            return None
        self.latest[new.service] = new
        return new

    def get(self, service: str) -> Definition | None:
        """The service's definition in force; None when it was never defined or was removed."""
        held = self.latest.get(service)
        return None if held is None or held.removed else held

    @property
    def services(self) -> dict[str, Definition]:
        """Every service defined now, by name."""
        return {name: d for name, d in sorted(self.latest.items()) if not d.removed}

    def of_source(self, source: str) -> dict[str, Definition]:
        return {name: d for name, d in self.services.items() if d.source == source}


@dataclass(frozen=True)
class Plan:
    """What submitting a file changes in the catalog."""

    publish: tuple[Definition, ...]  # new and changed services, then removals
    unchanged: tuple[str, ...]
    changed: tuple[str, ...]  # services defined before whose definition changes
    removed: tuple[str, ...]


def plan(
    catalog: Catalog,
    source: str,
    defined: Mapping[str, Definition],
    *,
    prune: bool = False,
    issued_ms: int,
    issued_by: str,
) -> Plan:
    """The definitions to publish for ``defined`` (the file's services, their version
    unset), or ConfigError when a service of the file belongs to another file.

    With ``prune``, services this file defined before and no longer lists are removed.
    """
    conflicts = []
    for name in defined:
        owner = catalog.get(name)
        if owner is not None and owner.source != source:
            conflicts.append(
                f"service {name!r} is already served from {owner.source} (definition "
                f"v{owner.version}, by {owner.issued_by or 'unknown'}); rename it in {source}, "
                f"or remove it there first (`rendezvous remove {name}`)"
            )
    if conflicts:
        raise ConfigError("\n".join(conflicts))
    publish, unchanged, changed = [], [], []
    for name, new in defined.items():
        held = catalog.latest.get(name)
        if held is not None and not held.removed and held.content() == new.content():
            unchanged.append(name)
            continue
        if held is not None and not held.removed:
            changed.append(name)
        publish.append(
            Definition(
                service=name,
                version=(held.version + 1) if held is not None else 0,
                source=source,
                format_version=new.format_version,
                section=new.section,
                tables=new.tables,
                issued_ms=issued_ms,
                issued_by=issued_by,
            )
        )
    removed = []
    if prune:
        for name, held in catalog.of_source(source).items():
            if name not in defined:
                removed.append(name)
                publish.append(removal(held, issued_ms=issued_ms, issued_by=issued_by))
    return Plan(tuple(publish), tuple(unchanged), tuple(changed), tuple(removed))


def removal(held: Definition, *, issued_ms: int, issued_by: str) -> Definition:
    """The record that removes ``held``'s service."""
    return Definition(
        service=held.service,
        version=held.version + 1,
        source=held.source,
        issued_ms=issued_ms,
        issued_by=issued_by,
    )


def from_file(path: str | Path) -> dict[str, Definition]:
    """The definitions of a configuration file's services (version -1: not yet published),
    validated, with the text of their lookup tables; ConfigError names what is wrong."""
    from rendezvous import config

    path = Path(path).resolve()
    data = config.read(path)
    cfg = config.parse(data, source=str(path))  # every problem at once, before anything else
    format_version = int(data.get("version", config.FORMAT_VERSION))
    out = {}
    for name, spec in cfg.services.items():
        tables = {}
        for i, step in enumerate(spec.enrich):
            if step["op"] != "lookup":
                continue
            table = path.parent / step["table"]
            try:
                text = table.read_text()
            except OSError as exc:
                raise ConfigError(
                    f"{path}: services.{name}.enrich[{i}]: cannot read lookup table {table}: "
                    f"{exc.strerror}; the path is relative to the configuration file"
                ) from None
            if len(text.encode()) > MAX_TABLE_BYTES:
                raise ConfigError(
                    f"{path}: services.{name}.enrich[{i}]: lookup table {table} is "
                    f"{len(text.encode())} bytes; at most {MAX_TABLE_BYTES} travel with the "
                    "service's definition"
                )
            tables[step["table"]] = text
        out[name] = Definition(
            service=name,
            version=-1,
            source=str(path),
            format_version=format_version,
            section=data["services"][name],
            tables=tables,
        )
    return out
