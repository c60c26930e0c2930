"""What one request costs from its API key's quota. Pure: no Kafka, no clock.

A service whose models declare no ``quota_weight`` charges 1 for every request, whatever its
models: the quota is a number of requests. Once one model of a service has a weight, a request
of that service costs the weights of the models that score it, in tokens: the decoy scores
nothing and costs nothing, a model without a weight costs 1, and a sampled shadow
(``sample:``, see :mod:`rendezvous.traffic`) costs its weight only for the requests it
samples. The proxy makes the same sample decision the enrich job makes (the same stable hash of
the request ID or of the request's ``sample_key`` field), so a request is charged for exactly
the models that will score it.

One HTTP request is one request here: the proxy's batching of requests into Kafka records
changes nothing of what each costs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rendezvous.access.keys import ALL_SERVICES
from rendezvous.config.spec import ServiceSpec
from rendezvous.traffic import Sample

REQUESTS = "requests"  # the quota's unit when no service in a key's scope has weights
TOKENS = "tokens"  # and when one has


@dataclass(frozen=True)
class Cost:
    """The cost of a request of one service: per scoring model, its weight and its sample
    (None: it scores every request). ``weighted``: a model of the service has a weight."""

    service: str
    weighted: bool
    weights: tuple[tuple[str, int, Sample | None], ...] = ()

    @classmethod
    def of(cls, spec: ServiceSpec) -> Cost:
        if not any(m.quota_weight is not None for m in spec.models):
            return cls(spec.name, weighted=False)
        return cls(
            spec.name,
            weighted=True,
            weights=tuple(
                (m.name, 1 if m.quota_weight is None else m.quota_weight, m.sampling)
                for m in spec.scoring_models
            ),
        )

    def of_request(self, request_id: str, payload: Mapping[str, Any]) -> int:
        """What the request ``request_id`` with body ``payload`` costs (at least 1)."""
        if not self.weighted:
            return 1
        total = sum(
            weight
            for _, weight, sample in self.weights
            if sample is None or sample.takes(request_id, payload)
        )
        return max(total, 1)

    @property
    def most(self) -> int:
        """What a request costs when every model scores it (no sampled model skips it)."""
        return max(sum(w for _, w, _ in self.weights), 1) if self.weighted else 1

    def describe(self) -> str:
        """``gbm 5 + lr 1 + shadow 3 (sampled)``, or ``1 per request``."""
        if not self.weighted:
            return "1 per request"
        return " + ".join(
            f"{name} {weight}" + (" (sampled)" if sample is not None else "")
            for name, weight, sample in self.weights
        )


def costs(specs: Iterable[ServiceSpec]) -> dict[str, Cost]:
    """The cost of a request of each service, by name."""
    return {spec.name: Cost.of(spec) for spec in specs}


def unit(services: Iterable[str], weighted: Iterable[str]) -> str:
    """The unit of a quota whose key may call ``services`` (``*``: every service), given the
    services with weights: tokens when one of them is in the scope, else requests."""
    heavy = set(weighted)
    scope = set(services)
    if heavy and (ALL_SERVICES in scope or scope & heavy):
        return TOKENS
    return REQUESTS
