"""The registry follows the policy: after a change of a service's first choice, ``@champion``
on the registered model it is a version of points at the version that now answers first, and
the change is an MLflow run (``rendezvous-promotions``) with the evidence attached.

Which version that is depends on how the new first choice names its model:

- ``models:/R/3`` or ``models:/R@challenger`` (any alias but ``champion``): that version, read
  from the registry now; ``@champion`` on ``R`` moves to it.
- ``models:/R@champion``: the model follows the alias itself (the configuration's champion,
  typically). Moving it "to itself" would change nothing, so it goes back to the version it
  had when this model was last taken off first place (recorded by that run as
  ``previous_version``); with no such run it stays where it is.
- anything else (a callable, a run URI, a folder): nothing in the registry to move.

:func:`plan` is the pure decision; :func:`follow` is the shell that reads and writes MLflow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rendezvous.models.uri import parse_model_uri

ALIAS = "champion"
EXPERIMENT = "rendezvous-promotions"


@dataclass(frozen=True)
class Target:
    """Where ``@champion`` on ``registered_model`` should point: ``version``, or (``version``
    None) the version recorded when ``restore_from`` was last taken off first place."""

    registered_model: str
    version: str | None = None  # a fixed version
    alias: str | None = None  # resolve this alias now
    restore_from: str | None = None  # the model whose earlier version comes back


def plan(uri: str | None, model: str) -> Target | None:
    """What the first choice ``model`` (its configured ``uri``) asks of the registry."""
    if not uri:
        return None
    ref = parse_model_uri(uri, model=model)
    if not ref.registered:
        return None
    if ref.alias == ALIAS:
        return Target(ref.name, restore_from=model)
    if ref.alias is not None:
        return Target(ref.name, alias=ref.alias)
    if ref.version is not None:
        return Target(ref.name, version=ref.version)
    return None  # models:/R/latest: no fixed version to name


@dataclass(frozen=True)
class Move:
    """What happened to ``@champion``: ``moved`` from ``previous`` to ``version``, or left."""

    registered_model: str
    version: str | None
    previous: str | None
    moved: bool

    def line(self) -> str:
        where = f"models:/{self.registered_model}@{ALIAS}"
        if self.moved:
            was = f" (was version {self.previous})" if self.previous else " (new alias)"
            return f"MLflow: {where} -> version {self.version}{was}"
        if self.version is None:
            return f"MLflow: {where} left at version {self.previous} (no earlier version recorded)"
        return f"MLflow: {where} is version {self.version} already"


class Registry:
    """The few MLflow calls :func:`follow` makes (an MlflowClient behind them)."""

    def __init__(self, tracking_uri: str) -> None:
        from mlflow.tracking import MlflowClient

        from rendezvous.archive.report import _probe_tracking

        _probe_tracking(tracking_uri)  # fail in seconds, not after MLflow's retries
        self.client = MlflowClient(tracking_uri, registry_uri=tracking_uri)

    def alias_version(self, name: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def last_previous(self, service: str, model: str) -> str | None:
        """``previous_version`` of the latest promotion run that took ``model`` off first."""
        found = self.client.get_experiment_by_name(EXPERIMENT)
        if found is None:
            return None
        runs = self.client.search_runs(
            [found.experiment_id],
            filter_string=(
                f"params.service = '{_quoted(service)}' and params.from_model = '{_quoted(model)}'"
            ),
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not runs:
            return None
        return runs[0].data.params.get("previous_version") or None

    def log_run(
        self, name: str, params: Mapping[str, str], metrics: Mapping[str, float], at_ms: int
    ) -> str:
        from mlflow.entities import Metric, Param

        found = self.client.get_experiment_by_name(EXPERIMENT)
        experiment_id = found.experiment_id if found else self.client.create_experiment(EXPERIMENT)
        run_id = self.client.create_run(experiment_id, run_name=name).info.run_id
        self.client.log_batch(
            run_id,
            [Metric(k, float(v), at_ms, 0) for k, v in metrics.items() if v == v],
            [Param(k, str(v)) for k, v in params.items()],
        )
        self.client.set_terminated(run_id)
        return run_id


def _quoted(value: str) -> str:
    return value.replace("'", "\\'")


def follow(registry: Registry, target: Target, service: str) -> Move:
    """Point ``@champion`` where ``target`` says (see :func:`plan`)."""
    name = target.registered_model
    previous = registry.alias_version(name, ALIAS)
    if target.version is not None:
        version = target.version
    elif target.alias is not None:
        version = registry.alias_version(name, target.alias)
    else:
        version = registry.last_previous(service, target.restore_from or "")
    if version is None or version == previous:
        return Move(name, version if version is not None else None, previous, moved=False)
    registry.set_alias(name, ALIAS, version)
    return Move(name, version, previous, moved=True)


def record(
    tracking_uri: str,
    *,
    service: str,
    from_model: str | None,
    to_model: str,
    to_uri: str | None,
    policy_version: int,
    issued_by: str,
    at_ms: int,
    evidence: Mapping[str, Any] | None = None,
    figures: Mapping[str, float] | None = None,
    registry_factory: Callable[[str], Registry] | None = None,
) -> tuple[Move | None, str]:
    """After a policy change put ``to_model`` first: move ``@champion`` (see :func:`plan`)
    and log the change as a run; returns the move (None: nothing to move) and the run id."""
    registry = (registry_factory or Registry)(tracking_uri)
    target = plan(to_uri, to_model) if from_model != to_model else None
    move = follow(registry, target, service) if target is not None else None
    params: dict[str, str] = {
        "service": service,
        "to_model": to_model,
        "from_model": from_model or "",
        "policy_version": str(policy_version),
        "issued_by": issued_by,
        **{k: str(v) for k, v in (evidence or {}).items()},
    }
    if move is not None:
        params |= {
            "registered_model": move.registered_model,
            "alias": ALIAS,
            "version": move.version or "",
            "previous_version": move.previous or "",
            "alias_moved": str(move.moved).lower(),
        }
    run_id = registry.log_run(f"promote {service}/{to_model}", params, dict(figures or {}), at_ms)
    return move, run_id
