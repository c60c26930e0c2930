"""The jobs' live metrics in Flink's metric system: thin wrappers over
:mod:`rendezvous.live_metrics`, opened in an operator's ``open()``.

Each metric sits in the group ``rendezvous`` and key/value groups for its labels, which
Flink's Prometheus reporter turns into labels (``service="fraud"``); docs/metrics.md lists
the resulting names. A counter is registered the first time its label values occur and kept,
so a batch costs one increment per total, never a lookup in Flink.

In thread mode a PyFlink gauge with a Python callback would be read from the reporter's
thread, and its value must be an integer; so every rate here is a pair of counters (divided
in PromQL), and the one gauge, the canary's PSI, is PyFlink's ``distribution``, which in
thread mode is a JVM-side gauge holding the last integer it was given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pyflink.metrics import MetricGroup

from rendezvous import live_metrics as lm


class ScoreMetrics:
    """One model's scores, errors and latency histogram (the score job)."""

    def __init__(self, group: MetricGroup, service: str, model: str) -> None:
        g = group.add_group(lm.GROUP).add_group(lm.SERVICE, service).add_group(lm.MODEL, model)
        self._scores = g.counter(lm.SCORES_NAME)
        self._errors = g.counter(lm.SCORE_ERRORS_NAME)
        self._latency_sum = g.counter(lm.SCORE_LATENCY_SUM_NAME)
        self._buckets = [
            g.add_group(lm.LE, le).counter(lm.SCORE_LATENCY_NAME) for le in lm.bucket_labels()
        ]

    def add(self, scores: Sequence[Mapping[str, Any]]) -> None:
        if not scores:
            return
        tally = lm.tally_scores(scores)
        self._scores.inc(tally.scores)
        if tally.errors:
            self._errors.inc(tally.errors)
        self._latency_sum.inc(tally.latency_sum_ms)
        for counter, n in zip(self._buckets, tally.buckets, strict=True):
            if n:
                counter.inc(n)


class JoinMetrics:
    """Answers, fallbacks, the decisions' scores, agreement and canary PSI (the rendezvous
    job)."""

    def __init__(self, group: MetricGroup) -> None:
        self._root = group.add_group(lm.GROUP)
        self._core = lm.JoinMetrics()
        self._counters: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._gauges: dict[tuple[str, str], Any] = {}

    def on_requests(self, requests: Sequence[Mapping[str, Any]]) -> None:
        self._core.on_requests(requests)

    def add(
        self, results: Sequence[Mapping[str, Any]], decisions: Sequence[Mapping[str, Any]]
    ) -> None:
        if not results and not decisions:
            return
        tally = self._core.tally(results, decisions)
        if not tally:
            return
        for name, counts in (
            (lm.ANSWERS_NAME, tally.answers),
            (lm.FALLBACKS_NAME, tally.fallbacks),
            (lm.JOINED_SCORES_NAME, tally.joined),
            (lm.JOINED_ERRORS_NAME, tally.errors),
            (lm.LATE_SCORES_NAME, tally.late),
            (lm.COMPARED_NAME, tally.compared),
            (lm.AGREEMENTS_NAME, tally.agreements),
        ):
            for labels, n in counts.items():
                counter = self._counter(name, labels)  # registered at 0 too
                if n:
                    counter.inc(n)
        for (service, model), value in tally.psi.items():
            self._psi(service, model).update(lm.psi_gauge_value(value))

    def _group(self, keys: Sequence[str], values: Sequence[str]) -> MetricGroup:
        g = self._root
        for key, value in zip(keys, values, strict=True):
            g = g.add_group(key, value)
        return g

    def _counter(self, name: str, labels: tuple[str, ...]):
        counter = self._counters.get((name, labels))
        if counter is None:
            counter = self._group(lm.LABELS[name], labels).counter(name)
            self._counters[(name, labels)] = counter
        return counter

    def _psi(self, service: str, model: str):
        gauge = self._gauges.get((service, model))
        if gauge is None:
            gauge = self._group(lm.LABELS[lm.PSI_NAME], (service, model)).distribution(lm.PSI_NAME)
            self._gauges[(service, model)] = gauge
        return gauge
