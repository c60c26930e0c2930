"""The shapes of the records on the wire, one ``TypedDict`` per named type of ``schemas/*.avsc``.

They are plain dicts at run time: the types document what a stage reads and writes and let a
type checker follow a record from stage to stage, at no cost on the hot path (nothing is
validated here; :mod:`rendezvous.serde` checks a record against its schema when it encodes it).
``tests/unit/test_records.py`` holds each type to its schema, so the two change together.

The constructors below build the records that several places spell out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypedDict

ResultStatus = Literal["ok", "error"]


class Policy(TypedDict):
    preference: list[str]
    sla_ms: int
    grace_ms: int
    version: int


class Request(TypedDict):
    request_id: str
    service: str
    received_ms: int
    deadline_ms: int
    payload: str
    reply_to: str


class ModelInput(TypedDict):
    request_id: str
    service: str
    received_ms: int
    deadline_ms: int
    features: str
    payload: str
    enriched_ms: int
    reply_to: str
    policy: Policy
    error: str | None
    arm: str | None
    unsampled: list[str]


class Score(TypedDict):
    request_id: str
    service: str
    model: str
    version: str
    role: str
    status: str
    output: str | None
    error: str | None
    received_ms: int
    deadline_ms: int
    started_ms: int
    scored_ms: int


class Result(TypedDict):
    request_id: str
    service: str
    status: ResultStatus
    model: str | None
    version: str | None
    role: str | None
    output: str | None
    reason: str
    error: str | None
    received_ms: int
    deadline_ms: int
    decided_ms: int
    reply_to: str
    arm: str | None


class Arm(TypedDict):
    model: str
    weight: float


class Split(TypedDict):
    key: str
    arms: list[Arm]


class AliasMove(TypedDict):
    registered_model: str
    alias: str
    version: str | None
    previous: str | None
    moved: bool


class Control(TypedDict):
    service: str
    policy: Policy
    issued_ms: int
    issued_by: str
    split: Split | None
    registry: AliasMove | None


class ServiceDefinition(TypedDict):
    service: str
    version: int
    definition: str | None
    source: str
    issued_ms: int
    issued_by: str


class DecisionScore(TypedDict):
    model: str
    version: str
    role: str
    status: str
    output: str | None
    error: str | None
    latency_ms: int
    late: bool


class Decision(TypedDict):
    request_id: str
    service: str
    received_ms: int
    deadline_ms: int
    features: str | None
    policy_version: int
    status: str
    model: str | None
    version: str | None
    role: str | None
    reason: str
    output: str | None
    decided_ms: int
    latency_ms: int
    scores: list[DecisionScore]
    arm: str | None
    unsampled: list[str]


class Feedback(TypedDict):
    request_id: str
    service: str
    label: str
    labelled_ms: int
    observed_ms: int | None
    source: str | None


class DeadLetter(TypedDict):
    request_id: str | None
    service: str | None
    stage: str
    error: str
    record: bytes
    at_ms: int


class Tick(TypedDict):
    source: str
    at_ms: int


class Quota(TypedDict):
    requests: int
    period_ms: int


class ApiKey(TypedDict):
    key_id: str
    digest: str
    name: str
    services: list[str]
    created_ms: int
    created_by: str
    revoked_ms: int | None
    revoked_by: str | None
    quota: Quota | None


class Usage(TypedDict):
    key_id: str
    replica_id: str
    window_start_ms: int
    window_end_ms: int
    count: int
    at_ms: int


class RequestBatch(TypedDict):
    batch_id: str
    items: list[Request]


class ModelInputBatch(TypedDict):
    batch_id: str
    items: list[ModelInput]


class ScoreBatch(TypedDict):
    batch_id: str
    items: list[Score]


class ResultBatch(TypedDict):
    batch_id: str
    items: list[Result]


class DecisionBatch(TypedDict):
    batch_id: str
    items: list[Decision]


class FeedbackBatch(TypedDict):
    batch_id: str
    items: list[Feedback]


def result(
    request: Mapping[str, Any],
    *,
    status: ResultStatus,
    model: str | None,
    version: str | None,
    role: str | None,
    output: str | None,
    reason: str,
    error: str | None,
    decided_ms: int,
    reply_to: str | None = None,
) -> Result:
    """The result answering ``request`` (a request or model-input record); it goes back to the
    request's own ``reply_to`` unless another is given."""
    return {
        "request_id": request["request_id"],
        "service": request["service"],
        "status": status,
        "model": model,
        "version": version,
        "role": role,
        "output": output,
        "reason": reason,
        "error": error,
        "received_ms": request["received_ms"],
        "deadline_ms": request["deadline_ms"],
        "decided_ms": decided_ms,
        "reply_to": request.get("reply_to", "") if reply_to is None else reply_to,
        "arm": request.get("arm"),
    }


def dead_letter(
    *,
    stage: str,
    error: str,
    record: bytes,
    at_ms: int,
    request_id: str | None = None,
    service: str | None = None,
) -> DeadLetter:
    """A record that ``stage`` could not process, as encoded bytes, and why."""
    return {
        "request_id": request_id,
        "service": service,
        "stage": stage,
        "error": error,
        "record": record,
        "at_ms": at_ms,
    }


def feedback(
    *,
    request_id: str,
    service: str,
    label: str,
    labelled_ms: int,
    observed_ms: int | None = None,
    source: str | None = None,
) -> Feedback:
    """The true outcome of request ``request_id`` of ``service``: ``label`` is its JSON (as
    outputs are), given at ``labelled_ms``; ``observed_ms`` is when the outcome happened, if
    known. Encode several with ``serde.encode_batch(Kind.FEEDBACK, batch_id, items)`` for topic
    ``rdv.feedback``."""
    return {
        "request_id": request_id,
        "service": service,
        "label": label,
        "labelled_ms": labelled_ms,
        "observed_ms": observed_ms,
        "source": source,
    }
