"""Encode and decode every record the project puts on Kafka.

A value is one *kind* byte followed by the record in Avro binary encoding (no embedded schema).
The kind byte lets one stream carry several record types (the rendezvous job reads model
inputs, scores and clock ticks from one source) and makes a record on the wrong topic an
explicit error instead of garbage.
"""

from __future__ import annotations

import io
from enum import IntEnum
from importlib import resources
from typing import Any

import fastavro
import orjson

from rendezvous.errors import RendezvousError

FORMAT_VERSION = 1


class Kind(IntEnum):
    REQUEST = 1
    MODEL_INPUT = 2
    SCORE = 3
    RESULT = 4
    CONTROL = 5
    DECISION = 6
    DEAD_LETTER = 7
    TICK = 8


# Files in dependency order: a file may use the named types of the ones before it.
_FILES = {
    "policy": None,
    "request": Kind.REQUEST,
    "model_input": Kind.MODEL_INPUT,
    "score": Kind.SCORE,
    "result": Kind.RESULT,
    "control": Kind.CONTROL,
    "decision": Kind.DECISION,
    "dead_letter": Kind.DEAD_LETTER,
    "tick": Kind.TICK,
}


class SerdeError(RendezvousError):
    code = "serde"


def _load() -> tuple[dict[Kind, Any], dict[str, Any]]:
    named: dict[str, Any] = {}
    by_kind: dict[Kind, Any] = {}
    raw: dict[str, Any] = {}
    folder = resources.files("schemas")
    for name, kind in _FILES.items():
        text = folder.joinpath(f"{name}.avsc").read_text()
        raw[name] = orjson.loads(text)
        parsed = fastavro.parse_schema(raw[name], named_schemas=named)
        if kind is not None:
            by_kind[kind] = parsed
    return by_kind, raw


SCHEMAS, RAW_SCHEMAS = _load()


def encode(kind: Kind, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(bytes((kind,)))
    try:
        fastavro.schemaless_writer(buf, SCHEMAS[kind], record)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SerdeError(f"cannot encode {kind.name} record: {exc}; got {record!r}") from exc
    return buf.getvalue()


def decode(value: bytes) -> tuple[Kind, dict[str, Any]]:
    if not value:
        raise SerdeError("empty Kafka value; expected a kind byte and an Avro record")
    try:
        kind = Kind(value[0])
    except ValueError:
        raise SerdeError(
            f"unknown record kind byte {value[0]}; expected one of "
            f"{', '.join(f'{k.value}={k.name}' for k in Kind)} (was it written by this project?)"
        ) from None
    try:
        record = fastavro.schemaless_reader(io.BytesIO(value[1:]), SCHEMAS[kind], None)
    except Exception as exc:
        raise SerdeError(f"cannot decode {kind.name} record ({len(value)} bytes): {exc}") from exc
    return kind, record


def decode_as(expected: Kind, value: bytes) -> dict[str, Any]:
    kind, record = decode(value)
    if kind != expected:
        raise SerdeError(f"expected a {expected.name} record, got {kind.name}")
    return record


def to_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def from_json(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)
