"""Turn a configured model into a scorer: an MLflow model or a plain Python callable.

Pure Python (never imports pyflink). A job loads its scorer in ``open()``, never at import::

    scorer = load_scorer(spec, tracking_uri="http://127.0.0.1:5000")
    scorer.score({"mean_radius": 14.2, ...})   # {"label": 1, "probability": 0.93}
    scorer.refresh()                           # True when the alias moved and the model reloaded
    scorer.close()

MLflow models (``models:/name@alias``, ``models:/name/3``, ``models:/name/latest``,
``models:/m-<id>``, ``runs:/<run id>/<path>``, or a local folder) are resolved with an
``MlflowClient`` bound to the given tracking URI (the process-wide MLflow URI is never touched),
downloaded to a temporary folder and loaded:

- **sklearn flavour, numeric inputs: the fast path.** ``mlflow.sklearn.load_model`` and a
  one-row numpy array in the model's column order (its ``feature_names_in_``, else the
  signature's input columns). A one-row DataFrame through pyfunc costs about 6x more.
  Classifiers answer ``{"label": <class>, "probability": <probability of that class>}``,
  regressors a number.
- **anything else:** ``mlflow.pyfunc`` with a one-row DataFrame; the prediction is turned into
  plain JSON values (one number, a list, or a dict for a DataFrame row).

Callables ``package.module:function`` are called as ``function(features, **params)`` and must
return a JSON-serialisable value.

A scorer of ``models:/name@alias`` can follow its alias: MLflow does not push alias moves, so
:meth:`Scorer.refresh` polls the registry at most every ``follow_alias_s`` seconds (injectable
clock). The check and the load of a new version run in the background, so a slow or unreachable
registry never stalls scoring; the next ``refresh()`` after the load swaps the model in.

Load problems raise :class:`ModelLoadError`, whose message names the model, the URI and the fix.
Scoring problems (a missing feature, the model's own exception) propagate to the caller; the score
job turns them into error scores.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from rendezvous.config import FieldSpec, ModelSpec
from rendezvous.errors import RendezvousError

log = logging.getLogger(__name__)

DEFAULT_FOLLOW_ALIAS_S = 30.0
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
NUMERIC_TYPES = ("double", "float", "long", "integer", "boolean")
SIGNATURE_TYPES = {
    "double": "double", "float": "double", "long": "long", "integer": "long",
    "string": "string", "boolean": "boolean",
}  # fmt: skip


class ModelLoadError(RendezvousError):
    """A configured model could not be resolved, downloaded, loaded or described."""

    status = 503
    code = "model_load"


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


@dataclass
class _Loaded:
    """One loaded model: what scores, which version, and the folder to remove afterwards."""

    version: str
    kind: str  # "sklearn" | "pyfunc" | "python"
    predict: Callable[[Mapping[str, Any]], Any]
    folder: str | None = None
    # Many rows in one call (a vectorised predict); None: one ``predict`` call per row.
    predict_many: Callable[[list[Mapping[str, Any]]], list[Any]] | None = None

    def discard(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


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
        log.info("model %s: %s now at version %s (was %s)", self.name, self.source,
                 new.version, old.version)  # fmt: skip
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


# ---- callables -------------------------------------------------------------------------


def _load_callable(spec: ModelSpec) -> _Loaded:
    target = spec.callable or ""
    module_name, _, func_name = target.partition(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(
            f"model {spec.name}: cannot import {target} ({exc}); check the module is on the "
            "Python path of the Flink workers (flink run -pyfs <project folder>) and the function name"
        ) from None
    if not callable(func):
        raise ModelLoadError(
            f"model {spec.name}: {target} is a {type(func).__name__}, not a function; "
            "point callable at a function taking the features dict"
        )
    params = dict(spec.params)
    try:
        inspect.signature(func).bind({}, **params)
    except TypeError as exc:
        raise ModelLoadError(
            f"model {spec.name}: {target}{inspect.signature(func)} cannot be called with the "
            f"features and params {params} ({exc}); fix params in the service configuration"
        ) from None
    except ValueError:  # no signature to check (a builtin)
        pass

    def predict(features: Mapping[str, Any]) -> Any:
        out = func(features, **params) if params else func(features)
        try:
            orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError as exc:
            raise TypeError(
                f"{target} returned a {type(out).__name__} that is not JSON-serialisable ({exc}); "
                "return a dict, list, str, number, bool or None"
            ) from None
        return out

    return _Loaded(version=target, kind="python", predict=predict)


# ---- MLflow model references -----------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """A parsed MLflow model URI. Exactly one of the groups is set:
    registry (``name`` with ``alias``, ``version`` or ``latest``), ``logged_model_id``,
    ``run_id`` with ``path``, or a local ``path`` alone."""

    uri: str
    name: str | None = None
    alias: str | None = None
    version: str | None = None
    latest: bool = False
    logged_model_id: str | None = None
    run_id: str | None = None
    path: str | None = None

    @property
    def registered(self) -> bool:
        return self.name is not None


def parse_model_uri(uri: str, *, model: str = "?") -> ModelRef:
    """Parse ``uri``; a malformed one raises :class:`ModelLoadError` naming ``model``."""

    def bad(why: str) -> ModelLoadError:
        return ModelLoadError(
            f"model {model}: cannot read the model URI {uri!r}: {why}; expected "
            "models:/<name>@<alias>, models:/<name>/<version>, runs:/<run id>/<path> or a folder"
        )

    if uri.startswith("models:"):
        rest = uri[len("models:") :].lstrip("/").rstrip("/")
        if not rest:
            raise bad("no model name")
        if "@" in rest:
            name, _, alias = rest.partition("@")
            if not name or not alias or "/" in alias:
                raise bad("an alias URI is models:/<name>@<alias>")
            return ModelRef(uri, name=name, alias=alias)
        if "/" not in rest:
            if rest.startswith("m-"):
                return ModelRef(uri, logged_model_id=rest)
            raise bad("no version or alias after the model name")
        name, _, ver = rest.partition("/")
        if ver.isdigit():
            return ModelRef(uri, name=name, version=str(int(ver)))
        if ver.lower() == "latest":
            return ModelRef(uri, name=name, latest=True)
        raise bad(
            f"{ver!r} is neither a version number nor 'latest' (stages are deprecated "
            "in MLflow; move an alias instead and use models:/<name>@<alias>)"
        )
    if uri.startswith("runs:"):
        rest = uri[len("runs:") :].lstrip("/").rstrip("/")
        run_id, _, path = rest.partition("/")
        if not run_id or not path:
            raise bad("a run URI is runs:/<run id>/<artifact path>, e.g. runs:/0a1b.../model")
        return ModelRef(uri, run_id=run_id, path=path)
    if uri.startswith("file:"):
        return ModelRef(uri, path=uri[len("file:") :].replace("///", "/", 1) or "/")
    if "://" in uri or uri.split(":", 1)[0] in ("http", "https", "s3", "gs", "dbfs"):
        raise bad("only registry, run and local-folder URIs are supported")
    return ModelRef(uri, path=uri)


class _Source:
    """Resolves one reference against one registry and loads versions of it."""

    def __init__(self, ref: ModelRef, model: str, tracking_uri: str | None) -> None:
        self.ref = ref
        self.model = model
        self.tracking_uri = tracking_uri
        self._client = None

    @property
    def where(self) -> str:
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "MLflow's default"

    @property
    def client(self):
        if self._client is None:
            if not self.tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI"):
                # MLflow would fall back to ./mlflow.db and answer from an empty registry.
                raise ModelLoadError(
                    f"model {self.model}: {self.ref.uri} needs an MLflow registry, and no "
                    "tracking URI is set; pass the tracking server's URL (the stack's is "
                    "http://127.0.0.1:5000 by default) or set MLFLOW_TRACKING_URI"
                )
            from mlflow import MlflowClient

            self._client = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client

    # -- resolution -----------------------------------------------------------------------

    def current_version(self) -> str:
        """The version the reference points at now (a registry call for aliases)."""
        ref = self.ref
        try:
            if ref.alias is not None:
                return str(self.client.get_model_version_by_alias(ref.name, ref.alias).version)
            if ref.version is not None:
                return str(self.client.get_model_version(ref.name, ref.version).version)
            if ref.latest:
                versions = self.client.search_model_versions(f"name = '{_quote(ref.name)}'")
                if not versions:
                    raise ModelLoadError(
                        f"model {self.model}: registered model {ref.name!r} has no versions in "
                        f"the registry at {self.where}; register one or fix the uri {ref.uri}"
                    )
                return str(max(int(v.version) for v in versions))
        except ModelLoadError:
            raise
        except Exception as exc:
            raise self._registry_error(exc) from None
        raise AssertionError(f"not a registry reference: {ref}")

    def artifact_uri(self, version: str | None) -> tuple[str, str]:
        """``(version, where the model's files are)`` for this reference."""
        ref = self.ref
        try:
            if ref.registered:
                assert version is not None
                return version, self.client.get_model_version_download_uri(ref.name, version)
            if ref.logged_model_id is not None:
                found = self.client.get_logged_model(ref.logged_model_id)
                return ref.logged_model_id, found.artifact_location
            if ref.run_id is not None:
                return self._run_artifact_uri()
        except ModelLoadError:
            raise
        except Exception as exc:
            raise self._registry_error(exc) from None
        return "local", ref.path or ""

    def _run_artifact_uri(self) -> tuple[str, str]:
        # MLflow 3 keeps a run's models as logged models; older runs keep them as artifacts.
        # Resolved here, with this client: MLflow's own runs:/ resolution uses the global URI.
        ref = self.ref
        client = self.client
        run = client.get_run(ref.run_id)
        first, _, rest = (ref.path or "").partition("/")
        location, model_id = None, None
        for logged in client.search_logged_models(
            experiment_ids=[run.info.experiment_id], filter_string=f"name = '{_quote(first)}'"
        ):
            if logged.source_run_id == ref.run_id:
                model_id = logged.model_id
                location = logged.artifact_location + (f"/{rest}" if rest else "")
                break
        if location is None:
            location = f"{run.info.artifact_uri.rstrip('/')}/{ref.path}"
        # The registered version made from this model, if there is one; else the run id.
        versions = client.search_model_versions(f"run_id = '{_quote(ref.run_id)}'")
        matching = [v for v in versions if model_id and v.source == f"models:/{model_id}"]
        matching = matching or (versions if len(versions) == 1 else [])
        version = str(max(int(v.version) for v in matching)) if matching else ref.run_id
        return version, location

    def _registry_error(self, exc: Exception) -> ModelLoadError:
        ref = self.ref
        text = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        missing = getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST" or any(
            s in str(exc).lower() for s in ("not found", "does not exist")
        )
        if not missing:
            unreachable = any(
                s in str(exc) for s in ("Max retries", "Connection refused", "Failed to establish")
            )
            if unreachable:
                return ModelLoadError(
                    f"model {self.model}: cannot reach the MLflow registry at {self.where} to "
                    f"resolve {ref.uri} ({text}); start it with `rendezvous up` or point the "
                    "job at the right tracking URI"
                )
            return ModelLoadError(
                f"model {self.model}: cannot resolve {ref.uri} in the registry at {self.where}: {text}"
            )
        if ref.run_id is not None:
            return ModelLoadError(
                f"model {self.model}: no run {ref.run_id!r} (or no {ref.path!r} in it) at "
                f"{self.where}; copy the URI from the run's page or use models:/<name>@<alias>"
            )
        if ref.logged_model_id is not None:
            return ModelLoadError(
                f"model {self.model}: no logged model {ref.logged_model_id!r} at {self.where}; "
                "check the id or register the model and use models:/<name>@<alias>"
            )
        try:
            registered = self.client.get_registered_model(ref.name)
        except Exception:
            return ModelLoadError(
                f"model {self.model}: no registered model {ref.name!r} in the registry at "
                f"{self.where} ({ref.uri}); register it (mlflow.sklearn.log_model(..., "
                "registered_model_name=...), `rendezvous demo` registers the demo models) or "
                "fix the uri"
            )
        aliases = dict(getattr(registered, "aliases", None) or {})
        known = ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items())) or "none"
        if ref.alias is not None:
            return ModelLoadError(
                f"model {self.model}: no alias {ref.alias!r} on registered model {ref.name!r} "
                f"at {self.where} (its aliases: {known}); set it with `rendezvous promote` or "
                f"MlflowClient().set_registered_model_alias({ref.name!r}, {ref.alias!r}, <version>)"
            )
        return ModelLoadError(
            f"model {self.model}: registered model {ref.name!r} has no version "
            f"{ref.version!r} at {self.where} (its aliases: {known}); list versions in the "
            "MLflow UI or use an alias, models:/<name>@<alias>"
        )

    # -- loading --------------------------------------------------------------------------

    def load(self, version: str | None = None) -> _Loaded:
        """Download and load ``version`` (default: what the reference points at now)."""
        if self.ref.registered and version is None:
            version = self.current_version()
        version, location = self.artifact_uri(version)
        if self.ref.path is not None and self.ref.run_id is None:
            if not os.path.isfile(os.path.join(location, "MLmodel")):
                raise ModelLoadError(
                    f"model {self.model}: {location!r} is not an MLflow model folder (no MLmodel "
                    "file); save one with mlflow.sklearn.save_model(model, path) or use a "
                    "models:/ URI"
                )
            return _load_folder(location, version, self.model, self.ref.uri, owned=False)
        folder = tempfile.mkdtemp(prefix=f"rdv-model-{self.model}-")
        try:
            import mlflow.artifacts

            local = mlflow.artifacts.download_artifacts(
                artifact_uri=location, dst_path=folder, tracking_uri=self.tracking_uri
            )
        except Exception as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise ModelLoadError(
                f"model {self.model}: cannot download {self.ref.uri} (version {version}, files "
                f"at {location}) from {self.where}: {str(exc).splitlines()[0][:300]}; check the "
                "artifact store is reachable from this machine (mlflow server "
                "--artifacts-destination)"
            ) from None
        return _load_folder(local, version, self.model, self.ref.uri, owned=True, folder=folder)

    def describe(self) -> Any:
        """The model's MLmodel description (mlflow.models.Model), downloading only that file."""
        from mlflow.models import Model

        version = self.current_version() if self.ref.registered else None
        version, location = self.artifact_uri(version)
        if self.ref.path is not None and self.ref.run_id is None:
            path = os.path.join(location, "MLmodel")
            if not os.path.isfile(path):
                raise ModelLoadError(
                    f"model {self.model}: {location!r} is not an MLflow model folder (no MLmodel file)"
                )
            return Model.load(path)
        with tempfile.TemporaryDirectory(prefix="rdv-mlmodel-") as folder:
            try:
                import mlflow.artifacts

                path = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{location.rstrip('/')}/MLmodel",
                    dst_path=folder,
                    tracking_uri=self.tracking_uri,
                )
            except Exception as exc:
                raise ModelLoadError(
                    f"model {self.model}: cannot download the MLmodel file of {self.ref.uri} "
                    f"from {self.where}: {str(exc).splitlines()[0][:300]}"
                ) from None
            return Model.load(path)


def _quote(value: str | None) -> str:
    return (value or "").replace("'", "\\'")


def _load_folder(
    local: str, version: str, model: str, uri: str, *, owned: bool, folder: str | None = None
) -> _Loaded:
    from mlflow.models import Model

    try:
        meta = Model.load(local)
    except Exception as exc:
        if owned:
            shutil.rmtree(folder or local, ignore_errors=True)
        raise ModelLoadError(
            f"model {model}: {uri} has no readable MLmodel file ({exc}); was it saved with "
            "mlflow.<flavour>.log_model or save_model?"
        ) from None
    columns, numeric = _signature_columns(meta.signature)
    try:
        if "sklearn" in meta.flavors and numeric:
            import mlflow.sklearn

            estimator = mlflow.sklearn.load_model(local)
            cols = _estimator_columns(estimator, columns)
            if cols:
                if owned:  # the estimator is in memory; the files are no longer needed
                    shutil.rmtree(folder or local, ignore_errors=True)
                kind, predictors = "onnx", _onnx_predictor(estimator, cols, model)
                if predictors is None:
                    kind, predictors = "sklearn", _sklearn_predictor(estimator, cols, model)
                predict, predict_many = predictors
                return _Loaded(
                    version=version, kind=kind, predict=predict, predict_many=predict_many
                )
        import mlflow.pyfunc

        pyfunc_model = mlflow.pyfunc.load_model(local)
    except ModelLoadError:
        raise
    except Exception as exc:
        if owned:
            shutil.rmtree(folder or local, ignore_errors=True)
        raise ModelLoadError(
            f"model {model}: cannot load {uri} (version {version}, flavours "
            f"{', '.join(meta.flavors)}): {type(exc).__name__}: {str(exc).splitlines()[0][:300]}; "
            "install the libraries the model was trained with in the job's Python environment"
        ) from None
    return _Loaded(
        version=version,
        kind="pyfunc",
        predict=_pyfunc_predictor(pyfunc_model, meta.signature, columns),
        folder=(folder or local) if owned else None,
    )


def _signature_columns(signature: Any) -> tuple[list[str] | None, bool]:
    """Input column names of a column-based signature, and whether all of them are numeric."""
    if signature is None or signature.inputs is None:
        return None, False
    inputs = signature.inputs
    if inputs.is_tensor_spec() or not inputs.has_input_names():
        return None, False
    cols = inputs.inputs
    numeric = all(getattr(c.type, "name", None) in NUMERIC_TYPES for c in cols)
    return [c.name for c in cols], numeric


# ---- predictors ------------------------------------------------------------------------


Predictors = tuple[
    Callable[[Mapping[str, Any]], Any], Callable[[list[Mapping[str, Any]]], list[Any]]
]


def _estimator_columns(estimator: Any, columns: list[str] | None) -> tuple[str, ...]:
    """The input columns in the estimator's order: its ``feature_names_in_`` when it was fitted
    on a DataFrame (authoritative), else the signature's columns; empty when unknown."""
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        return tuple(str(n) for n in names)
    return tuple(columns or ())


def _feature_matrix(
    cols: tuple[str, ...], model: str, dtype: Any
) -> Callable[[list[Mapping[str, Any]]], Any]:
    """Rows of features -> a (rows, columns) array in the model's column order."""
    import numpy as np

    width = len(cols)

    def matrix(rows: list[Mapping[str, Any]]) -> Any:
        try:
            values = [[features[c] for c in cols] for features in rows]
        except KeyError as exc:
            raise ValueError(
                f"model {model} needs feature {exc.args[0]!r}, which the request lacks; "
                f"it reads {', '.join(cols)}"
            ) from None
        return np.array(values, dtype=dtype).reshape(len(rows), width)

    return matrix


def _sklearn_predictor(estimator: Any, cols: tuple[str, ...], model: str) -> Predictors:
    """scikit-learn's own numpy path, for one row and for many."""
    import numpy as np

    if getattr(estimator, "feature_names_in_", None) is not None:
        # Fitted on a DataFrame: scoring a numpy array then warns on every call that X has no
        # feature names; that warning is expected here.
        warnings.filterwarnings(
            "ignore", message="X does not have valid feature names", category=UserWarning
        )
    width = len(cols)
    proba = getattr(estimator, "predict_proba", None)
    classes = getattr(estimator, "classes_", None)
    matrix = _feature_matrix(cols, model, np.float64)

    def row(features: Mapping[str, Any]) -> Any:
        return matrix([features])

    if proba is not None and classes is not None:
        proba = _forest_proba(estimator, width) or proba
        labels = [c.item() if hasattr(c, "item") else c for c in classes]

        def predict(features: Mapping[str, Any]) -> Any:
            p = proba(row(features))[0]
            i = int(p.argmax())
            return {"label": labels[i], "probability": float(p[i])}

        def predict_many(rows: list[Mapping[str, Any]]) -> list[Any]:
            p = proba(matrix(rows))
            best = p.argmax(axis=1).tolist()
            top = p[np.arange(len(best)), best].tolist()
            return [{"label": labels[i], "probability": q} for i, q in zip(best, top, strict=True)]

        return predict, predict_many

    plain_predict = estimator.predict

    def predict_value(features: Mapping[str, Any]) -> Any:
        return _plain(plain_predict(row(features)))

    def predict_values(rows: list[Mapping[str, Any]]) -> list[Any]:
        return [_native(v) for v in plain_predict(matrix(rows)).tolist()]

    return predict_value, predict_values


ONNX_TOLERANCE = 1e-5
TIE_TOLERANCE = 1e-6


def _onnx_predictor(estimator: Any, cols: tuple[str, ...], model: str) -> Predictors | None:
    """The estimator compiled to ONNX and run by ONNX Runtime, or None where that is not possible.

    scikit-learn validates its input and dispatches through several layers on every call, which
    costs 0.3-4 ms for a handful of rows; ONNX Runtime scores the same rows in 10-30 us. The
    compiled model is checked against the estimator at load time (labels equal, probabilities
    within ``ONNX_TOLERANCE``) on rows spread over the range of its training data where known;
    any difference, or an estimator skl2onnx cannot convert, keeps the scikit-learn path.
    ``RDV_SCORER_ONNX=0`` turns the compilation off.

    Each row runs on its own (about 8 us a row): a matrix product over several rows may round
    differently from one over a single row, and a request's score must not depend on which
    requests shared its batch (a replay batches differently).
    """
    if os.environ.get("RDV_SCORER_ONNX", "1") == "0":
        return None
    import numpy as np

    width = len(cols)
    classes = getattr(estimator, "classes_", None)
    classifier = classes is not None and hasattr(estimator, "predict_proba")
    try:
        import onnxruntime as ort
        from skl2onnx import to_onnx

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            options = {"zipmap": False} if classifier else None
            onx = to_onnx(
                estimator,
                np.zeros((1, width), dtype=np.float32),
                options={type(estimator): options} if options else None,
                target_opset=17,
            )
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        session = ort.InferenceSession(
            onx.SerializeToString(), so, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        log.info("model %s: scoring with scikit-learn (no ONNX: %s)", model, str(exc)[:200])
        return None
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]
    run = session.run
    matrix = _feature_matrix(cols, model, np.float32)

    if classifier:
        labels = [c.item() if hasattr(c, "item") else c for c in classes]
        which = [output_names.index(n) for n in output_names if "prob" in n]
        if not which:
            return None
        out_index = which[0]

        def probabilities(x: Any) -> Any:
            return run(None, {input_name: x})[out_index]

        def predict_many(rows: list[Mapping[str, Any]]) -> list[Any]:
            out = []
            for x in matrix(rows):
                p = probabilities(x[None, :])[0]
                # Classes tied within float32 rounding go to the first, as scikit-learn's
                # argmax over exact ties does (a forest's even vote, for one).
                i = int(np.flatnonzero(p >= p.max() - TIE_TOLERANCE)[0])
                out.append({"label": labels[i], "probability": float(p[i])})
            return out

        def check(x: Any) -> bool:
            ours = probabilities(x.astype(np.float32))
            theirs = estimator.predict_proba(x)
            return bool(
                (ours.argmax(axis=1) == theirs.argmax(axis=1)).all()
                and np.abs(ours - theirs).max() <= ONNX_TOLERANCE
            )

    else:

        def values(x: Any) -> Any:
            return run(None, {input_name: x})[0].reshape(len(x), -1)

        def predict_many(rows: list[Mapping[str, Any]]) -> list[Any]:
            out = [values(x[None, :])[0] for x in matrix(rows)]
            return [_native(v[0] if len(v) == 1 else v.tolist()) for v in out]

        def check(x: Any) -> bool:
            ours = values(x.astype(np.float32)).ravel()
            theirs = np.asarray(estimator.predict(x), dtype=np.float64).ravel()
            return bool(np.allclose(ours, theirs, rtol=ONNX_TOLERANCE, atol=ONNX_TOLERANCE))

    try:
        if not check(_probe_rows(estimator, width)):
            log.warning(
                "model %s: the ONNX compilation differs from scikit-learn; scoring with "
                "scikit-learn",
                model,
            )
            return None
    except Exception as exc:
        log.info("model %s: scoring with scikit-learn (ONNX check failed: %s)", model, exc)
        return None

    def predict(features: Mapping[str, Any]) -> Any:
        return predict_many([features])[0]

    return predict, predict_many


def _probe_rows(estimator: Any, width: int) -> Any:
    """Rows to compare two implementations of the estimator on: spread over the range its
    first step saw in training (a scaler's mean and scale) where it exposes one, else over
    [0, 30]; values are float32 so that both sides read the same numbers."""
    import numpy as np

    rng = np.random.default_rng(7)
    first = estimator.steps[0][1] if hasattr(estimator, "steps") else estimator
    mean = getattr(first, "mean_", None)
    scale = getattr(first, "scale_", None)
    if mean is not None and scale is not None and len(mean) == width:
        rows = mean + scale * rng.normal(size=(64, width))
    else:
        rows = rng.uniform(0, 30, size=(64, width))
    return rows.astype(np.float32).astype(np.float64)


def _forest_proba(estimator: Any, width: int) -> Callable[[Any], Any] | None:
    """A random forest's ``predict_proba`` for one row, without joblib: 5-10x faster.

    scikit-learn dispatches each tree through joblib even with ``n_jobs=1``, which costs
    about 50 us per tree for one row. This sums the trees' probabilities in a loop (what
    scikit-learn computes), through each tree's public ``predict_proba(X, check_input=False)``.
    It checks itself against the forest's own ``predict_proba`` at load time; rows with NaN or
    infinities go to the forest's own method, which validates them.
    """
    import numpy as np
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    if not isinstance(estimator, (RandomForestClassifier, ExtraTreesClassifier)):
        return None
    if getattr(estimator, "n_outputs_", None) != 1 or not estimator.estimators_:
        return None
    trees = [tree.predict_proba for tree in estimator.estimators_]
    count = float(len(trees))
    own = estimator.predict_proba

    def proba(x: Any) -> Any:
        if not np.isfinite(x).all():
            return own(x)
        x32 = x.astype(np.float32)
        total = trees[0](x32, check_input=False).astype(np.float64)
        for tree in trees[1:]:
            total += tree(x32, check_input=False)
        return total / count

    probes = np.array([np.zeros(width), np.ones(width)], dtype=np.float64)
    try:
        same = all(np.allclose(proba(p[None, :]), own(p[None, :])) for p in probes)
    except Exception:
        same = False
    return proba if same else None


def _pyfunc_predictor(
    pyfunc_model: Any, signature: Any, columns: list[str] | None
) -> Callable[[Mapping[str, Any]], Any]:
    import pandas as pd

    # JSON numbers arrive as float64/int64; MLflow's schema check refuses to narrow them to
    # the signature's float/integer columns, so narrow them here.
    narrow = {"float": "float32", "integer": "int32"}
    casts = {}
    if columns is not None:
        for col in signature.inputs.inputs:
            kind = getattr(col.type, "name", None)
            if kind in narrow:
                casts[col.name] = narrow[kind]

    def predict(features: Mapping[str, Any]) -> Any:
        frame = pd.DataFrame([dict(features)], columns=columns)
        if casts:
            frame = frame.astype(casts)
        return _plain(pyfunc_model.predict(frame))

    return predict


def _plain(prediction: Any) -> Any:
    """One row's prediction as plain JSON values."""
    import numpy as np
    import pandas as pd

    if isinstance(prediction, pd.DataFrame):
        rows = prediction.to_dict(orient="records")
        return _native(rows[0] if len(rows) == 1 else rows)
    if isinstance(prediction, pd.Series):
        prediction = prediction.to_numpy()
    if isinstance(prediction, np.ndarray):
        if prediction.ndim >= 1 and prediction.shape[0] == 1:
            prediction = prediction[0]
        return _native(prediction.tolist() if isinstance(prediction, np.ndarray) else prediction)
    if isinstance(prediction, (list, tuple)) and len(prediction) == 1:
        prediction = prediction[0]
    return _native(prediction)


def _native(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _native(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_native(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


# ---- following an alias ----------------------------------------------------------------


class _AliasFollower:
    """Checks an alias in the background; hands a newly loaded version to the scoring thread."""

    def __init__(
        self,
        source: _Source,
        every_s: float,
        clock: Callable[[], float],
        run_in_background: Callable[[Callable[[], None]], object] | None,
    ) -> None:
        self.source = source
        self.every_s = every_s
        self.clock = clock
        self.run = run_in_background or _daemon_thread
        self.last_check = clock()
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._busy = False
        self._ready: _Loaded | None = None
        self._closed = False

    def poll(self, current_version: str) -> _Loaded | None:
        now = self.clock()
        start = False
        with self._lock:
            if not self._busy and self._ready is None and now - self.last_check >= self.every_s:
                self._busy, start, self.last_check = True, True, now
        if start:
            self.run(lambda: self._check(current_version))
        with self._lock:
            ready, self._ready = self._ready, None
        return ready

    def _check(self, current_version: str) -> None:
        loaded = None
        try:
            version = self.source.current_version()
            if version != current_version:
                loaded = self.source.load(version)
            self.last_error = None
        except Exception as exc:
            self.last_error = str(exc)
            log.warning("model %s: keeping version %s; alias check failed: %s",
                        self.source.model, current_version, exc)  # fmt: skip
        with self._lock:
            self._busy = False
            if loaded is not None and self._closed:
                loaded.discard()
            elif loaded is not None:
                self._ready = loaded

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._ready is not None:
                self._ready.discard()
                self._ready = None


def _daemon_thread(task: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=task, name="rdv-alias-check", daemon=True)
    thread.start()
    return thread


# ---- input schema from a signature -----------------------------------------------------


def input_fields_from_signature(uri: str, tracking_uri: str | None) -> tuple[FieldSpec, ...]:
    """A service's input fields from the MLflow signature of the model at ``uri``.

    ColSpec types map to field types: double/float -> double, long/integer -> long, string,
    boolean; optional columns become fields with ``required=False``. Only the MLmodel file is
    downloaded.
    """
    ref = parse_model_uri(uri, model=uri)
    meta = _Source(ref, uri, tracking_uri).describe()
    sig = meta.signature
    fix = (
        "log the model with signature=mlflow.models.infer_signature(X, y), or declare the "
        "service's input fields in the configuration"
    )
    if sig is None or sig.inputs is None:
        raise ModelLoadError(f"model {uri} has no signature, so its inputs are unknown; {fix}")
    if sig.inputs.is_tensor_spec() or not sig.inputs.has_input_names():
        raise ModelLoadError(
            f"model {uri} has a tensor or unnamed signature; input fields need named columns; {fix}"
        )
    fields = []
    for col in sig.inputs.inputs:
        kind = SIGNATURE_TYPES.get(getattr(col.type, "name", ""))
        if kind is None:
            raise ModelLoadError(
                f"model {uri}: input column {col.name!r} has type {col.type}, which a service "
                f"input cannot carry (supported: {', '.join(SIGNATURE_TYPES)}); {fix}"
            )
        fields.append(FieldSpec(name=col.name, type=kind, required=bool(col.required)))
    return tuple(fields)
