"""Rollback on its own: watch each service's live first choice in its answers and hand the
first choice back to the one before it when it fails, misses deadlines or drifts for too long.

The core here is pure: :class:`Watch` is fed the results the rendezvous job writes (the same
stream the proxies read, so it sees trouble as fast as callers do) and says when a service's
rule is broken for the rule's time; :func:`fallback_policy` says what to restore. The shell
(``rendezvous guard``, :mod:`rendezvous.guard_run`) reads Kafka, publishes the new policy on
the control topic and records the event in MLflow.

What a result says about the model asked first: ``preferred`` means it answered in time; a
reason like ``fallback: champion failed, canary late`` names each model passed over, in the
order they were asked, so its first item is the first-asked model's outcome. Results decided
without the models (a request past its deadline at enrichment, an enrichment failure) say
nothing about any model and are not counted.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OK, FAILED, LATE = "ok", "failed", "late"
FIGURES = ("error_rate", "late_rate", "psi")
# PSI needs this many outputs in the reference and in the current window.
PSI_MIN_VALUES = 50
PSI_BINS = 10


@dataclass(frozen=True)
class GuardRule:
    """When a service's first choice is taken off: a figure over the last ``window_s`` above
    its threshold, at every check for ``for_s`` seconds, with at least ``min_requests``
    answers in the window. A threshold left ``None`` is not watched."""

    error_rate: float | None = None
    late_rate: float | None = None
    psi: float | None = None
    window_s: float = 60.0
    for_s: float = 30.0
    min_requests: int = 20

    def thresholds(self) -> dict[str, float]:
        return {f: getattr(self, f) for f in FIGURES if getattr(self, f) is not None}

    def describe(self) -> str:
        limits = ", ".join(f"{f} > {v:g}" for f, v in self.thresholds().items())
        return f"{limits} for {self.for_s:g} s (window {self.window_s:g} s)"


def first_asked(result: Mapping[str, Any]) -> tuple[str, str] | None:
    """(model, ok | failed | late) for the model the result's request asked first; None when
    the result says nothing about a model."""
    reason = result.get("reason") or ""
    if result.get("status") == "ok" and reason == "preferred":
        return (result["model"], OK) if result.get("model") else None
    kind, sep, rest = reason.partition(":")
    if not sep or kind.strip() not in ("fallback", "backstop", "no_answer"):
        return None
    first = rest.split(",", 1)[0].strip()
    model, _, outcome = first.rpartition(" ")
    if not model or outcome not in (FAILED, LATE):
        return None
    return model, outcome


def output_value(output: str | None) -> float | None:
    """A numeric answer (a number, or a mapping's single number) as a float; None otherwise."""
    import json

    if output is None:
        return None
    try:
        value = json.loads(output)
    except ValueError:
        return None
    if isinstance(value, Mapping) and len(value) == 1:
        (value,) = value.values()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def psi(reference: Iterable[float], current: Iterable[float], bins: int = PSI_BINS) -> float:
    """Population stability index of ``current`` against ``reference`` on the reference's
    quantile bins (see :func:`rendezvous.archive.metrics.psi`)."""
    from rendezvous.archive.metrics import bin_edges
    from rendezvous.archive.metrics import psi as psi_of

    ref = np.asarray(list(reference), dtype=float)
    return psi_of(ref, np.asarray(list(current), dtype=float), bin_edges(ref, bins))


@dataclass
class _Seen:
    """What one service's current first choice did, as the guard saw it."""

    model: str
    since_ms: int
    events: deque[tuple[int, str]] = field(default_factory=deque)  # (at_ms, outcome)
    values: deque[tuple[int, float]] = field(default_factory=deque)  # (at_ms, output)
    reference: list[float] = field(default_factory=list)  # its first outputs as first choice
    breach_since_ms: int | None = None


@dataclass(frozen=True)
class Figures:
    """A first choice's figures over the window at one check."""

    model: str
    answers: int
    error_rate: float
    late_rate: float
    psi: float

    def get(self, figure: str) -> float:
        return getattr(self, figure)


@dataclass(frozen=True)
class Breach:
    """A rule broken for its time: take ``model`` off as ``service``'s first choice."""

    service: str
    model: str
    figures: Figures
    broken: dict[str, tuple[float, float]]  # figure -> (value, threshold)
    since_ms: int
    at_ms: int

    def why(self, rule: GuardRule) -> str:
        parts = ", ".join(f"{f} {v:.3g} > {t:g}" for f, (v, t) in self.broken.items())
        held = (self.at_ms - self.since_ms) / 1000
        return (
            f"{self.model}: {parts} over the last {rule.window_s:g} s "
            f"({self.figures.answers} answers), for {held:.0f} s"
        )


class Watch:
    """Per service, a rolling window of what its first choice did; ``check`` says when a rule
    is broken for its time."""

    def __init__(self, rules: Mapping[str, GuardRule]) -> None:
        self.rules = dict(rules)
        self._seen: dict[str, _Seen] = {}

    def first_choice(self, service: str, model: str, now_ms: int) -> None:
        """Tell the watch the service's live first choice; a new one starts with a clean slate
        (its own PSI reference, no breach carried over)."""
        seen = self._seen.get(service)
        if seen is None or seen.model != model:
            self._seen[service] = _Seen(model, now_ms)

    def add(self, result: Mapping[str, Any], at_ms: int) -> None:
        """Count one result (``at_ms``: when it was decided)."""
        seen = self._seen.get(result.get("service"))
        if seen is None:
            return
        asked = first_asked(result)
        if asked is None or asked[0] != seen.model:
            return
        seen.events.append((at_ms, asked[1]))
        rule = self.rules[result["service"]]
        if rule.psi is None or asked[1] != OK:
            return
        value = output_value(result.get("output"))
        if value is None:
            return
        if len(seen.reference) < PSI_MIN_VALUES * 4:
            seen.reference.append(value)
        else:
            seen.values.append((at_ms, value))

    def figures(self, service: str, now_ms: int) -> Figures | None:
        seen = self._seen.get(service)
        if seen is None:
            return None
        start = now_ms - self.rules[service].window_s * 1000
        while seen.events and seen.events[0][0] < start:
            seen.events.popleft()
        while seen.values and seen.values[0][0] < start:
            seen.values.popleft()
        n = len(seen.events)
        failed = sum(1 for _, o in seen.events if o == FAILED)
        late = sum(1 for _, o in seen.events if o == LATE)
        drift = math.nan
        if len(seen.reference) >= PSI_MIN_VALUES and len(seen.values) >= PSI_MIN_VALUES:
            drift = psi(seen.reference, (v for _, v in seen.values))
        return Figures(
            seen.model,
            n,
            failed / n if n else math.nan,
            late / n if n else math.nan,
            drift,
        )

    def check(self, service: str, now_ms: int) -> Breach | None:
        """A :class:`Breach` once the service's rule has been broken at every check for its
        ``for_s``; None otherwise (and the clock starts again whenever a check passes)."""
        rule, seen = self.rules.get(service), self._seen.get(service)
        if rule is None or seen is None:
            return None
        figures = self.figures(service, now_ms)
        assert figures is not None
        broken = {}
        if figures.answers >= rule.min_requests:
            for figure, threshold in rule.thresholds().items():
                value = figures.get(figure)
                if value == value and value > threshold:  # nan (not enough data) never breaks
                    broken[figure] = (value, threshold)
        if not broken:
            seen.breach_since_ms = None
            return None
        if seen.breach_since_ms is None:
            seen.breach_since_ms = now_ms
        if now_ms - seen.breach_since_ms < rule.for_s * 1000:
            return None
        return Breach(service, seen.model, figures, broken, seen.breach_since_ms, now_ms)


def fallback_version(history: Any, model: str) -> int | None:
    """The latest earlier policy version (a :class:`rendezvous.policy.History`'s) whose first
    choice is not ``model``; None when every version so far put ``model`` first."""
    for number in reversed(history.versions[:-1]):
        if history.version(number).policy.preference[0] != model:
            return number
    return None


def next_in_line(preference: Iterable[str], model: str, roles: Mapping[str, str]) -> str | None:
    """The model after ``model`` in the preference that may answer first (not the backstop);
    None when there is none."""
    rest = [m for m in preference if m != model and roles.get(m) not in ("backstop", "decoy")]
    return rest[0] if rest else None
