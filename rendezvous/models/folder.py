"""An MLflow model folder on local disk, loaded into the fastest predictor it allows.

The sklearn flavour with numeric signature columns gets the numpy (or ONNX) fast path; every
other model is loaded with ``mlflow.pyfunc``.
"""

from __future__ import annotations

import shutil
from typing import Any

from rendezvous.models.errors import ModelLoadError
from rendezvous.models.loaded import _Loaded
from rendezvous.models.predictors import (
    _estimator_columns,
    _onnx_predictor,
    _pyfunc_predictor,
    _sklearn_predictor,
)

NUMERIC_TYPES = ("double", "float", "long", "integer", "boolean")


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
