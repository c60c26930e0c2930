"""One model scoring model-input records: pure, with the clock passed in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from rendezvous import serde


class ScoringModel(Protocol):
    """What scoring needs of a model: :class:`rendezvous.models.Scorer` is one, a fake another."""

    name: str
    role: str
    version: str

    def score(self, features: dict[str, Any]) -> Any: ...

    def score_many(self, rows: list[dict[str, Any]]) -> list[Any]: ...


def _error_text(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def score_records(
    scorer: ScoringModel,
    service: str,
    records: Sequence[dict[str, Any]],
    now_ms: Callable[[], int],
) -> list[dict[str, Any]]:
    """The score records for the records of ``service`` that enrichment did not fail and that
    the model samples (a record naming it in ``unsampled`` gets no score).

    The batch is scored in one vectorised call; if that raises, each record is scored alone,
    so a bad record gets its own error score and the others still get theirs. A model exception
    never escapes.
    """
    mine = [
        r
        for r in records
        if r["service"] == service
        and not r.get("error")
        and scorer.name not in r.get("unsampled", ())  # not this model's sample
    ]
    if not mine:
        return []
    started = now_ms()
    outputs: list[tuple[str | None, str | None]]
    try:
        rows = [serde.from_json(r["features"]) for r in mine]
    except ValueError as exc:
        rows, outputs = None, [(None, _error_text(exc))] * len(mine)
    if rows is not None:
        try:
            outputs = [(serde.to_json(o), None) for o in scorer.score_many(rows)]
            if len(outputs) != len(mine):
                raise ValueError(f"the model answered {len(outputs)} rows for {len(mine)}")
        except Exception:  # the model's failure is data, not a crash: find the bad rows
            outputs = []
            for row in rows:
                try:
                    outputs.append((serde.to_json(scorer.score(row)), None))
                except Exception as exc:
                    outputs.append((None, _error_text(exc)))
    scored = now_ms()
    version = str(scorer.version)
    return [
        {
            "request_id": r["request_id"],
            "service": service,
            "model": scorer.name,
            "version": version,
            "role": scorer.role,
            "status": "ok" if error is None else "error",
            "output": output,
            "error": error,
            "received_ms": r["received_ms"],
            "deadline_ms": r["deadline_ms"],
            "started_ms": started,
            "scored_ms": scored,
        }
        for r, (output, error) in zip(mine, outputs, strict=True)
    ]


def score_record(
    scorer: ScoringModel, service: str, record: dict[str, Any], now_ms: Callable[[], int]
) -> dict[str, Any] | None:
    """The score record for one ``record``, or None when it is not this service's or failed
    upstream."""
    out = score_records(scorer, service, [record], now_ms)
    return out[0] if out else None
