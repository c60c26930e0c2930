"""Predictors: the functions that score one row and many rows with a loaded model.

scikit-learn's numpy path, the same estimator compiled to ONNX, a joblib-free random forest,
and ``mlflow.pyfunc`` with a one-row DataFrame; predictions become plain JSON values.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

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
