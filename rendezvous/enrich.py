"""Enrichment and the model-input record: pure functions the enrich job calls."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rendezvous import records, serde, traffic
from rendezvous.catalog import Catalog
from rendezvous.config import ServiceSpec
from rendezvous.errors import ConfigError
from rendezvous.policy import Policy, PolicyBook

EXPIRED = "deadline_exceeded"


class EnrichError(Exception):
    """A step could not be applied; the message names the step and the field."""


class Enricher:
    """Applies a service's steps in order. Lookup tables are parsed in ``__init__``: build it in
    open().

    ``tables`` holds each lookup table's CSV text by its path as written in the step (what a
    service's definition carries, see :mod:`rendezvous.catalog`); a table missing there is read
    from ``base_dir``.
    """

    def __init__(
        self,
        spec: ServiceSpec,
        base_dir: Path | None = None,
        *,
        tables: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self.tables: dict[int, dict[str, dict[str, Any]]] = {}
        for i, step in enumerate(spec.enrich):
            if step["op"] != "lookup":
                continue
            text = (tables or {}).get(step["table"])
            if text is None:
                if base_dir is None:
                    raise EnrichError(f"enrich[{i}] (lookup): no table {step['table']!r}")
                text = (base_dir / step["table"]).read_text()
            self.tables[i] = _parse_table(text, step.get("table_key", step["key"]))

    def apply(self, features: dict[str, Any]) -> dict[str, Any]:
        out = dict(features)
        for i, step in enumerate(self.spec.enrich):
            op = step["op"]
            where = f"enrich[{i}] ({op})"
            if op == "rename":
                if step["from"] in out:
                    out[step["to"]] = out.pop(step["from"])
            elif op == "default":
                if out.get(step["field"]) is None:
                    out[step["field"]] = step["value"]
            elif op == "drop":
                out.pop(step["field"], None)
            elif op in ("log1p", "scale"):
                value = _number(out, step["field"], where)
                target = step.get("to", step["field"])
                if op == "log1p":
                    if value <= -1:
                        raise EnrichError(f"{where}: log1p needs {step['field']} > -1, got {value}")
                    out[target] = math.log1p(value)
                else:
                    out[target] = value * float(step["factor"])
            elif op == "lookup":
                key = out.get(step["key"])
                row = self.tables[i].get(str(key))
                if row is None:
                    if "missing" in step:
                        row = step["missing"]
                    else:
                        raise EnrichError(
                            f"{where}: no row for {step['key']}={key!r} in {step['table']}"
                        )
                prefix = step.get("prefix", "")
                out.update({prefix + k: v for k, v in row.items()})
        return out


class ServiceBook:
    """What the enrich job knows of every service, from the control log in its order: the
    definition in force (its enricher) and the policy in force.

    Records apply when their version is higher than the one held, so reading the log again
    from any offset changes nothing.
    """

    def __init__(self) -> None:
        self.catalog = Catalog()
        self.enrichers: dict[str, Enricher] = {}
        self.policies = PolicyBook()

    def apply(self, kind: serde.Kind, record: Mapping[str, Any]) -> str | None:
        """Take a control record (a policy change or a service definition); returns what it
        changed, for the job's log, or None. A definition that cannot be built raises
        EnrichError naming the service, and the service keeps its previous definition."""
        if kind == serde.Kind.CONTROL:
            if self.policies.apply(record):
                return f"{record['service']}: policy v{record['policy']['version']}"
            return None
        if kind != serde.Kind.SERVICE:
            return None
        held = self.catalog.latest.get(record["service"])
        taken = self.catalog.apply(record)
        if taken is None:
            return None
        if taken.removed:
            self.enrichers.pop(taken.service, None)
            return f"{taken.service}: removed (definition v{taken.version})"
        try:
            spec = taken.spec()
            enricher = Enricher(spec, tables=taken.tables)
        except (ConfigError, EnrichError, KeyError, ValueError) as exc:
            if held is None:
                del self.catalog.latest[taken.service]
            else:
                self.catalog.latest[taken.service] = held
            raise EnrichError(
                f"service {taken.service!r}: definition v{taken.version} from {taken.source} "
                f"cannot be applied ({exc}); it keeps its previous definition"
            ) from None
        self.enrichers[spec.name] = enricher
        self.policies.define(spec)
        return f"{taken.service}: definition v{taken.version} from {taken.source}"

    def enricher(self, service: str) -> Enricher | None:
        return self.enrichers.get(service)

    def policy(self, service: str) -> Policy | None:
        return self.policies.get(service) if service in self.enrichers else None


def _number(features: Mapping[str, Any], name: str, where: str) -> float:
    value = features.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EnrichError(f"{where}: field {name!r} must be a number, got {value!r}")
    return float(value)


def _parse_table(text: str, key: str) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for row in csv.DictReader(io.StringIO(text, newline="")):
        k = row.pop(key)
        rows[k] = {name: _cell(v) for name, v in row.items()}
    return rows


def _cell(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def assign(
    spec: ServiceSpec, policy: Policy, request_id: str, body: Mapping[str, Any]
) -> tuple[str | None, list[str]]:
    """A request's arm under the policy's split (None without a split or without its key) and
    the sampled models that do not score it (see :mod:`rendezvous.traffic`). Decided here,
    once, from the request as received, and recorded in the model input: the scoring jobs and
    the join read it, and a replay of the archive reads the same."""
    arm = policy.split.arm_for(body) if policy.split is not None else None
    return arm, traffic.unsampled(spec.samples, request_id, body)


def to_model_input(
    request: Mapping[str, Any],
    policy: Policy,
    enricher: Enricher | None,
    now_ms: int,
) -> tuple[records.ModelInput, records.DeadLetter | None]:
    """The model-input record for a request, and a dead letter when enrichment failed.

    A failed request still goes on (with ``error`` set) so the rendezvous answers it with an
    explicit error by its deadline.
    """
    error = None
    arm, unsampled = None, []
    features_json = request["payload"]
    late_ms = now_ms - request["deadline_ms"]
    if late_ms > 0:
        # The request waited in a queue past its deadline (the pipeline is behind): it is
        # decided as an explicit error at once instead of costing every model its work.
        error = (
            f"{EXPIRED}: the request reached enrichment {late_ms} ms after its deadline; not scored"
        )
    elif enricher is None:
        error = (
            f"service {request['service']!r} is not defined on this cluster; submit the "
            "configuration file that defines it (`rendezvous submit --config FILE`)"
        )
    else:
        try:
            body = serde.from_json(request["payload"])
            features_json = serde.to_json(enricher.apply(body))
            arm, unsampled = assign(enricher.spec, policy, request["request_id"], body)
        except (EnrichError, ValueError, TypeError) as exc:
            error = str(exc)
    record: records.ModelInput = {
        "request_id": request["request_id"],
        "service": request["service"],
        "received_ms": request["received_ms"],
        "deadline_ms": request["deadline_ms"],
        "features": features_json,
        "payload": request["payload"],
        "enriched_ms": now_ms,
        "reply_to": request.get("reply_to", ""),
        "policy": policy.to_record(),
        "error": error,
        "arm": arm,
        "unsampled": unsampled,
    }
    dead = None
    if error is not None and late_ms <= 0:
        dead = records.dead_letter(
            request_id=request["request_id"],
            service=request["service"],
            stage="enrich",
            error=error,
            record=serde.encode(serde.Kind.REQUEST, dict(request)),
            at_ms=now_ms,
        )
    return record, dead
