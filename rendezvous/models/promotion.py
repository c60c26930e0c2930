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

:func:`plan` is the pure decision; :func:`follow` is the shell that reads and writes MLflow,
and :class:`Follower` runs it while a policy change is published, so that the control record
names the version that answers first.
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

    def to_record(self) -> dict[str, Any]:
        """The control record's ``registry`` field (an ``AliasMove``, schemas/control.avsc)."""
        return {
            "registered_model": self.registered_model,
            "alias": ALIAS,
            "version": self.version,
            "previous": self.previous,
            "moved": self.moved,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Move:
        return cls(
            record["registered_model"],
            record.get("version"),
            record.get("previous"),
            bool(record["moved"]),
        )

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


class Abandoned(Exception):
    """The caller stopped waiting for the registry: nothing is written."""


def follow(
    registry: Registry,
    target: Target,
    service: str,
    *,
    may_write: Callable[[], bool] = lambda: True,
) -> Move:
    """Point ``@champion`` where ``target`` says (see :func:`plan`); with ``may_write``
    false by the time the alias would be set, :class:`Abandoned` instead."""
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
    if not may_write():
        raise Abandoned(name)
    registry.set_alias(name, ALIAS, version)
    return Move(name, version, previous, moved=True)


def _first(policy: Any) -> str | None:
    return policy.preference[0] if policy.preference else None


class Follower:
    """Moves ``@champion`` while a policy change is published, so that the control record
    carries the move (its ``registry`` field), then logs the change as a run.

    Given as ``registry=`` to :func:`rendezvous.control.promote` (undo, restore, demote):
    :meth:`move` runs before the record is written, :meth:`revert` if writing it fails, and
    :meth:`finish` is called by the caller once the change is on the topic. A registry that
    cannot be reached does not stop the policy change: :attr:`error` holds why, and the record
    carries no move.
    """

    def __init__(
        self,
        tracking_uri: str,
        spec: Any,  # a ServiceSpec
        *,
        registry_factory: Callable[[str], Registry] | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.timeout_s = timeout_s  # None: wait for the registry as long as it takes
        self.abandoned = False
        self.spec = spec
        self.factory = registry_factory or Registry
        self.registry: Registry | None = None
        self.result: Move | None = None
        self.error: Exception | None = None
        self.change: tuple[Any, Any] | None = None  # the policies before and after

    def _registry(self) -> Registry:
        if self.registry is None:
            self.registry = self.factory(self.tracking_uri)
        return self.registry

    def move(self, before: Any, after: Any) -> dict[str, Any] | None:
        """Point ``@champion`` at the version of ``after``'s first choice (see :func:`plan`);
        the ``AliasMove`` record, or None when there is nothing to move."""
        self.change = (before, after)
        to_model, from_model = _first(after), _first(before)
        if to_model is None or to_model == from_model:
            return None
        try:
            target = plan(self.spec.model(to_model).uri, to_model)
            if target is None:
                return None
            if self.timeout_s is None:
                self.result = self._follow(target)
            else:
                self.result = self._follow_within(target, self.timeout_s)
        except Exception as exc:  # the policy change stands without the registry
            self.error = exc
            return None
        return self.result.to_record()

    def _follow(self, target: Target) -> Move:
        return follow(
            self._registry(), target, self.spec.name, may_write=lambda: not self.abandoned
        )

    def _follow_within(self, target: Target, timeout_s: float) -> Move:
        """:meth:`_follow` in a thread of its own, waited for ``timeout_s``; after that the
        change goes out without the move, and the thread writes nothing when it comes back."""
        import concurrent.futures

        from rendezvous.errors import RendezvousError

        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="registry")
        try:
            return pool.submit(self._follow, target).result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            self.abandoned = True
            raise RendezvousError(
                f"MLflow at {self.tracking_uri} did not answer within {timeout_s:g} s; the "
                "change is published without moving the alias"
            ) from None
        finally:
            pool.shutdown(wait=False)

    def revert(self) -> None:
        """The change was not written: put ``@champion`` back where it was."""
        move, self.result = self.result, None
        if move is not None and move.moved and move.previous is not None and self.registry:
            self.registry.set_alias(move.registered_model, ALIAS, move.previous)

    def finish(
        self,
        *,
        issued_by: str,
        at_ms: int,
        evidence: Mapping[str, Any] | None = None,
        figures: Mapping[str, float] | None = None,
    ) -> str | None:
        """Log the change :meth:`move` saw as a run in :data:`EXPERIMENT`; its id (None: no
        change was published, or it has no first choice)."""
        if self.change is None:
            return None
        before, after = self.change
        to_model = _first(after)
        if to_model is None:
            return None
        return _log_change(
            self._registry(),
            service=self.spec.name,
            from_model=_first(before),
            to_model=to_model,
            policy_version=after.version,
            issued_by=issued_by,
            at_ms=at_ms,
            move=self.result,
            evidence=evidence,
            figures=figures,
        )


def _log_change(
    registry: Registry,
    *,
    service: str,
    from_model: str | None,
    to_model: str,
    policy_version: int,
    issued_by: str,
    at_ms: int,
    move: Move | None,
    evidence: Mapping[str, Any] | None,
    figures: Mapping[str, float] | None,
) -> str:
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
    return registry.log_run(f"promote {service}/{to_model}", params, dict(figures or {}), at_ms)
