"""What a loaded configuration is: the frozen objects every job, the proxy and the CLI read."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from rendezvous.errors import ConfigError
from rendezvous.guard import GuardRule
from rendezvous.traffic import REQUEST_ID, Sample, Split


@dataclass(frozen=True)
class ModelSpec:
    name: str
    role: str
    uri: str | None = None
    callable: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    # "thread": the scoring job's Python runs in the TaskManager's one interpreter (cheapest);
    # "process": in a Python process of its own, so a model that holds the CPU in Python does
    # not hold every other job's interpreter lock.
    isolation: str = "thread"
    sample: float | None = None  # the share of requests scored; None: all of them
    sample_key: str | None = None  # the field deciding ``sample``; None: the request ID
    quota_weight: int | None = None  # tokens a request it scores costs (see access.cost)
    parallelism: int = 1  # parallel tasks of the model's scoring job

    @property
    def sampling(self) -> Sample | None:
        if self.sample is None or self.sample >= 1.0:
            return None
        return Sample(self.name, self.sample, self.sample_key or REQUEST_ID)

    @property
    def source(self) -> str:
        return self.uri if self.uri is not None else f"python:{self.callable}"


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    required: bool = True
    default: Any = None


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    sla_ms: int
    grace_ms: int
    models: tuple[ModelSpec, ...]
    preference: tuple[str, ...]
    input_fields: tuple[FieldSpec, ...] | None  # None: taken from a model's signature
    input_from_model: str | None
    enrich: tuple[Mapping[str, Any], ...]
    code: tuple[str, ...] = ()  # the service's own code, relative to its configuration file
    split: Split | None = None  # the configuration's A/B split (policy version 0's)
    guard: GuardRule | None = None  # when `rendezvous guard` takes the first choice off

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise ConfigError(
            f"service {self.name!r} has no model {name!r}; its models are "
            f"{', '.join(m.name for m in self.models)}"
        )

    @property
    def scoring_models(self) -> tuple[ModelSpec, ...]:
        """Models that score requests (every role but the decoy)."""
        return tuple(m for m in self.models if m.role != "decoy")

    @property
    def samples(self) -> tuple[Sample, ...]:
        """The models that score only a share of requests."""
        return tuple(s for s in (m.sampling for m in self.scoring_models) if s is not None)


@dataclass(frozen=True)
class Config:
    services: Mapping[str, ServiceSpec]
    source: str = "<inline>"

    def with_signature_inputs(
        self, fields_of: Callable[[str], tuple[FieldSpec, ...]]
    ) -> tuple[Config, dict[str, str]]:
        """Fill in the input fields of services declared ``{from_model: m}``.

        ``fields_of(uri)`` reads a model's signature (see rendezvous.models). Returns the new
        configuration and, per service that could not be resolved, why (it keeps accepting any
        JSON object, as before).
        """
        services, problems = dict(self.services), {}
        for name, spec in self.services.items():
            if spec.input_fields is not None or spec.input_from_model is None:
                continue
            model = spec.model(spec.input_from_model)
            if model.uri is None:
                problems[name] = f"model {model.name} is a callable: it has no signature"
                continue
            try:
                services[name] = replace(spec, input_fields=fields_of(model.uri))
            except Exception as exc:
                problems[name] = str(exc)
        return replace(self, services=services), problems

    def service(self, name: str) -> ServiceSpec:
        try:
            return self.services[name]
        except KeyError:
            raise ConfigError(
                f"unknown service {name!r}; configured services: {', '.join(sorted(self.services)) or 'none'}"
            ) from None
