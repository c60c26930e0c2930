"""The scorer a job holds: :func:`load_scorer` turns a configured model into a :class:`Scorer`.

Also :func:`single_threaded_math`, the process set-up that keeps one-row predictions fast.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from rendezvous.config import ModelSpec
from rendezvous.models.aliases import _AliasFollower
from rendezvous.models.callables import _load_callable
from rendezvous.models.errors import ModelLoadError
from rendezvous.models.loaded import _Loaded
from rendezvous.models.registry import _Source
from rendezvous.models.uri import parse_model_uri

log = logging.getLogger(__name__)

DEFAULT_FOLLOW_ALIAS_S = 30.0
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# ---- process set-up --------------------------------------------------------------------

_math_capped = False


def single_threaded_math() -> None:
    """One BLAS/OpenMP thread per process, unless the user chose otherwise.

    A single-row prediction gains nothing from a thread pool, and OpenMP's default (one thread
    per core) multiplies the p99 of one-row predictions by 50-200x. Libraries read
    ``OMP_NUM_THREADS`` & co. when they load, so the variables must be in the environment
    before numpy/scikit-learn are imported: best in the environment of the Flink task managers,
    else here, before :func:`load_scorer` imports them. Libraries already loaded are capped with
    ``threadpoolctl`` too. A value the user set is left alone.
    """
    global _math_capped
    chosen = "OMP_NUM_THREADS" in os.environ and not _math_capped
    for var in THREAD_VARS:
        os.environ.setdefault(var, "1")
    if chosen or _math_capped:
        return
    _math_capped = True
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn depends on it
        return
    with warnings.catch_warnings(record=True) as caught:
        threadpool_limits(limits=1)
    for w in caught:
        log.debug("threadpoolctl: %s", w.message)


# ---- the scorer ------------------------------------------------------------------------


class Scorer:
    """A model that scores one feature dict at a time.

    ``name`` and ``role`` come from the configuration, ``version`` is the registered model
    version (``"3"``), the logged model or run id, ``"local"`` for a folder, or
    ``"module:function"`` for a callable. ``kind`` says which path scores: ``"sklearn"`` (numpy
    fast path), ``"pyfunc"`` or ``"python"``.
    """

    def __init__(
        self,
        name: str,
        role: str,
        source: str,
        loaded: _Loaded,
        follower: _AliasFollower | None = None,
    ) -> None:
        self.name = name
        self.role = role
        self.source = source
        self._loaded = loaded
        self._follower = follower

    @property
    def version(self) -> str:
        return self._loaded.version

    @property
    def kind(self) -> str:
        return self._loaded.kind

    @property
    def last_refresh_error(self) -> str | None:
        """Why the last alias check failed (the old model kept scoring), or None."""
        return self._follower.last_error if self._follower is not None else None

    def score(self, features: Mapping[str, Any]) -> Any:
        """The model's JSON-serialisable output for one request; model errors propagate."""
        return self._loaded.predict(features)

    def score_many(self, rows: list[Mapping[str, Any]]) -> list[Any]:
        """The outputs for several requests, in order, in one vectorised call where the model
        allows it. Any row's failure raises: score rows one by one to learn which failed."""
        many = self._loaded.predict_many
        if many is None:
            predict = self._loaded.predict
            return [predict(r) for r in rows]
        return many(rows)

    def refresh(self) -> bool:
        """Follow a moved alias: True when a new version was swapped in by this call.

        Cheap enough to call before every record: it reads the clock, and at most every
        ``follow_alias_s`` seconds starts a background check. Always False for callables,
        versions and runs, which cannot move.
        """
        if self._follower is None:
            return False
        new = self._follower.poll(self._loaded.version)
        if new is None:
            return False
        old, self._loaded = self._loaded, new
        old.discard()
        log.info(
            "model %s: %s now at version %s (was %s)",
            self.name,
            self.source,
            new.version,
            old.version,
        )
        return True

    def close(self) -> None:
        if self._follower is not None:
            self._follower.close()
        self._loaded.discard()
        self._loaded = _Loaded(self._loaded.version, self._loaded.kind, self._closed)

    def _closed(self, features: Mapping[str, Any]) -> Any:
        raise RuntimeError(f"model {self.name} is closed; load it again with load_scorer()")

    def __repr__(self) -> str:
        return (
            f"Scorer(name={self.name!r}, role={self.role!r}, source={self.source!r}, "
            f"version={self.version!r}, kind={self.kind!r})"
        )


def load_scorer(
    spec: ModelSpec,
    *,
    tracking_uri: str | None,
    follow_alias_s: float | None = DEFAULT_FOLLOW_ALIAS_S,
    clock: Callable[[], float] = time.monotonic,
    run_in_background: Callable[[Callable[[], None]], object] | None = None,
) -> Scorer:
    """Load the model ``spec`` names and return its :class:`Scorer`.

    ``tracking_uri`` is the MLflow tracking server (also the registry); None means
    ``MLFLOW_TRACKING_URI``, and a registry or run URI with neither is refused (MLflow would
    silently answer from an empty ``./mlflow.db``). ``follow_alias_s`` is how often ``refresh()`` may check
    whether an alias moved (None: never). ``run_in_background`` runs the check; by default a
    daemon thread (tests pass ``lambda f: f()`` to run it inline).
    """
    if spec.callable is not None:
        return Scorer(spec.name, spec.role, spec.source, _load_callable(spec))
    if spec.uri is None:
        raise ModelLoadError(
            f"model {spec.name}: a {spec.role} has no uri or callable, so there is nothing to "
            "score with; give it a uri (models:/name@alias) or a callable (module:function)"
        )
    single_threaded_math()
    ref = parse_model_uri(spec.uri, model=spec.name)
    source = _Source(ref, spec.name, tracking_uri)
    loaded = source.load()
    follower = None
    if ref.alias is not None and follow_alias_s is not None:
        follower = _AliasFollower(source, follow_alias_s, clock, run_in_background)
    return Scorer(spec.name, spec.role, spec.uri, loaded, follower)
