"""The demo's models: trained here, on data that ships with scikit-learn, and registered in MLflow.

Wisconsin breast cancer (``sklearn.datasets.load_breast_cancer``; class 0 malignant, 1 benign),
eight of its thirty measurements under snake_case names, a stratified 70/30 split:

| alias      | model                                           | role in the demo           |
|------------|-------------------------------------------------|----------------------------|
| champion   | GradientBoostingClassifier (100 trees, depth 3) | answers first              |
| challenger | RandomForestClassifier (50 trees)               | shadow, compared offline   |
| canary     | StandardScaler + LogisticRegression             | steady reference, 2nd pick |
| backstop   | ``udfs.rules:tumour_size_rule`` (not registered)| fast rule, last resort     |

All three trained models are versions of **one** registered model (default ``breast_cancer``)
with the aliases ``champion``, ``challenger`` and ``canary``. They share one input signature,
so any version can hold any alias, and moving the ``champion`` alias to another version is one
registry call (``MlflowClient().set_registered_model_alias``). Score jobs read
``models:/breast_cancer@champion`` and follow the alias; the configuration never changes. With
one registered model per role, that would have to copy a version across models.
``rendezvous promote`` is the other way to change who answers: it leaves the aliases alone and
puts a model first in the service's preference order (a new policy version on the control
topic).

Running :func:`register_demo_models` again registers three new versions and moves the aliases
to them, so the aliases always name one consistent training run.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rendezvous.errors import RendezvousError

DEFAULT_NAME = "breast_cancer"
EXPERIMENT = "rendezvous-demo"
FEATURES = (
    "mean_radius",
    "mean_texture",
    "mean_smoothness",
    "mean_compactness",
    "mean_concave_points",
    "mean_symmetry",
    "worst_radius",
    "worst_concave_points",
)
ALIASES = ("champion", "challenger", "canary")
BACKSTOP = "udfs.rules:tumour_size_rule"
SPLIT_SEED = 42
TEST_FRACTION = 0.3
SLA_MS = 100

# skops (MLflow's default format) refuses types it does not trust; trees store raw node
# indices, so their Tree type must be trusted explicitly. We trained these models ourselves.
_TRUSTED_TYPES = {
    "champion": ["sklearn.tree._tree.Tree"],
    "challenger": ["sklearn.tree._tree.Tree"],
    "canary": None,
}


class DemoError(RendezvousError):
    code = "demo"


@dataclass(frozen=True)
class DemoData:
    x_train: Any  # pandas DataFrames with the FEATURES columns, Series of 0/1 labels
    x_test: Any
    y_train: Any
    y_test: Any


@functools.lru_cache(maxsize=1)
def demo_data() -> DemoData:
    """The eight-feature data set, split the same way every time."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.data.rename(columns=lambda c: c.replace(" ", "_"))[list(FEATURES)]
    x_train, x_test, y_train, y_test = train_test_split(
        frame,
        bunch.target,
        test_size=TEST_FRACTION,
        random_state=SPLIT_SEED,
        stratify=bunch.target,
    )
    return DemoData(x_train, x_test, y_train, y_test)


def build_estimators() -> dict[str, Any]:
    """The untrained estimators, by alias."""
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "champion": GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0),
        "challenger": RandomForestClassifier(n_estimators=50, random_state=0),
        "canary": Pipeline(
            [("scale", StandardScaler()), ("logreg", LogisticRegression(max_iter=1000))]
        ),
    }


def train_demo_models() -> dict[str, tuple[Any, float]]:
    """``{alias: (fitted estimator, held-out accuracy)}``, fitted on the training split."""
    data = demo_data()
    trained = {}
    for alias, estimator in build_estimators().items():
        estimator.fit(data.x_train, data.y_train)
        accuracy = float((estimator.predict(data.x_test) == data.y_test).mean())
        trained[alias] = (estimator, accuracy)
    return trained


def backstop_accuracy() -> float:
    """Held-out accuracy of the rule backstop."""
    from udfs.rules import tumour_size_rule

    data = demo_data()
    labels = [tumour_size_rule(row)["label"] for row in data.x_test.to_dict(orient="records")]
    return float((data.y_test.to_numpy() == labels).mean())


def register_demo_models(tracking_uri: str, *, name: str = DEFAULT_NAME) -> dict[str, Any]:
    """Train the demo models, log them to ``tracking_uri`` and register them as ``name``.

    Returns ``{"name", "experiment", "tracking_uri", "models": {alias: {"version",
    "algorithm", "accuracy", "uri", "run_id"}, "backstop": {"callable", "accuracy"}}}``.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    data = demo_data()
    trained = train_demo_models()
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        experiment_id = _experiment(client)
    except Exception as exc:
        raise DemoError(
            f"cannot reach MLflow at {tracking_uri} to register the demo models "
            f"({str(exc).splitlines()[0][:200]}); start it with `rendezvous up`"
        ) from None
    requirements = mlflow.sklearn.get_default_pip_requirements(include_skops=True)
    models: dict[str, Any] = {}
    # log_model and start_run use MLflow's process-wide URI; restore it afterwards.
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        for alias, (estimator, accuracy) in trained.items():
            algorithm = type(estimator).__name__
            if algorithm == "Pipeline":
                algorithm = "+".join(type(step).__name__ for _, step in estimator.steps)
            with mlflow.start_run(experiment_id=experiment_id, run_name=f"{alias}-{algorithm}"):
                mlflow.log_params(_short_params(estimator))
                mlflow.log_metric("accuracy", accuracy)
                info = mlflow.sklearn.log_model(
                    estimator,
                    name="model",
                    signature=infer_signature(data.x_train, estimator.predict(data.x_train)),
                    input_example=data.x_train.head(2),
                    registered_model_name=name,
                    pip_requirements=requirements,
                    skops_trusted_types=_TRUSTED_TYPES[alias],
                )
            version = str(info.registered_model_version)
            client.set_model_version_tag(name, version, "algorithm", algorithm)
            client.set_model_version_tag(name, version, "accuracy", f"{accuracy:.4f}")
            models[alias] = {
                "version": version,
                "algorithm": algorithm,
                "accuracy": round(accuracy, 4),
                "uri": f"models:/{name}@{alias}",
                "run_id": info.run_id,
            }
    finally:
        mlflow.set_tracking_uri(previous)
    # Aliases move only once every version exists: readers never see a half-registered set.
    for alias, info in models.items():
        client.set_registered_model_alias(name, alias, info["version"])
    client.update_registered_model(
        name,
        description=(
            "Rendezvous demo: breast cancer classifiers (0 malignant, 1 benign) on "
            f"{', '.join(FEATURES)}. Aliases: champion, challenger, canary."
        ),
    )
    models["backstop"] = {"callable": BACKSTOP, "accuracy": round(backstop_accuracy(), 4)}
    return {"name": name, "experiment": EXPERIMENT, "tracking_uri": tracking_uri, "models": models}


def _experiment(client: Any) -> str:
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is None:
        return client.create_experiment(EXPERIMENT)
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    return found.experiment_id


def _short_params(estimator: Any) -> dict[str, Any]:
    """The estimator's scalar hyper-parameters (a Pipeline's, step__name)."""
    return {
        k: v
        for k, v in estimator.get_params(deep=True).items()
        if isinstance(v, (int, float, str, bool)) or v is None
    }


def demo_requests(n: int, seed: int = 0) -> list[dict[str, float]]:
    """``n`` request bodies drawn (with replacement) from the held-out split: feature dicts."""
    import numpy as np

    if n < 0:
        raise ValueError(f"demo_requests: n must be >= 0, got {n}")
    rows = demo_data().x_test.to_dict(orient="records")
    picks = np.random.default_rng(seed).integers(0, len(rows), size=n)
    return [{k: float(v) for k, v in rows[i].items()} for i in picks]


def demo_service_config(name: str = DEFAULT_NAME, *, sla_ms: int = SLA_MS) -> dict[str, Any]:
    """The demo service's configuration (the value under ``services.<service>``).

    The models are named after their aliases: after the ``champion`` alias moves, the model
    called ``champion`` is whichever version holds it (``rendezvous promote`` changes the
    preference order instead, and leaves the names and aliases as they are). The challenger
    is a shadow (not in the default preference); the decoy archives what every model saw.
    """
    models: list[Mapping[str, Any]] = [
        {"name": alias, "role": alias, "uri": f"models:/{name}@{alias}"} for alias in ALIASES
    ]
    models.append({"name": "backstop", "role": "backstop", "callable": BACKSTOP})
    models.append({"name": "decoy", "role": "decoy"})
    return {
        "sla_ms": sla_ms,
        "models": models,
        # The proxy validates bodies against the champion's MLflow signature.
        "input": {"from_model": "champion"},
    }
