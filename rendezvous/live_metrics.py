"""The jobs' live metrics, per service and model: what to count in a batch. Pure: no Flink.

The score and rendezvous jobs report through Flink's metric system (and so through its
Prometheus reporter; see docs/metrics.md). A Flink call costs a crossing from Python into the
JVM, so a job tallies a whole batch here first and then adds each total once: a batch of a
hundred requests costs a handful of counter increments, not hundreds.

Names are stable (dashboards and alert rules use them): the metric names are the ``*_NAME``
constants below and the label (metric group) keys are :data:`SERVICE`, :data:`MODEL`,
:data:`REASON` and :data:`LE`.

- **Score job** (one per model): scores written and their errors, and the score latency
  (``scored_ms - received_ms``, as the archive's ``latency_ms``) as a cumulative histogram,
  one counter per upper bound ``le`` in milliseconds (``+Inf`` counts every score), and its sum.
- **Rendezvous job**: answers by answering model and reason kind (:func:`reason_kind`, the
  reason up to its first colon), fallbacks (answers not by the request's first choice), and
  from each decision, per model: the scores that reached it, their errors, the late ones,
  and the agreement with the first choice of the policy the request was decided under (labels
  read as the archive reads them; see :mod:`rendezvous.archive.metrics`). A rolling
  agreement is ``rate(agreements) / rate(compared)`` over any window. A canary's PSI against
  the first choice is computed over its last :data:`PSI_WINDOW` values with the archive's own
  binning (:func:`rendezvous.archive.metrics.psi`), every :data:`PSI_EVERY` new values.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rendezvous.archive.metrics import OutputFields, bin_edges, psi, read_output

# ---- names ---------------------------------------------------------------------------------

GROUP = "rendezvous"  # every metric of the project's jobs sits in this group
SERVICE, MODEL, REASON, LE = "service", "model", "reason", "le"

SCORES_NAME = "scores"
SCORE_ERRORS_NAME = "score_errors"
SCORE_LATENCY_NAME = "score_latency_ms"  # a counter per bucket, in the group LE
SCORE_LATENCY_SUM_NAME = "score_latency_ms_sum"

ANSWERS_NAME = "answers"  # in the groups SERVICE, MODEL, REASON
FALLBACKS_NAME = "fallbacks"
JOINED_SCORES_NAME = "joined_scores"
JOINED_ERRORS_NAME = "joined_errors"
LATE_SCORES_NAME = "late_scores"
COMPARED_NAME = "compared"
AGREEMENTS_NAME = "agreements"
PSI_NAME = "canary_psi_x1e6"  # PSI times 10^6: Flink's Python gauges hold integers

# Each metric's label keys, in the order of its groups (they are part of its name).
_PAIR = (SERVICE, MODEL)
LABELS: dict[str, tuple[str, ...]] = {
    SCORES_NAME: _PAIR,
    SCORE_ERRORS_NAME: _PAIR,
    SCORE_LATENCY_NAME: (SERVICE, MODEL, LE),
    SCORE_LATENCY_SUM_NAME: _PAIR,
    ANSWERS_NAME: (SERVICE, MODEL, REASON),
    FALLBACKS_NAME: _PAIR,
    JOINED_SCORES_NAME: _PAIR,
    JOINED_ERRORS_NAME: _PAIR,
    LATE_SCORES_NAME: _PAIR,
    COMPARED_NAME: _PAIR,
    AGREEMENTS_NAME: _PAIR,
    PSI_NAME: _PAIR,
}
# Flink's Prometheus reporter names an operator's metric by its scope and groups.
OPERATOR_SCOPE = "flink_taskmanager_job_task_operator"


def prometheus_name(name: str) -> str:
    """The name Flink's Prometheus reporter gives one of the metrics above, such as
    ``flink_taskmanager_job_task_operator_rendezvous_service_model_scores``."""
    return "_".join((OPERATOR_SCOPE, GROUP, *LABELS[name], name))


# Upper bounds of the latency buckets, in milliseconds; the last bucket is "+Inf".
LATENCY_BUCKETS_MS: tuple[int, ...] = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
INF = "+Inf"

NO_MODEL = "none"  # the model label of an error answer (no model answered)
REASON_KINDS = frozenset(
    {
        "preferred",
        "fallback",
        "backstop",
        "no_answer",
        "deadline_exceeded",
        "enrichment_failed",
        "orphan",
    }
)
FALLBACK_KINDS = frozenset({"fallback", "backstop"})
PSI_WINDOW = 1000
PSI_EVERY = 100
PSI_SCALE = 1_000_000
CANARY = "canary"
CHAMPION = "champion"


def reason_kind(reason: str | None) -> str:
    """The kind of an answer's reason: its text up to the first colon ("fallback: champion
    late" is ``fallback``); ``other`` for a reason of no known kind (the label stays small)."""
    kind = (reason or "").split(":", 1)[0].strip()
    return kind if kind in REASON_KINDS else "other"


def bucket_labels() -> list[str]:
    """The ``le`` label of each latency bucket, in order."""
    return [str(b) for b in LATENCY_BUCKETS_MS] + [INF]


# ---- the score job -------------------------------------------------------------------------


@dataclass
class ScoreTally:
    """What one batch of one model's scores adds."""

    scores: int = 0
    errors: int = 0
    latency_sum_ms: int = 0
    # cumulative: buckets[i] counts the scores with latency <= LATENCY_BUCKETS_MS[i]; the
    # last entry (+Inf) counts them all
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))


def tally_scores(scores: Iterable[Mapping[str, Any]]) -> ScoreTally:
    tally = ScoreTally()
    per_bucket = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    for s in scores:
        tally.scores += 1
        if s["status"] != "ok":
            tally.errors += 1
        latency = s["scored_ms"] - s["received_ms"]
        tally.latency_sum_ms += latency
        per_bucket[bisect.bisect_left(LATENCY_BUCKETS_MS, latency)] += 1
    running = 0
    for i, n in enumerate(per_bucket):
        running += n
        tally.buckets[i] = running
    return tally


# ---- the rendezvous job --------------------------------------------------------------------


@dataclass
class JoinTally:
    """What one call of the rendezvous function adds, by label values."""

    answers: Counter = field(default_factory=Counter)  # (service, model, reason kind)
    fallbacks: Counter = field(default_factory=Counter)  # (service, model)
    joined: Counter = field(default_factory=Counter)  # (service, model)
    errors: Counter = field(default_factory=Counter)
    late: Counter = field(default_factory=Counter)
    compared: Counter = field(default_factory=Counter)
    agreements: Counter = field(default_factory=Counter)
    psi: dict[tuple[str, str], float] = field(default_factory=dict)  # updated PSIs

    def __bool__(self) -> bool:
        return bool(self.answers or self.joined or self.psi)


class JoinMetrics:
    """The rendezvous job's bookkeeping for its live metrics: the first choice of each policy
    version seen, and the rolling windows of PSI. One per operator instance, in memory (not
    Flink state: after a restart the windows fill again)."""

    def __init__(
        self,
        fields: OutputFields | None = None,
        *,
        psi_window: int = PSI_WINDOW,
        psi_every: int = PSI_EVERY,
    ) -> None:
        self.fields = fields or OutputFields()
        self.first_choices: dict[tuple[str, int], str] = {}
        self._psi_window, self._psi_every = psi_window, psi_every
        # (service, canary) -> the canary's own first values, its reference; then its latest
        self._canary_reference: dict[tuple[str, str], list[float]] = {}
        self._canary: dict[tuple[str, str], deque[float]] = {}
        self._since: Counter = Counter()  # (service, canary) -> values since its last PSI

    def on_requests(self, requests: Sequence[Mapping[str, Any]]) -> None:
        """Learn the first choice of each policy version in a batch of model inputs."""
        for r in requests:
            policy = r.get("policy")
            if policy and policy.get("preference"):
                self.first_choices[(r["service"], policy["version"])] = policy["preference"][0]

    def tally(
        self, results: Iterable[Mapping[str, Any]], decisions: Iterable[Mapping[str, Any]]
    ) -> JoinTally:
        out = JoinTally()
        for r in results:
            kind = reason_kind(r["reason"])
            model = r["model"] or NO_MODEL
            out.answers[(r["service"], model, kind)] += 1
            if kind in FALLBACK_KINDS:
                out.fallbacks[(r["service"], model)] += 1
        for d in decisions:
            self._decision(d, out)
        return out

    def _decision(self, d: Mapping[str, Any], out: JoinTally) -> None:
        service, scores = d["service"], d["scores"]
        if not scores:
            return
        reference = self.first_choices.get((service, d["policy_version"]))
        if reference is None:  # a policy not seen since a restart: the configuration's
            reference = next((s["model"] for s in scores if s["role"] == CHAMPION), None)
        read = {}
        for s in scores:
            key = (service, s["model"])
            out.joined[key] += 1
            # += 0 names the pair, so that a ratio's numerator exists (at 0) with its
            # denominator
            out.errors[key] += s["status"] != "ok"
            out.late[key] += bool(s["late"])
            read[s["model"]] = read_output(s["output"], self.fields)
        ref_label, _ = read.get(reference, (None, math.nan))
        for s in scores:
            model = s["model"]
            if model == reference:
                continue
            label, value = read[model]
            if label is not None and ref_label is not None:
                out.compared[(service, model)] += 1
                out.agreements[(service, model)] += label == ref_label
            if s["role"] == CANARY and value == value:
                self._canary_value(service, model, value, out)

    def _canary_value(self, service: str, model: str, value: float, out: JoinTally) -> None:
        """The canary against its own first ``psi_window`` values since the job started (the
        stable baseline), apart from its agreement with the first choice."""
        key = (service, model)
        reference = self._canary_reference.get(key)
        if reference is None:
            out.psi[key] = math.nan  # the gauge exists (at -1) until there is a PSI
            reference = self._canary_reference[key] = []
            self._canary[key] = deque(maxlen=self._psi_window)
        if len(reference) < self._psi_window:
            reference.append(value)
            return
        self._canary[key].append(value)
        self._since[key] += 1
        if self._since[key] < self._psi_every:
            return
        self._since[key] = 0
        out.psi[key] = psi(reference, self._canary[key], bin_edges(reference))


def psi_gauge_value(value: float) -> int:
    """A PSI as the integer the gauge holds (PSI times :data:`PSI_SCALE`); -1 when unknown."""
    return round(value * PSI_SCALE) if value == value else -1
