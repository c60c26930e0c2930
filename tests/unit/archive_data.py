"""Rows for small test archives, and the hand-checked archive of the report tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rendezvous.archive.layout import write_rows

T0 = 1_714_557_600_000  # 2024-05-01T10:00:00Z
HOUR = 3_600_000
SLA_MS = 25


def out(label: Any, probability: float) -> str:
    return json.dumps({"label": label, "probability": probability})


def score(
    request_id: str,
    model: str,
    role: str,
    output: str | None,
    latency_ms: int,
    *,
    at: int = T0,
    status: str = "ok",
    **extra: Any,
) -> dict[str, Any]:
    """A score of a request received at ``at`` with a deadline ``SLA_MS`` later."""
    return {
        "request_id": request_id,
        "model": model,
        "version": "1",
        "role": role,
        "status": status,
        "output": output,
        "error": None if status == "ok" else "boom",
        "received_ms": at,
        "deadline_ms": at + SLA_MS,
        "started_ms": at + 1,
        "scored_ms": at + latency_ms,
        "latency_ms": latency_ms,
        "late": latency_ms > SLA_MS,
        **extra,
    }


def decision(
    request_id: str,
    model: str | None,
    reason: str,
    *,
    at: int = T0,
    output: str | None = None,
    policy_version: int = 1,
    latency_ms: int = 10,
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "received_ms": at,
        "deadline_ms": at + SLA_MS,
        "decided_ms": at + latency_ms,
        "latency_ms": latency_ms,
        "policy_version": policy_version,
        "status": "ok" if model else "error",
        "model": model,
        "version": "1" if model else None,
        "role": None,
        "reason": reason,
        "output": output,
        "scores": [],
    }


def request(
    request_id: str,
    *,
    at: int = T0,
    preference: str = "gbm,lr,rules",
    policy_version: int = 1,
    sla_ms: int = SLA_MS,
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "received_ms": at,
        "deadline_ms": at + SLA_MS,
        "payload": json.dumps({"amount": 10}),
        "features": json.dumps({"amount": 10.0}),
        "enriched_ms": at + 1,
        "policy_version": policy_version,
        "preference": preference,
        "sla_ms": sla_ms,
        "error": None,
    }


# The report archive: service "credit", SLA 25 ms, champion gbm, canary lr, backstop rules
# (plain-number outputs), five requests received at 10:00 UTC, r5 failed enrichment.
CREDIT_SCORES = [
    score("r1", "gbm", "champion", out(1, 0.9), 10),
    score("r2", "gbm", "champion", out(0, 0.2), 20),
    score("r3", "gbm", "champion", out(1, 0.7), 30),  # late
    score("r4", "gbm", "champion", None, 8, status="error"),
    score("r1", "lr", "canary", out(1, 0.8), 5),
    score("r1", "lr", "canary", out(0, 0.0), 50),  # a duplicate, scored later: ignored
    score("r2", "lr", "canary", out(1, 0.6), 15),
    score("r3", "lr", "canary", out(1, 0.75), 25),
    score("r4", "lr", "canary", out(0, 0.1), 35),  # late
    score("r1", "rules", "backstop", "1", 1),
    score("r2", "rules", "backstop", "0", 1),
    score("r3", "rules", "backstop", "0", 2),
    score("r4", "rules", "backstop", "1", 2),
]
CREDIT_DECISIONS = [
    decision("r1", "gbm", "preferred"),
    decision("r2", "gbm", "preferred"),
    decision("r3", "lr", "fallback: gbm late"),
    decision("r4", "rules", "backstop: gbm failed, lr late"),
    decision("r5", None, "enrichment_failed: missing field amount"),
]


def credit_archive(root: Path) -> Path:
    write_rows(root, "scores", CREDIT_SCORES, service="credit")
    write_rows(root, "decisions", CREDIT_DECISIONS, service="credit")
    write_rows(root, "requests", [request(f"r{i}") for i in range(1, 6)], service="credit")
    return root


# The promotion archive: service "promo", a (role champion) and b (role challenger), one ms
# apart in time. p1, p2 were accepted under policy v0 (a first), p3, p4 under v1 after b was
# promoted (b first); p5 has a decision of v1 but no requests row; p7 has scores only.
# Labels a / b: p1 1/1, p2 0/1, p3 1/1, p4 1/0, p5 0/0, p7 1/0.
PROMO_LABELS = {"p1": (1, 1), "p2": (0, 1), "p3": (1, 1), "p4": (1, 0), "p5": (0, 0), "p7": (1, 0)}


def promo_archive(root: Path, b_role: str = "challenger") -> Path:
    scores = []
    for i, (rid, (a, b)) in enumerate(PROMO_LABELS.items()):
        at = T0 + i
        scores += [
            score(rid, "a", "champion", out(a, 0.5 + 0.1 * a), 10, at=at),
            score(rid, "b", b_role, out(b, 0.5 + 0.2 * b), 12 + i, at=at),
        ]
    decisions = [
        decision("p1", "a", "preferred", at=T0, policy_version=0),
        decision("p2", "a", "preferred", at=T0 + 1, policy_version=0),
        decision("p3", "b", "preferred", at=T0 + 2),
        decision("p4", "b", "preferred", at=T0 + 3),
        decision("p5", "b", "preferred", at=T0 + 4),
    ]
    requests = [
        request("p1", at=T0, preference="a,b", policy_version=0),
        request("p2", at=T0 + 1, preference="a,b", policy_version=0),
        request("p3", at=T0 + 2, preference="b,a", policy_version=1),
        request("p4", at=T0 + 3, preference="b,a", policy_version=1),
    ]
    write_rows(root, "scores", scores, service="promo")
    write_rows(root, "decisions", decisions, service="promo")
    write_rows(root, "requests", requests, service="promo")
    return root
