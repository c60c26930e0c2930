"""The wire format: a kind byte, then a schemaless Avro record."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rendezvous import serde
from rendezvous.serde import Kind


def score(request_id: str) -> dict:
    return {
        "request_id": request_id,
        "service": "credit",
        "model": "gbm",
        "version": "3",
        "role": "champion",
        "status": "ok",
        "output": "0.25",
        "error": None,
        "received_ms": 1_700_000_000_000,
        "deadline_ms": 1_700_000_000_050,
        "started_ms": 1_700_000_000_004,
        "scored_ms": 1_700_000_000_005,
    }


@given(st.text(max_size=300))
def test_request_id_is_read_without_decoding_the_record(rid: str) -> None:
    value = serde.encode(Kind.SCORE, score(rid))
    assert serde.request_id(value) == rid
    assert serde.decode_as(Kind.SCORE, value) == score(rid)


def test_keyed_kinds_are_those_starting_with_the_request_id() -> None:
    assert Kind.MODEL_INPUT in serde.KEYED and Kind.SCORE in serde.KEYED
    assert Kind.TICK not in serde.KEYED and Kind.CONTROL not in serde.KEYED


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"", "carries no request ID"),
        (bytes([Kind.TICK]) + b"\x02a", "carries no request ID"),
        (bytes([Kind.SCORE]) + b"\x80", "truncated"),
        (bytes([Kind.SCORE]) + b"\x10abc", "corrupt"),
    ],
)
def test_request_id_of_a_bad_record_is_a_clear_error(value: bytes, message: str) -> None:
    with pytest.raises(serde.SerdeError, match=message):
        serde.request_id(value)


def test_unknown_kind_byte_names_the_known_ones() -> None:
    with pytest.raises(serde.SerdeError, match="unknown record kind byte 99.*SCORE"):
        serde.decode(bytes([99, 0]))


def test_encoding_a_record_missing_a_field_names_the_kind() -> None:
    record = score("r1")
    del record["model"]
    with pytest.raises(serde.SerdeError, match="cannot encode SCORE"):
        serde.encode(Kind.SCORE, record)
