"""Each record type of :mod:`rendezvous.records` matches its Avro schema in ``schemas/``."""

from __future__ import annotations

import types
import typing
from importlib import resources
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import pytest

from rendezvous import records, serde

PRIMITIVES: dict[str, type] = {
    "string": str,
    "long": int,
    "int": int,
    "double": float,
    "float": float,
    "boolean": bool,
    "bytes": bytes,
}
NAMED = serde.named_schemas()


def _record_types() -> dict[str, type]:
    return {
        name: obj
        for name, obj in vars(records).items()
        if isinstance(obj, type) and typing.is_typeddict(obj)
    }


def _mismatch(avro: Any, hint: Any, path: str) -> list[str]:
    """What differs between an Avro type and a Python type hint, one line per difference."""
    if isinstance(avro, str) and avro in PRIMITIVES:
        want = PRIMITIVES[avro]
        return [] if hint is want else [f"{path}: Avro {avro} wants {want.__name__}, got {hint}"]
    if isinstance(avro, str):
        if avro not in NAMED:
            return [f"{path}: unknown Avro type {avro!r}"]
        return _mismatch(NAMED[avro], hint, path)
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        if len(branches) != 1 or len(avro) != 2:
            return [f"{path}: only unions of null and one type are mapped, got {avro}"]
        if get_origin(hint) not in (Union, types.UnionType):
            return [f"{path}: Avro {avro} wants Optional, got {hint}"]
        args = get_args(hint)
        if type(None) not in args or len(args) != 2:
            return [f"{path}: Avro {avro} wants Optional of one type, got {hint}"]
        (inner,) = (a for a in args if a is not type(None))
        return _mismatch(branches[0], inner, path)
    kind = avro["type"]
    if kind == "array":
        if get_origin(hint) is not list:
            return [f"{path}: Avro array wants list, got {hint}"]
        return _mismatch(avro["items"], get_args(hint)[0], f"{path}[]")
    if kind == "map":
        if get_origin(hint) is not dict or get_args(hint)[0] is not str:
            return [f"{path}: Avro map wants dict[str, ...], got {hint}"]
        return _mismatch(avro["values"], get_args(hint)[1], f"{path}{{}}")
    if kind == "enum":
        if get_origin(hint) is not Literal or set(get_args(hint)) != set(avro["symbols"]):
            return [f"{path}: Avro enum {avro['symbols']} wants that Literal, got {hint}"]
        return []
    if kind == "record":
        return _record_mismatch(avro, hint, path)
    if kind in PRIMITIVES:
        return _mismatch(kind, hint, path)
    return [f"{path}: Avro type {kind!r} is not mapped; extend this test"]


def _record_mismatch(schema: dict[str, Any], hint: Any, path: str) -> list[str]:
    if not (isinstance(hint, type) and typing.is_typeddict(hint)):
        return [f"{path}: Avro record {schema['name']} wants a TypedDict, got {hint}"]
    if hint.__name__ != schema["name"]:
        return [f"{path}: Avro record {schema['name']} wants records.{schema['name']}, got {hint}"]
    hints = get_type_hints(hint)
    fields = {f["name"]: f["type"] for f in schema["fields"]}
    out = [
        f"{path}: records.{hint.__name__} lacks field {name!r} of the schema"
        for name in fields
        if name not in hints
    ]
    out += [
        f"{path}: records.{hint.__name__} has {name!r}, which the schema does not"
        for name in hints
        if name not in fields
    ]
    if list(hints) != list(fields) and not out:
        out.append(f"{path}: fields in another order than the schema's: {list(hints)}")
    for name, avro in fields.items():
        if name in hints:
            out += _mismatch(avro, hints[name], f"{path}.{name}")
    return out


@pytest.mark.parametrize("name", sorted(NAMED))
def test_every_schema_record_has_its_record_type(name: str) -> None:
    schema = NAMED[name]
    hint = _record_types().get(schema["name"])
    assert hint is not None, f"rendezvous.records has no TypedDict {schema['name']} for {name}"
    assert _record_mismatch(schema, hint, schema["name"]) == []


def test_every_record_type_has_its_schema() -> None:
    names = {schema["name"] for schema in NAMED.values()}
    assert sorted(set(_record_types()) - names) == []


def test_every_schema_file_is_covered() -> None:
    assert set(serde.RAW_SCHEMAS) == {
        name.removesuffix(".avsc")
        for name in (p.name for p in resources.files("schemas").iterdir())
        if name.endswith(".avsc")
    }


def test_a_renamed_field_is_found() -> None:
    schema = dict(NAMED["rendezvous.v1.Result"])
    schema["fields"] = [
        {**f, "name": "answered_ms"} if f["name"] == "decided_ms" else f for f in schema["fields"]
    ]
    problems = _record_mismatch(schema, records.Result, "Result")
    assert "Result: records.Result lacks field 'answered_ms' of the schema" in problems
    assert "Result: records.Result has 'decided_ms', which the schema does not" in problems


def test_a_changed_type_is_found() -> None:
    schema = dict(NAMED["rendezvous.v1.Score"])
    schema["fields"] = [
        {**f, "type": "string"} if f["name"] == "scored_ms" else f for f in schema["fields"]
    ]
    assert _record_mismatch(schema, records.Score, "Score") == [
        "Score.scored_ms: Avro string wants str, got <class 'int'>"
    ]


def test_the_result_constructor_builds_every_field_of_the_schema() -> None:
    request = {"request_id": "r", "service": "s", "received_ms": 1, "deadline_ms": 9}
    built = records.result(
        request,
        status="ok",
        model="m",
        version="1",
        role="champion",
        output="1",
        reason="preferred",
        error=None,
        decided_ms=5,
    )
    assert list(built) == list(records.Result.__annotations__)
    assert built["reply_to"] == ""
    assert serde.decode_as(serde.Kind.RESULT, serde.encode(serde.Kind.RESULT, built)) == built


def test_the_dead_letter_constructor_builds_every_field_of_the_schema() -> None:
    built = records.dead_letter(stage="enrich", error="bad", record=b"\x01", at_ms=3)
    assert list(built) == list(records.DeadLetter.__annotations__)
    kind = serde.Kind.DEAD_LETTER
    assert serde.decode_as(kind, serde.encode(kind, built)) == built


def test_the_feedback_constructor_builds_every_field_of_the_schema() -> None:
    built = records.feedback(request_id="r", service="s", label="1", labelled_ms=7)
    assert list(built) == list(records.Feedback.__annotations__)
    assert (built["observed_ms"], built["source"]) == (None, None)
    kind = serde.Kind.FEEDBACK
    assert serde.decode_as(kind, serde.encode(kind, built)) == built


def test_feedback_travels_in_batches_that_read_back_item_by_item() -> None:
    items = [
        records.feedback(request_id=f"r{i}", service="s", label='"spam"', labelled_ms=i)
        for i in range(3)
    ]
    value = serde.encode_batch(serde.Kind.FEEDBACK, "b", items)
    assert value[0] == serde.Kind.FEEDBACK_BATCH
    assert serde.items_as(serde.Kind.FEEDBACK, value) == items
    assert serde.request_id(value) == "b"
