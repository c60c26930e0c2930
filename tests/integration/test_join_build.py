"""The rendezvous job's ``build()`` on a local Flink, fed a bounded in-memory stream of model
inputs, scores and heartbeats with broker-like timestamps: the exact results and decisions.

No Kafka, no cluster: the job's wiring (the JVM heartbeat filter, the key, the keyed state and
the event-time timers) runs in a mini cluster; the end of the input fires every pending timer,
orphan limits and tombstone expiries included.
"""

from __future__ import annotations

import operator

import pytest

from jobs import common, join
from jobs.connectors import BYTES
from rendezvous import replies, serde
from tests.integration.bounded import local, raw, timestamped, worker_path

pytestmark = pytest.mark.flink

SERVICE = "credit"
SLA_MS, GRACE_MS = 100, 50
POLICY = {"preference": ["champ", "backstop"], "sla_ms": SLA_MS, "grace_ms": GRACE_MS, "version": 3}
VERSIONS = {"champ": "12", "backstop": "2"}
ROLES = {"champ": "champion", "backstop": "backstop"}
BENIGN = serde.to_json({"label": 1, "probability": 0.93})
MALIGNANT = serde.to_json({"label": 0, "probability": 0.6})


def features(rid: str) -> str:
    return serde.to_json({"worst_radius": 14.2, "worst_concave_points": 0.09, "id": rid})


def model_input(rid: str, received: int, reply_to: str) -> dict:
    return {
        "request_id": rid,
        "service": SERVICE,
        "received_ms": received,
        "deadline_ms": received + SLA_MS,
        "features": features(rid),
        "payload": features(rid),
        "enriched_ms": received + 2,
        "reply_to": reply_to,
        "policy": POLICY,
        "error": None,
    }


def score(rid: str, received: int, model: str, scored: int, output=BENIGN, error=None) -> dict:
    return {
        "request_id": rid,
        "service": SERVICE,
        "model": model,
        "version": VERSIONS[model],
        "role": ROLES[model],
        "status": "ok" if error is None else "error",
        "output": None if error else output,
        "error": error,
        "received_ms": received,
        "deadline_ms": received + SLA_MS,
        "started_ms": scored - 1,
        "scored_ms": scored,
    }


def inputs(batch: str, *requests: dict) -> bytes:
    return serde.encode_batch(serde.Kind.MODEL_INPUT, batch, list(requests))


def scores(batch: str, *items: dict) -> bytes:
    return serde.encode_batch(serde.Kind.SCORE, batch, list(items))


NAN = "ValueError: Input contains NaN"

# (broker timestamp, value), in the order the source reads them.
RECORDS = [
    # b1: r1 answered by the champion at once; r2's champion fails, the backstop answers it.
    (1002, inputs("b1", model_input("r1", 1000, "proxy-a"), model_input("r2", 1000, "proxy-b"))),
    (
        1031,
        scores("b1", score("r1", 1000, "champ", 1030), score("r2", 1000, "champ", 1031, error=NAN)),
    ),
    (
        1041,
        scores(
            "b1",
            score("r1", 1000, "backstop", 1040),
            score("r2", 1000, "backstop", 1041, MALIGNANT),
        ),
    ),
    # b2: the backstop answers in time, the champion after the deadline (within the grace).
    (1052, inputs("b2", model_input("r3", 1050, "proxy-a"))),
    (1060, scores("b2", score("r3", 1050, "backstop", 1060))),
    # b9: a score whose request never comes.
    (1080, scores("b9", score("r9", 1075, "champ", 1080))),
    # b3: no model answers.
    (1102, inputs("b3", model_input("r4", 1100, "proxy-a"))),
    (1160, serde.empty_batch(serde.Kind.SCORE)),  # heartbeats: time only
    (1170, scores("b2", score("r3", 1050, "champ", 1170))),
    (1300, serde.empty_batch(serde.Kind.MODEL_INPUT)),
]


def result(rid, received, reply_to, decided, model=None, reason="preferred", output=BENIGN) -> dict:
    return {
        "request_id": rid,
        "service": SERVICE,
        "status": "ok" if model else "error",
        "model": model,
        "version": VERSIONS.get(model),
        "role": ROLES.get(model),
        "output": output if model else None,
        "reason": reason,
        "error": None if model else reason,
        "received_ms": received,
        "deadline_ms": received + SLA_MS,
        "decided_ms": decided,
        "reply_to": reply_to,
        "arm": None,  # no A/B split in this service
    }


def row(model, latency, late=False, output=BENIGN, error=None) -> dict:
    return {
        "model": model,
        "version": VERSIONS[model],
        "role": ROLES[model],
        "status": "ok" if error is None else "error",
        "output": None if error else output,
        "error": error,
        "latency_ms": latency,
        "late": late,
    }


def decision(answer: dict, *rows: dict) -> dict:
    rid = answer["request_id"]
    return {
        "request_id": rid,
        "service": SERVICE,
        "received_ms": answer["received_ms"],
        "deadline_ms": answer["deadline_ms"],
        "features": features(rid),
        "policy_version": POLICY["version"],
        "status": answer["status"],
        "model": answer["model"],
        "version": answer["version"],
        "role": answer["role"],
        "reason": answer["reason"],
        "output": answer["output"],
        "decided_ms": answer["decided_ms"],
        "latency_ms": answer["decided_ms"] - answer["received_ms"],
        "scores": list(rows),
        "arm": None,
        "unsampled": [],
    }


R1 = result("r1", 1000, "proxy-a", 1030, "champ")
R2 = result("r2", 1000, "proxy-b", 1041, "backstop", "backstop: champ failed", MALIGNANT)
R3 = result("r3", 1050, "proxy-a", 1150, "backstop", "backstop: champ late")
R4 = result("r4", 1100, "proxy-a", 1200, reason="no_answer: champ late, backstop late")
ORPHAN = {
    "request_id": "r9",
    "service": SERVICE,
    "received_ms": 1075,
    "deadline_ms": 1075,
    "features": None,
    "policy_version": -1,
    "status": "error",
    "model": None,
    "version": None,
    "role": None,
    "reason": "orphan: scores arrived but the request never did",
    "output": None,
    "decided_ms": 1075 + 60_000,
    "latency_ms": 0,
    "scores": [row("champ", 5, late=True)],
    "arm": None,
    "unsampled": [],
}

# (kind, batch ID, items) of every record the job writes: one result batch per proxy replica
# whenever answers are ready, and one decision batch per batch ID when it closes (the latest
# deadline + grace of its requests).
EXPECTED = [
    (serde.Kind.RESULT, "b1", [R1]),
    (serde.Kind.RESULT, "b1", [R2]),
    (serde.Kind.RESULT, "b2", [R3]),
    (serde.Kind.RESULT, "b3", [R4]),
    (
        serde.Kind.DECISION,
        "b1",
        [
            decision(R1, row("backstop", 40), row("champ", 30)),
            decision(R2, row("backstop", 41, output=MALIGNANT), row("champ", 31, error=NAN)),
        ],
    ),
    (serde.Kind.DECISION, "b2", [decision(R3, row("backstop", 10), row("champ", 120, late=True))]),
    (serde.Kind.DECISION, "b3", [decision(R4)]),
    (serde.Kind.DECISION, "b9", [ORPHAN]),
]


def ordered(records):
    return sorted(records, key=lambda r: (r[0], r[1], [i["request_id"] for i in r[2]]))


@pytest.fixture
def env(monkeypatch):
    """The job's environment (as ``main()`` makes it) on a local mini cluster. PYTHONPATH is
    what the JVM passes on to the Python workers if this is the first PyFlink call here."""
    monkeypatch.setenv("PYTHONPATH", worker_path())
    return local(common.environment(latency_critical=True, watermarks=True))


def test_the_join_answers_and_decides_every_request_of_a_bounded_input(env):
    results, decisions = join.build(env, timestamped(env, RECORDS))
    # Results leave prefixed with their reply partition (the results sink cuts it off); these
    # requests name none.
    # (functions of importable modules: the Python workers cannot import this test module)
    unrouted = results.map(replies.unrouted).map(operator.itemgetter(1), output_type=BYTES)
    with unrouted.union(decisions).execute_and_collect("join on a bounded input") as out:
        got = [serde.decode_items(raw(value)) for value in out]
    assert ordered(got) == ordered(EXPECTED)
