"""One model scoring one model-input record: pure, with the clock passed in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from rendezvous import serde


class Scorer(Protocol):
    name: str
    role: str
    version: str

    def score(self, features: dict[str, Any]) -> Any: ...


def score_record(
    scorer: Scorer, service: str, record: dict[str, Any], now_ms: Callable[[], int]
) -> dict[str, Any] | None:
    """The score record for ``record``, or None when it is not this service's or failed upstream.

    A model exception becomes an error score; it never escapes.
    """
    if record["service"] != service or record.get("error"):
        return None
    started = now_ms()
    output, error = None, None
    try:
        output = serde.to_json(scorer.score(serde.from_json(record["features"])))
    except Exception as exc:  # the model's failure is data, not a crash
        error = f"{type(exc).__name__}: {exc}"[:2000]
    return {
        "request_id": record["request_id"],
        "service": service,
        "model": scorer.name,
        "version": str(scorer.version),
        "role": scorer.role,
        "status": "ok" if error is None else "error",
        "output": output,
        "error": error,
        "received_ms": record["received_ms"],
        "deadline_ms": record["deadline_ms"],
        "started_ms": started,
        "scored_ms": now_ms(),
    }
