"""Request body validation against a service's input fields (pure)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from rendezvous import config
from rendezvous.errors import ConfigError
from rendezvous.proxy.errors import SchemaViolation
from rendezvous.proxy.validation import Validator, validate

pytestmark = pytest.mark.unit


def service(inputs: dict[str, Any]) -> config.ServiceSpec:
    conf = config.parse(
        {
            "services": {
                "s": {
                    "sla_ms": 50,
                    "models": [{"name": "m", "role": "champion", "callable": "a.b:c"}],
                    "input": inputs,
                }
            }
        }
    )
    return conf.services["s"]


SPEC = service(
    {
        "amount": "double",
        "count": "long",
        "name": {"type": "string", "required": False, "default": "anon"},
        "flag": {"type": "boolean", "required": False},
    }
)


def violation(body: Any, spec: config.ServiceSpec = SPEC) -> SchemaViolation:
    with pytest.raises(SchemaViolation) as info:
        validate(spec, body)
    assert info.value.status == 422 and info.value.code == "schema"
    return info.value


def test_valid_body_is_normalised() -> None:
    out = validate(SPEC, {"amount": 2, "count": 3})
    assert out == {"amount": 2.0, "count": 3, "name": "anon", "flag": None}
    assert type(out["amount"]) is float


def test_integral_float_is_accepted_for_long() -> None:
    out = validate(SPEC, {"amount": 1.5, "count": 3.0, "name": "x", "flag": False})
    assert out == {"amount": 1.5, "count": 3, "name": "x", "flag": False}
    assert type(out["count"]) is int


@pytest.mark.parametrize("literal", [b"-9223372036854775809", b"9223372036854775808", b"1e300"])
def test_an_integer_beyond_64_bits_is_not_taken_for_the_nearest_long(literal: bytes) -> None:
    # the JSON parser reads such a literal as a float; it must not pass as -2**63 or 2**63 - 1
    import orjson

    body = orjson.loads(b'{"amount": 1.0, "count": ' + literal + b"}")
    assert violation(body).field == "count"


def test_null_optional_field_takes_the_default() -> None:
    assert validate(SPEC, {"amount": 1.0, "count": 1, "name": None})["name"] == "anon"


@pytest.mark.parametrize("field", ["amount", "count"])
def test_missing_required_field_names_it(field: str) -> None:
    body = {"amount": 1.0, "count": 1}
    del body[field]
    exc = violation(body)
    assert exc.field == field
    assert f"'{field}'" in exc.message and "required" in exc.message and "missing" in exc.message


def test_null_required_field_is_rejected() -> None:
    exc = violation({"amount": None, "count": 1})
    assert exc.field == "amount" and "got null" in exc.message


@pytest.mark.parametrize(
    ("field", "value", "got"),
    [
        ("amount", True, "boolean"),
        ("amount", "1.5", "string"),
        ("amount", math.nan, "non-finite"),
        ("amount", math.inf, "non-finite"),
        ("amount", [1], "array"),
        ("count", False, "boolean"),
        ("count", 1.5, "number 1.5"),
        ("count", 2**64, "integer"),
        ("count", math.inf, "non-finite"),
        ("name", 3, "integer 3"),
        ("flag", 1, "integer 1"),
        ("flag", "true", "string"),
    ],
)
def test_wrong_type_names_field_expected_and_got(field: str, value: Any, got: str) -> None:
    body: dict[str, Any] = {"amount": 1.0, "count": 1, field: value}
    exc = violation(body)
    assert exc.field == field
    assert f"'{field}'" in exc.message
    assert "expected" in exc.message
    assert got in exc.message
    assert "send e.g." in exc.message


def test_unknown_fields_are_named() -> None:
    exc = violation({"amount": 1.0, "count": 1, "zeta": 1, "alpha": 2})
    assert "'alpha', 'zeta'" in exc.message
    assert "amount (double, required)" in exc.message


@pytest.mark.parametrize("body", [[], "x", 3, None])
def test_body_must_be_an_object(body: Any) -> None:
    exc = violation(body)
    assert exc.field is None and "JSON object" in exc.message


def test_input_from_model_accepts_any_object() -> None:
    conf = config.parse(
        {
            "services": {
                "s": {
                    "sla_ms": 50,
                    "models": [{"name": "m", "role": "champion", "uri": "models:/m@champion"}],
                    "input": {"from_model": "m"},
                }
            }
        }
    )
    spec = conf.services["s"]
    assert validate(spec, {"anything": [1, 2]}) == {"anything": [1, 2]}
    violation([1], spec)


def test_default_of_the_wrong_type_is_a_config_error() -> None:
    spec = service({"n": {"type": "long", "required": False, "default": "ten"}})
    with pytest.raises(ConfigError, match="'n'.*default"):
        Validator(spec)


def test_integer_default_of_a_double_is_widened() -> None:
    spec = service({"x": {"type": "double", "required": False, "default": 1}})
    out = Validator(spec)({})
    assert out == {"x": 1.0} and type(out["x"]) is float
