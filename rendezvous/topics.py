"""Kafka topic names: the one place they are spelled."""

from __future__ import annotations

from rendezvous.serde import Kind

REQUESTS = "rdv.requests"
MODEL_INPUT = "rdv.model-input"
SCORES = "rdv.scores"
RESULTS = "rdv.results"
CONTROL = "rdv.control"
DECISIONS = "rdv.decisions"
DEAD_LETTER = "rdv.dead-letter"
# The proxy's API keys, by key id; compacted, so the latest record of each key is kept forever.
API_KEYS = "rdv.api-keys"
# Each proxy replica's count of each key's requests in the current quota window.
USAGE = "rdv.usage"

# True outcomes of past requests: the proxy's feedback endpoint and bulk producers write it.
FEEDBACK = "rdv.feedback"

ALL = (
    REQUESTS,
    MODEL_INPUT,
    SCORES,
    RESULTS,
    CONTROL,
    DECISIONS,
    DEAD_LETTER,
    API_KEYS,
    USAGE,
    FEEDBACK,
)

# Topics that must keep a single partition so that their order is global.
SINGLE_PARTITION = frozenset({CONTROL, API_KEYS, USAGE})

# Topics that keep the latest record of each key (cleanup.policy=compact) instead of a window.
COMPACTED = frozenset({API_KEYS, USAGE})

# The longest quota window: the usage topic keeps a record a little longer than that.
MAX_QUOTA_PERIOD_MS = 31 * 24 * 3600 * 1000

# Topics whose record timestamps the broker stamps on arrival (one clock, monotonic per
# partition): the rendezvous job's watermarks come from these.
LOG_APPEND_TIME = frozenset({MODEL_INPUT, SCORES})

# The topics the rendezvous job reads: the model inputs and the scores.
RENDEZVOUS = (MODEL_INPUT, SCORES)

# Heartbeats go into every partition of these, so that once a heartbeat stamped T has been read
# from a partition, every record stamped before T on that partition has been read too: the
# watermark can then pass a deadline only after every score produced before it, and no
# partition ever needs to be declared idle.
HEARTBEAT = RENDEZVOUS

# Each of these topics holds batches of one record kind and nothing else (a heartbeat is an
# empty batch of that kind), so that Flink SQL reads them with its Avro format.
ITEM_KIND = {
    MODEL_INPUT: Kind.MODEL_INPUT,
    SCORES: Kind.SCORE,
    DECISIONS: Kind.DECISION,
    FEEDBACK: Kind.FEEDBACK,
}
