"""Model-input records from requests: expiry before enrichment."""

from __future__ import annotations

import pytest

from rendezvous import serde
from rendezvous.enrich import to_model_input
from rendezvous.policy import Policy

pytestmark = pytest.mark.unit

POLICY = Policy(preference=("m",), sla_ms=100, grace_ms=0, version=1)


def request(received: int = 1_000) -> dict:
    return {
        "request_id": "r",
        "service": "s",
        "received_ms": received,
        "deadline_ms": received + 100,
        "payload": serde.to_json({"x": 1.0}),
        "reply_to": "p",
    }


class Identity:
    def apply(self, features):
        return features


def test_a_request_in_time_is_enriched():
    record, dead = to_model_input(request(), POLICY, Identity(), now_ms=1_050)
    assert record["error"] is None and dead is None
    assert serde.from_json(record["features"]) == {"x": 1.0}


def test_a_request_past_its_deadline_is_not_scored_and_not_a_dead_letter():
    record, dead = to_model_input(request(), POLICY, Identity(), now_ms=1_140)
    assert record["error"].startswith("deadline_exceeded: ") and "40 ms" in record["error"]
    assert dead is None
