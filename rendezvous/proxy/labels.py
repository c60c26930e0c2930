"""Reading a feedback body and checking its label against the service's outputs; pure, no I/O.

``POST /v1/requests/{request_id}/feedback`` takes ``{"label": <value>}`` and optionally
``observed_ms`` (epoch ms when the outcome happened, an integer from 0 to 2**53 - 1) and ``source`` (who or
what gave the label, a string of at most :data:`MAX_SOURCE` characters). Any other key is an
error, so that a misspelled field is not silently dropped.

The label's type rule. The configuration does not declare a service's output type, so the
label is held to the answer of the request it is for (the result this replica saw, or the
archived decision), read the way ``rendezvous report`` reads it: an output object's ``label``
field (a classifier answers ``{"label": 1, "probability": 0.93}``), or the output itself when it
is a plain value (a regressor's number):

==================  ============================================================
answer's label      the true label must be
==================  ============================================================
an integer          an integer; a number with no fraction (``1.0``) is taken as one
a number            a number (an integer is taken as a float)
a string            a string
a boolean           a boolean
none (no answer)    a string, a number or a boolean
==================  ============================================================

"No answer": the request got an error answer and no model scored it ok, or the output has no
label (an object without a ``label`` field, a list). A label is never null, an object or a
list. The rule compares JSON types, not values: a class the models never predicted is a valid
label (that is what a wrong model meets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from rendezvous.proxy.errors import LabelTypeMismatch, SchemaViolation

MAX_SOURCE = 200
FIELDS = ("label", "observed_ms", "source")
# Integers a float holds exactly, as for the input fields of type long.
_MAX_EXACT = 2**53 - 1
# The largest observed_ms taken: the largest integer a JSON number carries exactly.
MAX_OBSERVED_MS = _MAX_EXACT


@dataclass(frozen=True, slots=True)
class FeedbackBody:
    """A feedback body, checked: the label as sent (any JSON scalar) and the optional fields."""

    label: Any
    observed_ms: int | None = None
    source: str | None = None


def parse_feedback(body: Any) -> FeedbackBody:
    """``body`` (parsed JSON) as a :class:`FeedbackBody`, or :class:`SchemaViolation` naming
    the field and the fix."""
    if not isinstance(body, dict):
        raise SchemaViolation(
            f'feedback body must be a JSON object such as {{"label": 1}}, got '
            f"{_json_kind(body)}; send the true outcome in the field 'label'",
            field=None,
        )
    extra = sorted(set(body) - set(FIELDS))
    if extra:
        raise SchemaViolation(
            f"feedback has no field(s) {', '.join(repr(k[:64]) for k in extra)}; its fields are "
            f"label (required), observed_ms and source (optional); remove the unknown field(s)",
            field=extra[0][:64],
        )
    if "label" not in body or body["label"] is None:
        got = "null" if "label" in body else "nothing (the field is missing)"
        raise SchemaViolation(
            f"feedback field 'label' is required, got {got}; send the true outcome, such as "
            f'{{"label": 1}} for a classifier',
            field="label",
        )
    label = body["label"]
    if isinstance(label, (dict, list)):
        raise SchemaViolation(
            f"feedback field 'label' must be a string, a number or a boolean, got "
            f'{_json_kind(label)}; send the one true label, such as 1 or "fraud"',
            field="label",
        )
    observed = body.get("observed_ms")
    if observed is not None and not _whole(observed, minimum=0):
        raise SchemaViolation(
            "feedback field 'observed_ms' must be epoch milliseconds (an integer from 0 to "
            f"{MAX_OBSERVED_MS}), got "
            f"{_show(observed)}; send when the outcome happened, or leave the field out",
            field="observed_ms",
        )
    source = body.get("source")
    if source is not None and (not isinstance(source, str) or len(source) > MAX_SOURCE):
        raise SchemaViolation(
            f"feedback field 'source' must be a string of at most {MAX_SOURCE} characters, got "
            f"{_show(source)}; send a short name of who or what gave the label, or leave it out",
            field="source",
        )
    return FeedbackBody(label, None if observed is None else int(observed), source)


def answer_label(output: str | None) -> Any:
    """The label of an answer (its output's JSON), as the report reads it; None when none."""
    if output is None:
        return None
    try:
        parsed = orjson.loads(output)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, dict):
        parsed = parsed.get("label")
    return None if isinstance(parsed, (dict, list)) else parsed


def label_kind(value: Any) -> str | None:
    """``integer``, ``number``, ``string`` or ``boolean``: the JSON type the rule compares."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def check_label(label: Any, output: str | None, *, request_id: str, service: str) -> Any:
    """``label`` normalised for the rule of the module docstring against the answer ``output``
    of the request; :class:`LabelTypeMismatch` when it breaks it."""
    expected = label_kind(answer_label(output))
    got = label_kind(label)
    if expected is None or expected == got:
        return label
    if expected == "integer" and got == "number" and _whole(label):
        return int(label)
    if expected == "number" and got == "integer":
        return float(label)
    shown = answer_label(output)
    hint = {
        "integer": "an integer class such as 0 or 1",
        "number": "a number",
        "string": 'a string such as "fraud"',
        "boolean": "true or false",
    }[expected]
    raise LabelTypeMismatch(
        f"feedback field 'label' for request {request_id} of service {service!r} must be "
        f"{expected_text(expected)}, as the service answered it (label {_show(shown)}), got "
        f"{got} {_show(label)}; send {hint}",
        field="label",
        request_id=request_id,
    )


def expected_text(kind: str) -> str:
    return {"integer": "an integer", "number": "a number"}.get(kind, f"a {kind}")


def encoded(label: Any) -> str:
    """The label as the JSON stored on the topic and in the archive."""
    return orjson.dumps(label).decode()


def _whole(value: Any, *, minimum: int = -_MAX_EXACT) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        return False
    return minimum <= value <= _MAX_EXACT


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return label_kind(value) or type(value).__name__


def _show(value: Any) -> str:
    text = orjson.dumps(value).decode() if value is not None else "null"
    return text if len(text) <= 40 else text[:37] + "..."
