"""A service's input fields read from the MLflow signature of its model."""

from __future__ import annotations

from rendezvous.config import FieldSpec
from rendezvous.models.errors import ModelLoadError
from rendezvous.models.registry import _Source
from rendezvous.models.uri import parse_model_uri

SIGNATURE_TYPES = {
    "double": "double",
    "float": "double",
    "long": "long",
    "integer": "long",
    "string": "string",
    "boolean": "boolean",
}


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
