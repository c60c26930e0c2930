"""Kafka topic names: the one place they are spelled."""

from __future__ import annotations

REQUESTS = "rdv.requests"
MODEL_INPUT = "rdv.model-input"
SCORES = "rdv.scores"
RESULTS = "rdv.results"
CONTROL = "rdv.control"
DECISIONS = "rdv.decisions"
DEAD_LETTER = "rdv.dead-letter"
CLOCK = "rdv.clock"

ALL = (REQUESTS, MODEL_INPUT, SCORES, RESULTS, CONTROL, DECISIONS, DEAD_LETTER, CLOCK)

# Topics that must keep a single partition so that their order is global.
SINGLE_PARTITION = frozenset({CONTROL, CLOCK})

# Topics whose record timestamps the broker stamps on arrival (one clock, monotonic per
# partition): the rendezvous job's watermarks come from these.
LOG_APPEND_TIME = frozenset({MODEL_INPUT, SCORES, CLOCK})
