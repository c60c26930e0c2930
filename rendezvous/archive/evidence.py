"""``rendezvous promote SERVICE MODEL --if CONDITION --window 24h``: promotion on evidence.

A condition is clauses over a model's figures in the archive's last window, joined by
``and``::

    agreement>=0.95 and late_rate<=0.01 and n>=500

Each clause is ``FIGURE OP NUMBER``: a figure of :data:`FIGURES`, one of ``>= <= > < == !=``,
and a number (``95%`` is 0.95). The grammar is that small on purpose, read by a tokenizer
here, and never evaluated as Python. The figures are those of the report
(:mod:`rendezvous.archive.metrics`) for the one model, with agreement and deltas measured
against the current first choice of the service (the model a promotion would displace). A
figure that cannot be measured in the window (no labels for accuracy, no scores at all) fails
its clause: a promotion needs evidence, not its absence.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rendezvous.archive.layout import ArchiveError

if TYPE_CHECKING:
    from rendezvous.archive.metrics import OutputFields
    from rendezvous.archive.report import Window


@dataclass(frozen=True)
class Figure:
    """A figure a condition can name: its column in the report's model table and what it is."""

    column: str
    doc: str
    missing: str  # why it can be missing: said when a clause cannot be judged
    kind: str = "share"  # share | count | ms | number


FIGURES: dict[str, Figure] = {
    "agreement": Figure(
        "agreement",
        "share of the requests both scored ok where the model's label equals the first choice's",
        "no request that both the model and the first choice scored ok with a label",
    ),
    "compared": Figure("compared", "requests agreement was measured on", "", "count"),
    "late_rate": Figure("late_rate", "share of its scores after the deadline", "no scores"),
    "error_rate": Figure("error_rate", "share of its scores that are errors", "no scores"),
    "n": Figure("scores", "requests the model scored (errors included)", "", "count"),
    "answered": Figure("answered", "requests it answered", "", "count"),
    "win_rate": Figure("win_rate", "share of the decisions it answered", "no decisions"),
    "latency_p50": Figure("latency_p50", "median latency of its ok scores", "no ok scores", "ms"),
    "latency_p95": Figure("latency_p95", "p95 latency of its ok scores", "no ok scores", "ms"),
    "latency_p99": Figure("latency_p99", "p99 latency of its ok scores", "no ok scores", "ms"),
    "delta_mean": Figure(
        "delta_mean",
        "mean of its value minus the first choice's",
        "no numeric output on requests both scored ok",
        "number",
    ),
    "labelled": Figure("labelled", "its ok scores with a true label", "", "count"),
    "accuracy": Figure(
        "accuracy",
        "share of its labelled scores equal to the true label",
        "no true labels for its scores in the window",
    ),
    "auc": Figure(
        "auc",
        "ROC AUC against the true labels (binary classifiers)",
        "needs true labels of both classes and probabilities",
        "number",
    ),
    "log_loss": Figure(
        "log_loss",
        "log-loss against the true labels (binary classifiers)",
        "needs true labels and probabilities",
        "number",
    ),
}

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}

EXAMPLE = '"agreement>=0.95 and late_rate<=0.01"'


# ---- the condition -----------------------------------------------------------------------


@dataclass(frozen=True)
class Clause:
    figure: str
    op: str
    threshold: float
    text: str  # the threshold as written

    def __str__(self) -> str:
        return f"{self.figure} {self.op} {self.text}"


_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?%?)"
    r"|(?P<op>=>|=<|[<>=!]=?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<other>\S+?)"
    r")"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out = []
    position = 0
    while True:
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            break
        kind = match.lastgroup
        assert kind is not None
        out.append((kind, match.group(kind)))
        position = match.end()
    return out


def valid_names() -> str:
    return ", ".join(FIGURES)


def _error(message: str) -> ArchiveError:
    return ArchiveError(f"--if: {message}")


def parse_condition(text: str) -> tuple[Clause, ...]:
    """The clauses of ``FIGURE OP NUMBER [and FIGURE OP NUMBER ...]``; an error naming the
    problem otherwise."""
    tokens = _tokens(text)
    if not tokens:
        raise _error(f"empty condition; expected FIGURE OP NUMBER [and ...], e.g. {EXAMPLE}")
    clauses: list[Clause] = []
    i = 0
    while True:
        clause, i = _clause(tokens, i)
        clauses.append(clause)
        if i == len(tokens):
            return tuple(clauses)
        kind, value = tokens[i]
        if kind != "name" or value.lower() != "and":
            raise _error(
                f"expected 'and' after {clause}, got {value!r}; clauses are joined by 'and' "
                f"only, e.g. {EXAMPLE}"
            )
        i += 1
        if i == len(tokens):
            raise _error(f"a clause must follow 'and' after {clause}")


def _clause(tokens: Sequence[tuple[str, str]], i: int) -> tuple[Clause, int]:
    def at(j: int) -> tuple[str, str]:
        return tokens[j] if j < len(tokens) else ("end", "")

    kind, name = at(i)
    if kind != "name":
        shown = repr(name) if kind != "end" else "the end"
        raise _error(f"expected a figure name, got {shown}; valid figures: {valid_names()}")
    if name not in FIGURES:
        near = difflib.get_close_matches(name, FIGURES, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise _error(f"unknown figure {name!r}{hint}; valid figures: {valid_names()}")
    kind, op = at(i + 1)
    if kind != "op" or op not in OPERATORS:
        shown = repr(op) if kind != "end" else "nothing"
        raise _error(f"bad operator {shown} after {name!r}; use one of {', '.join(OPERATORS)}")
    kind, number = at(i + 2)
    if kind != "number":
        shown = repr(number) if kind != "end" else "nothing"
        raise _error(f"expected a number after '{name} {op}', got {shown}")
    threshold = float(number[:-1]) / 100 if number.endswith("%") else float(number)
    return Clause(name, op, threshold, number), i + 3


_WINDOW = re.compile(r"(\d+)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_window(text: str) -> timedelta:
    """``30m``, ``24h``, ``7d``: a whole number above 0 and a unit (s, m, h, d, w)."""
    match = _WINDOW.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        raise ArchiveError(
            f"--window {text!r} is not a window: expected a whole number above 0 and a unit, "
            f"s, m, h, d or w (30m, 24h, 7d)"
        )
    return timedelta(seconds=int(match[1]) * _UNIT_S[match[2]])


# ---- judging -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    clause: Clause
    value: float
    passed: bool
    why: str  # why it failed without a value; empty otherwise


def judge(clauses: Sequence[Clause], figures: Mapping[str, float]) -> list[Verdict]:
    """Each clause against the figures; a missing (NaN) figure fails with its reason."""
    verdicts = []
    for clause in clauses:
        value = float(figures.get(clause.figure, math.nan))
        if math.isnan(value):
            why = FIGURES[clause.figure].missing or "not measured"
            verdicts.append(Verdict(clause, value, False, f"no value: {why}"))
            continue
        passed = OPERATORS[clause.op](value, clause.threshold)
        verdicts.append(Verdict(clause, value, passed, ""))
    return verdicts


def figures_of(models: Any, model: str) -> dict[str, float]:
    """The :data:`FIGURES` of ``model`` from a report's model table (NaN when it has no row)."""
    rows = models[models["model"] == model].to_dict("records")
    row = rows[0] if rows else {}
    out = {}
    for name, figure in FIGURES.items():
        value = row.get(figure.column)
        out[name] = math.nan if value is None else float(value)
        if figure.kind == "count" and math.isnan(out[name]):
            out[name] = 0.0  # counted nothing
    return out


def show(name: str, value: float) -> str:
    """A figure as the table shows it: in the units a threshold is written in."""
    if math.isnan(value):
        return "-"
    kind = FIGURES[name].kind
    if kind == "count":
        return str(int(value))
    if kind == "ms":
        return f"{value:.1f}"
    return f"{value:.4f}"


# ---- the evidence ------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """A model's figures over a window, and what they were measured against."""

    service: str
    model: str
    reference: str | None
    window: Window
    requests: int  # requests of the service in the window
    figures: dict[str, float]
    notes: tuple[str, ...] = ()


_SCORES = (
    "SELECT service, request_id, model, version, role, status, output, latency_ms, late, "
    "received_ms, scored_ms FROM scores"
)
_DECISIONS = (
    "SELECT service, request_id, model, role, status, reason, received_ms, decided_ms, "
    "policy_version FROM decisions"
)


def gather(
    root: Path,
    *,
    service: str,
    model: str,
    window: Window,
    reference: str | None,
    fields: OutputFields,
) -> Evidence:
    """``model``'s figures in ``service``'s archived rows of ``window``, compared with
    ``reference`` (the current first choice); with no rows the figures are NaN or 0."""
    from rendezvous.archive.metrics import service_report
    from rendezvous.archive.report import load_labels, where_clause
    from rendezvous.archive.sql import ArchiveSQL

    where, params = where_clause(service, window)
    with ArchiveSQL(root) as db:
        scores = db.frame(_SCORES + where, params)
        decisions = db.frame(_DECISIONS + where, params)
    requests = set(scores["request_id"]) | set(decisions["request_id"])
    if not requests:
        return Evidence(service, model, reference, window, 0, figures_of(scores, model))
    labels = load_labels(root, service=service, window=window)
    report = service_report(
        service,
        scores,
        decisions,
        fields,
        labels=labels[labels["service"] == service],
        reference=reference,
    )
    return Evidence(
        service,
        model,
        reference,
        window,
        len(requests),
        figures_of(report.models, model),
        report.notes,
    )


def lines(evidence: Evidence, verdicts: Sequence[Verdict], *, span: str) -> list[str]:
    """The evidence as a small table, one clause a row, pass or fail."""
    from rendezvous.archive.render import text_table

    e = evidence
    against = (
        f"; agreement and deltas against {e.reference}, the current first choice"
        if e.reference and e.reference != e.model
        else ""
    )
    head = [
        f"evidence for {e.model} in {e.service}, the last {span} ({e.window.describe()}): "
        f"{e.requests} requests, {show('n', e.figures['n'])} scored by {e.model}{against}"
    ]
    if e.reference == e.model:
        head.append(f"  note: {e.model} is the first choice already: agreement has no value")
    rows = []
    for v in verdicts:
        result = "pass" if v.passed else ("fail" + (f" ({v.why})" if v.why else ""))
        rows.append([v.clause.figure, show(v.clause.figure, v.value), str(v.clause), result])
    return [*head, text_table(["figure", "value", "clause", "result"], rows)]


def refusal(evidence: Evidence, verdicts: Sequence[Verdict]) -> str:
    """The one-line reason a promotion is refused."""
    e = evidence
    if e.requests == 0:
        return (
            f"{e.model} not promoted: no archived scores or decisions of {e.service} "
            f"{e.window.describe()}, so there is no evidence; widen --window, or check the "
            f'archive (rendezvous sql "SELECT max(received_ms) FROM scores")'
        )
    if not e.figures["n"]:
        return (
            f"{e.model} not promoted: it has no archived scores in {e.service} "
            f"{e.window.describe()}, so there is no evidence; is its scoring job running "
            f"(`rendezvous status`)?"
        )
    failed = [v for v in verdicts if not v.passed]
    detail = "; ".join(
        f"{v.clause} ({v.why})" if v.why else f"{v.clause} (is {show(v.clause.figure, v.value)})"
        for v in failed
    )
    return f"{e.model} not promoted in {e.service}: {len(failed)} of {len(verdicts)} clause(s) fail: {detail}"
