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
    request_id: str, model: str | None, reason: str, *, at: int = T0, output: str | None = None
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "received_ms": at,
        "deadline_ms": at + SLA_MS,
        "decided_ms": at + 10,
        "latency_ms": 10,
        "policy_version": 1,
        "status": "ok" if model else "error",
        "model": model,
        "version": "1" if model else None,
        "role": None,
        "reason": reason,
        "output": output,
        "scores": [],
    }


def request(request_id: str, *, at: int = T0) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "received_ms": at,
        "deadline_ms": at + SLA_MS,
        "payload": json.dumps({"amount": 10}),
        "features": json.dumps({"amount": 10.0}),
        "enriched_ms": at + 1,
        "policy_version": 1,
        "preference": "gbm,lr,rules",
        "sla_ms": SLA_MS,
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
