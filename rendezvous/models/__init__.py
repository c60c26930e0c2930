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

The package, one concern per module:

- ``scorer``: :class:`Scorer`, :func:`load_scorer`, :func:`single_threaded_math`
- ``uri``: :class:`ModelRef` and :func:`parse_model_uri`
- ``registry``: the MLflow registry client of one reference (resolve, download)
- ``folder``: a local MLflow model folder loaded by flavour
- ``predictors``: the scikit-learn, ONNX and pyfunc prediction paths
- ``callables``: plain Python functions as models
- ``aliases``: following an alias in the background
- ``signature``: a service's input fields from a model's signature
- ``loaded``, ``errors``: the loaded-model record and :class:`ModelLoadError`
"""

from rendezvous.models.errors import ModelLoadError
from rendezvous.models.folder import NUMERIC_TYPES
from rendezvous.models.predictors import ONNX_TOLERANCE, TIE_TOLERANCE, Predictors
from rendezvous.models.scorer import (
    DEFAULT_FOLLOW_ALIAS_S,
    THREAD_VARS,
    Scorer,
    load_scorer,
    single_threaded_math,
)
from rendezvous.models.signature import SIGNATURE_TYPES, input_fields_from_signature
from rendezvous.models.uri import ModelRef, parse_model_uri

__all__ = [
    "DEFAULT_FOLLOW_ALIAS_S",
    "NUMERIC_TYPES",
    "ONNX_TOLERANCE",
    "SIGNATURE_TYPES",
    "THREAD_VARS",
    "TIE_TOLERANCE",
    "ModelLoadError",
    "ModelRef",
    "Predictors",
    "Scorer",
    "input_fields_from_signature",
    "load_scorer",
    "parse_model_uri",
    "single_threaded_math",
]
