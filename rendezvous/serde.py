"""Encode and decode every record the project puts on Kafka.

A value is one *kind* byte followed by the record in Avro binary encoding (no embedded schema).
The kind byte lets one source read several record types (the rendezvous job reads model inputs
and scores from one source) and makes a record on the wrong topic an explicit error instead of
garbage. Each topic the archive reads holds one batch kind only, so that Flink SQL's Avro format
reads it too: the kind byte, below 64, is a one-byte Avro int in front of the record.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from enum import IntEnum
from importlib import resources
from typing import Any, NoReturn, Protocol, TypeVar

import fastavro
import orjson

from rendezvous.errors import RendezvousError

FORMAT_VERSION = 3


class Kind(IntEnum):
    REQUEST = 1
    MODEL_INPUT = 2
    SCORE = 3
    RESULT = 4
    CONTROL = 5
    DECISION = 6
    DEAD_LETTER = 7
    TICK = 8
    REQUEST_BATCH = 9
    MODEL_INPUT_BATCH = 10
    SCORE_BATCH = 11
    RESULT_BATCH = 12
    DECISION_BATCH = 13
    SERVICE = 14
    API_KEY = 15
    USAGE = 16
    FEEDBACK = 17
    FEEDBACK_BATCH = 18


# The batch kind that carries several records of a kind, and back.
BATCH_OF = {
    Kind.REQUEST: Kind.REQUEST_BATCH,
    Kind.MODEL_INPUT: Kind.MODEL_INPUT_BATCH,
    Kind.SCORE: Kind.SCORE_BATCH,
    Kind.RESULT: Kind.RESULT_BATCH,
    Kind.DECISION: Kind.DECISION_BATCH,
    Kind.FEEDBACK: Kind.FEEDBACK_BATCH,
}
ITEM_OF = {batch: item for item, batch in BATCH_OF.items()}


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
    "request_batch": Kind.REQUEST_BATCH,
    "model_input_batch": Kind.MODEL_INPUT_BATCH,
    "score_batch": Kind.SCORE_BATCH,
    "result_batch": Kind.RESULT_BATCH,
    "decision_batch": Kind.DECISION_BATCH,
    "service": Kind.SERVICE,
    "api_key": Kind.API_KEY,
    "usage": Kind.USAGE,
    "feedback": Kind.FEEDBACK,
    "feedback_batch": Kind.FEEDBACK_BATCH,
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


# The records of a kept topic (rdv.control keeps its records indefinitely) written before
# fields were added at the end: each entry is the set of fields an earlier generation lacked,
# newest first; read with that earlier schema, the missing fields take their defaults.
_EARLIER: dict[Kind, tuple[frozenset[str], ...]] = {
    Kind.CONTROL: (frozenset({"registry"}), frozenset({"split", "registry"})),
}


def _named(schema: Any, namespace: str, out: dict[str, Any]) -> None:
    if isinstance(schema, list):
        for branch in schema:
            _named(branch, namespace, out)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            namespace = schema.get("namespace", namespace)
            out[f"{namespace}.{schema['name']}"] = schema
            for f in schema["fields"]:
                _named(f["type"], namespace, out)
        elif schema.get("type") == "array":
            _named(schema["items"], namespace, out)


def named_schemas() -> dict[str, Any]:
    """Every named record type of the wire schemas, by full name (as the schemas refer to it)."""
    out: dict[str, Any] = {}
    for schema in RAW_SCHEMAS.values():
        _named(schema, "", out)
    return out


def raw_schema(kind: Kind) -> dict[str, Any]:
    return next(RAW_SCHEMAS[n] for n, k in _FILES.items() if k == kind)


# ---- Avro types in other type systems ----------------------------------------------------

AVRO_PRIMITIVES = frozenset(
    ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
)

T = TypeVar("T")


class TypeFold(Protocol[T]):
    """What each kind of Avro type becomes in another type system (Flink SQL, Arrow, Flink's
    type information); :func:`fold_type` applies it from the leaves up. ``path`` names the place
    in the schema (``table.field``, ``table.field.item`` for an array's items) for messages.
    Subclass it for the defaults of :meth:`nullable` and :meth:`unsupported`."""

    def primitive(self, name: str, path: str) -> T:
        raise NotImplementedError

    def array(self, items: T, path: str) -> T:
        raise NotImplementedError

    def record(self, fields: list[tuple[str, T]], path: str) -> T:
        raise NotImplementedError

    def nullable(self, inner: T) -> T:
        """A union of null and one type (``inner``, already folded)."""
        return inner

    def unsupported(self, avro: Any, path: str) -> NoReturn:
        """A type with no counterpart: an enum, map or fixed, another union, an unknown name."""
        raise SerdeError(f"{path}: Avro type {avro!r} has no mapping here")


def fold_type(
    avro: Any, fold: TypeFold[T], *, named: Mapping[str, Any] | None = None, path: str = ""
) -> T:
    """``avro`` (a type of a parsed-JSON schema) folded with ``fold``. ``named``: named types by
    full name, for schemas that refer to them (see :func:`named_schemas`)."""
    named = named or {}
    if isinstance(avro, list):
        others = [t for t in avro if t != "null"]
        if len(others) != 1:
            fold.unsupported(avro, path)
        inner = fold_type(others[0], fold, named=named, path=path)
        return fold.nullable(inner) if "null" in avro else inner
    if isinstance(avro, dict):
        kind = avro.get("type")
        if kind == "array":
            items = fold_type(avro["items"], fold, named=named, path=f"{path}.item")
            return fold.array(items, path)
        if kind == "record":
            fields = [
                (f["name"], fold_type(f["type"], fold, named=named, path=f"{path}.{f['name']}"))
                for f in avro["fields"]
            ]
            return fold.record(fields, path)
        if isinstance(kind, str) and (kind in AVRO_PRIMITIVES or kind in named):
            # a primitive with a logicalType (its physical type), or a reference to a name
            return fold_type(kind, fold, named=named, path=path)
        fold.unsupported(avro, path)
    if avro in AVRO_PRIMITIVES:
        return fold.primitive(avro, path)
    if isinstance(avro, str) and avro in named:
        return fold_type(named[avro], fold, named=named, path=path)
    fold.unsupported(avro, path)


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
        if kind in _EARLIER:
            try:
                return kind, _decode_earlier(kind, value)
            except Exception:
                pass
        raise SerdeError(f"cannot decode {kind.name} record ({len(value)} bytes): {exc}") from exc
    return kind, record


def _decode_earlier(kind: Kind, value: bytes) -> dict[str, Any]:
    """``value`` read with the first earlier schema of ``kind`` that consumes it exactly."""
    failure: Exception = SerdeError("no earlier schema")
    for writer in _earlier_schemas()[kind]:
        buf = io.BytesIO(value[1:])
        try:
            record = fastavro.schemaless_reader(buf, writer, SCHEMAS[kind])
        except Exception as exc:
            failure = exc
            continue
        if buf.tell() == len(value) - 1:
            return record
        failure = SerdeError("trailing bytes")
    raise failure


_EARLIER_PARSED: dict[Kind, list[Any]] = {}


def _earlier_schemas() -> dict[Kind, list[Any]]:
    """The schemas of :data:`_EARLIER`, parsed on first use."""
    if not _EARLIER_PARSED:
        named: dict[str, Any] = {}
        for name, kind in _FILES.items():
            raw = RAW_SCHEMAS[name]
            for missing in _EARLIER.get(kind, ()):
                fields = [f for f in raw["fields"] if f["name"] not in missing]
                earlier = {**raw, "fields": fields}
                _EARLIER_PARSED.setdefault(kind, []).append(
                    fastavro.parse_schema(earlier, named_schemas=dict(named))
                )
            fastavro.parse_schema(raw, named_schemas=named)  # its named types, for the next
    return _EARLIER_PARSED


def encode_batch(kind: Kind, batch_id: str, items: list[dict[str, Any]]) -> bytes:
    """Several records of ``kind`` as one value of its batch kind."""
    return encode(BATCH_OF[kind], {"batch_id": batch_id, "items": items})


def decode_items(value: bytes) -> tuple[Kind, str, list[dict[str, Any]]]:
    """(item kind, batch id, items) of a batch value; a single keyed record is a batch of one
    whose batch id is its request ID. Other kinds (ticks, control) come back with no items."""
    kind, record = decode(value)
    item = ITEM_OF.get(kind)
    if item is not None:
        return item, record["batch_id"], record["items"]
    if kind in BATCH_OF:
        return kind, record["request_id"], [record]
    return kind, "", []


def empty_batch(kind: Kind) -> bytes:
    """A batch of no ``kind`` records with an empty ID: a heartbeat on a topic of that kind.

    Its Avro body is an empty ID (length 0) and an empty array (count 0), so every reader of
    the topic, Flink SQL's Avro format included, reads it as a batch with nothing in it."""
    return bytes((BATCH_OF[kind], 0, 0))


def is_heartbeat(value: bytes) -> bool:
    return len(value) == 3 and value[1] == 0 and value[2] == 0


def items_as(expected: Kind, value: bytes) -> list[dict[str, Any]]:
    """The records of kind ``expected`` in a value: a batch's items, or the one record."""
    kind, _, items = decode_items(value)
    if kind != expected:
        raise SerdeError(
            f"expected {expected.name} or {BATCH_OF[expected].name} record(s), got {kind.name}"
        )
    return items


# Kinds whose Avro record starts with the request ID or, for batches, the batch ID (checked
# against the schemas at import).
KEYED = frozenset(
    k
    for k, name in ((k, n) for n, k in _FILES.items() if k is not None)
    if RAW_SCHEMAS[name]["fields"][0]["name"] in ("request_id", "batch_id")
)


def request_id(value: bytes) -> str:
    """The key of a keyed record (a request ID, or a batch's ID) without decoding the rest.

    Schemaless Avro writes fields in order and a string as a zigzag varint length and UTF-8
    bytes, so the ID sits right after the kind byte.
    """
    if not value or value[0] not in KEYED:
        raise SerdeError(
            f"record kind {value[0] if value else 'none'} carries no request ID; expected one of "
            f"{', '.join(sorted(k.name for k in KEYED))}"
        )
    n = shift = 0
    i = 1
    while True:
        if i >= len(value):
            raise SerdeError("truncated record: the request ID length runs past its end")
        b = value[i]
        n |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            break
        shift += 7
    length = (n >> 1) ^ -(n & 1)
    if length < 0 or i + length > len(value):
        raise SerdeError(f"corrupt record: request ID length {length} in {len(value)} bytes")
    return value[i : i + length].decode()


def decode_as(expected: Kind, value: bytes) -> dict[str, Any]:
    kind, record = decode(value)
    if kind != expected:
        raise SerdeError(f"expected a {expected.name} record, got {kind.name}")
    return record


def to_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def from_json(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)
