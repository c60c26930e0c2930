"""Turn a configured model into a scorer: an MLflow model or a plain Python callable.

Pure Python (no pyflink). Load in a job's ``open()``, never at import.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any

from rendezvous.config import ModelSpec
from rendezvous.errors import RendezvousError


class ModelLoadError(RendezvousError):
    code = "model_load"


def single_threaded_math() -> None:
    """One BLAS/OpenMP thread: multi-threaded single-row predictions are far slower at the tail."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


@dataclass
class CallableScorer:
    name: str
    role: str
    version: str
    func: Any
    params: dict = field(default_factory=dict)

    def score(self, features: dict[str, Any]) -> Any:
        return self.func(features, **self.params)

    def close(self) -> None:
        pass


@dataclass
class MlflowScorer:
    name: str
    role: str
    version: str
    model: Any
    columns: list[str] | None
    proba: bool

    def score(self, features: dict[str, Any]) -> Any:
        if self.columns is None:
            import pandas as pd

            return _plain(self.model.predict(pd.DataFrame([features])))
        import numpy as np

        try:
            row = np.array([[features[c] for c in self.columns]], dtype=float)
        except KeyError as exc:
            raise ValueError(
                f"feature {exc.args[0]!r} is missing; the model needs {', '.join(self.columns)}"
            ) from None
        if self.proba:
            p = self.model.predict_proba(row)[0]
            label = int(p.argmax())
            return {"label": label, "probability": float(p[label])}
        return _plain(self.model.predict(row))

    def close(self) -> None:
        self.model = None


def _plain(prediction: Any) -> Any:
    value = prediction[0] if hasattr(prediction, "__len__") and len(prediction) == 1 else prediction
    return (
        value.item()
        if hasattr(value, "item")
        else (value.tolist() if hasattr(value, "tolist") else value)
    )


def load_scorer(spec: ModelSpec, *, tracking_uri: str | None) -> CallableScorer | MlflowScorer:
    if spec.callable is not None:
        module_name, func_name = spec.callable.split(":")
        try:
            func = getattr(importlib.import_module(module_name), func_name)
        except (ImportError, AttributeError) as exc:
            raise ModelLoadError(
                f"model {spec.name}: cannot import {spec.callable} ({exc}); check the module is on the "
                "Python path of the Flink workers and the function name"
            ) from None
        return CallableScorer(spec.name, spec.role, spec.callable, func, dict(spec.params))
    single_threaded_math()
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    uri = spec.uri or ""
    version = _resolve_version(uri)
    try:
        info = mlflow.models.get_model_info(uri)
    except Exception as exc:
        raise ModelLoadError(
            f"model {spec.name}: cannot load {uri} from {tracking_uri or 'the default tracking URI'}: {exc}; "
            "check the name, the alias or version (`rendezvous models`) and that MLflow is up"
        ) from None
    columns = None
    if (
        info.signature is not None
        and info.signature.inputs is not None
        and info.signature.inputs.has_input_names()
    ):
        columns = info.signature.inputs.input_names()
    if "sklearn" in (info.flavors or {}) and columns is not None:
        model = mlflow.sklearn.load_model(uri)
        return MlflowScorer(
            spec.name, spec.role, version, model, columns, hasattr(model, "predict_proba")
        )
    return MlflowScorer(spec.name, spec.role, version, mlflow.pyfunc.load_model(uri), None, False)


def _resolve_version(uri: str) -> str:
    if not uri.startswith("models:/"):
        return uri
    from mlflow import MlflowClient

    name_ref = uri[len("models:/") :]
    client = MlflowClient()
    try:
        if "@" in name_ref:
            name, alias = name_ref.split("@", 1)
            return str(client.get_model_version_by_alias(name, alias).version)
        name, _, ver = name_ref.partition("/")
        return str(client.get_model_version(name, ver).version)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot resolve {uri}: {exc}; set the alias with "
            "MlflowClient().set_registered_model_alias(name, alias, version)"
        ) from None
