"""Check a request body against a service's input fields; pure, no I/O.

A :class:`Validator` is built once per service (at app start) and then called per request:
it returns the normalised body (ints widened to floats for ``double`` fields, defaults
applied) or raises :class:`~rendezvous.proxy.errors.SchemaViolation` naming the field, the
expected type, what was got, and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson

from rendezvous.config import FieldSpec, ServiceSpec
from rendezvous.errors import ConfigError
from rendezvous.proxy.errors import SchemaViolation

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_EXACT = 2**53  # every integer of smaller magnitude is a float exactly


class _Bad:
    """Returned by a field check that rejects the value (cheaper than raising in the hot path)."""


BAD = _Bad()


def _double(v: Any) -> Any:
    t = type(v)
    if t is float:
        return v if math.isfinite(v) else BAD
    if t is int:  # bool is a subclass of int, but `type(True) is int` is False
        return float(v)
    return BAD


def _long(v: Any) -> Any:
    t = type(v)
    if t is int:
        return v if _LONG_MIN <= v <= _LONG_MAX else BAD
    # A float stands for an integer only where it is exact: the JSON parser also turns an
    # integer literal beyond 64 bits into a float, which must not pass as the nearest long.
    if t is float and math.isfinite(v) and v.is_integer() and -_EXACT < v < _EXACT:
        return int(v)
    return BAD


def _string(v: Any) -> Any:
    return v if type(v) is str else BAD


def _boolean(v: Any) -> Any:
    return v if type(v) is bool else BAD


CHECKS: dict[str, Callable[[Any], Any]] = {
    "double": _double,
    "long": _long,
    "string": _string,
    "boolean": _boolean,
}
EXPECTED = {
    "double": "double (a finite JSON number)",
    "long": "long (a JSON integer within 64 bits)",
    "string": "string (a JSON string)",
    "boolean": "boolean (true or false)",
}
EXAMPLE = {"double": 1.5, "long": 42, "string": "text", "boolean": True}


def json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number" if math.isfinite(v) else "non-finite number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _show(v: Any, limit: int = 40) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    try:
        text = orjson.dumps(v).decode()
    except (TypeError, orjson.JSONEncodeError):
        text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Validator:
    """The pre-built check for one service's input; call it with the parsed JSON body."""

    __slots__ = ("service", "fields", "_plan", "_names", "_open")

    def __init__(self, spec: ServiceSpec) -> None:
        self.service = spec.name
        self.fields: tuple[FieldSpec, ...] = spec.input_fields or ()
        # Input taken from a model signature is only known to the scorers; accept any object.
        self._open = spec.input_fields is None
        self._names = frozenset(f.name for f in self.fields)
        plan = []
        for f in self.fields:
            check = CHECKS[f.type]
            if f.default is not None and check(f.default) is BAD:
                raise ConfigError(
                    f"service {spec.name!r}: input field {f.name!r} has default "
                    f"{_show(f.default)} ({json_type(f.default)}), expected {EXPECTED[f.type]}; "
                    f"fix the default in the configuration"
                )
            default = f.default if f.default is None else check(f.default)
            plan.append((f.name, check, f.required, default, f))
        self._plan = tuple(plan)

    def __call__(self, body: Any) -> dict[str, Any]:
        if type(body) is not dict:
            raise SchemaViolation(
                f"service {self.service!r} expects a JSON object"
                + (f" with fields {self._describe()}" if self.fields else "")
                + f", got {json_type(body)} {_show(body)}; send a JSON object such as "
                + self._example(),
                field=None,
            )
        if self._open:
            return body
        if not self._names.issuperset(body):
            extra = sorted(set(body) - self._names)
            raise SchemaViolation(
                f"service {self.service!r} does not accept field(s) "
                f"{', '.join(repr(e) for e in extra)}; its fields are {self._describe()}; "
                f"remove the unknown field(s)",
                field=extra[0],
            )
        out: dict[str, Any] = {}
        for name, check, required, default, spec in self._plan:
            value = body.get(name)
            if value is None:
                if required:
                    got = "null" if name in body else "nothing (the field is missing)"
                    raise SchemaViolation(
                        f"service {self.service!r}: field {name!r} is required, expected "
                        f"{EXPECTED[spec.type]}, got {got}; add it to the body, e.g. "
                        f"{_show({name: EXAMPLE[spec.type]})}",
                        field=name,
                    )
                out[name] = default
                continue
            checked = check(value)
            if checked is BAD:
                raise SchemaViolation(
                    f"service {self.service!r}: field {name!r} expected {EXPECTED[spec.type]}, "
                    f"got {json_type(value)} {_show(value)}; send e.g. "
                    f"{_show({name: EXAMPLE[spec.type]})}",
                    field=name,
                )
            out[name] = checked
        return out

    def _describe(self) -> str:
        parts = []
        for f in self.fields:
            if f.required:
                parts.append(f"{f.name} ({f.type}, required)")
            else:
                parts.append(f"{f.name} ({f.type}, optional, default {_show(f.default)})")
        return ", ".join(parts)

    def _example(self) -> str:
        return _show({f.name: EXAMPLE[f.type] for f in self.fields}, limit=200)


def validate(service_spec: ServiceSpec, body: Any) -> dict[str, Any]:
    """Check ``body`` against ``service_spec``'s input fields; return the normalised body.

    Raises :class:`SchemaViolation` (HTTP 422) naming the field. For the hot path build a
    :class:`Validator` once per service and call it instead.
    """
    return Validator(service_spec)(body)
