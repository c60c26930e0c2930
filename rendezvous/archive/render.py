"""The report as text tables and as one self-contained HTML page with PNG plots.

Plots are drawn with matplotlib's Agg canvas (no display, no global pyplot state) and embedded
as base64 ``data:`` URIs, so the page is a single file.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from rendezvous.archive.metrics import Drift, ServiceReport

PSI_WATCH, PSI_SHIFTED = 0.1, 0.25  # the usual reading of PSI: stable / watch / shifted


# ---- cells -------------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def percent(value: Any) -> str:
    return "-" if _missing(value) else f"{100 * value:.1f}%"


def millis(value: Any) -> str:
    return "-" if _missing(value) else f"{value:.1f}"


def signed(value: Any) -> str:
    return "-" if _missing(value) else f"{value:+.4f}"


def count(value: Any) -> str:
    return "-" if _missing(value) else str(int(value))


def number(value: Any) -> str:
    return "-" if _missing(value) else f"{value:.4f}"


# (header, column, format) of the model table
MODEL_TABLE: list[tuple[str, str, Callable[[Any], str]]] = [
    ("model", "model", str),
    ("role", "role", str),
    ("scores", "scores", count),
    ("errors", "error_rate", percent),
    ("late", "late_rate", percent),
    ("p50 ms", "latency_p50", millis),
    ("p95 ms", "latency_p95", millis),
    ("p99 ms", "latency_p99", millis),
    ("agree", "agreement", percent),
    ("n", "compared", count),
    ("Δ mean", "delta_mean", signed),
    ("Δ p05", "delta_p05", signed),
    ("Δ p50", "delta_p50", signed),
    ("Δ p95", "delta_p95", signed),
    ("wins", "win_rate", percent),
]


# (header, column, format) of the table against the true labels
OUTCOME_TABLE: list[tuple[str, str, Callable[[Any], str]]] = [
    ("model", "model", str),
    ("role", "role", str),
    ("labelled", "labelled", count),
    ("accuracy", "accuracy", percent),
    ("AUC", "auc", number),
    ("log-loss", "log_loss", number),
    ("agree", "agreement", percent),
]


def model_rows(
    models: pd.DataFrame, table: Sequence[tuple[str, str, Callable[[Any], str]]] = MODEL_TABLE
) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells of the model table (or of another of its views)."""
    headers = [h for h, _, _ in table]
    rows = [[fmt(row[col]) for _, col, fmt in table] for _, row in models.iterrows()]
    return headers, rows


def outcome_rows(models: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the models against the true labels."""
    return model_rows(models, OUTCOME_TABLE)


def first_choice_text(r: ServiceReport) -> str:
    """What the models were compared with: ``gbm (first choice of policy v1)``, one entry per
    policy version in the window."""
    if not r.first_choices:
        return r.champion or "(nothing)"
    parts = []
    for version, model, n in r.first_choices:
        where = f"first choice of policy v{version}" if version is not None else "role champion"
        count = f", {n} requests" if len(r.first_choices) > 1 else ""
        parts.append(f"{model} ({where}{count})")
    return ", ".join(parts)


NO_LABELS = "no true labels for these requests (POST /v1/requests/{id}/feedback)"


def outcome_title(report: ServiceReport) -> str:
    return (
        f"against the true labels of {report.labelled} request(s) (first label each; "
        "AUC and log-loss for binary classifiers):"
    )


# (header, column, format) of the A/B arms table
ARM_TABLE: list[tuple[str, str, Callable[[Any], str]]] = [
    ("arm", "arm", str),
    ("requests", "requests", count),
    ("share", "share", percent),
    ("answered", "answered_by_arm", percent),
    ("errors", "error_rate", percent),
    ("p50 ms", "latency_p50", millis),
    ("p95 ms", "latency_p95", millis),
    ("labelled", "labelled", count),
    ("accuracy", "accuracy", percent),
]
SAMPLE_TABLE: list[tuple[str, str, Callable[[Any], str]]] = [
    ("model", "model", str),
    ("not sampled", "not_sampled", count),
    ("sampled", "sampled_share", percent),
]


def arm_rows(arms: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    return model_rows(arms, ARM_TABLE)


def sample_rows(samples: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    return model_rows(samples, SAMPLE_TABLE)


def reason_rows(reasons: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    rows = [[r.model or "(none)", r.reason, str(r.count)] for r in reasons.itertuples()]
    return ["model", "reason", "decisions"], rows


def _psi_rows(
    drift: Any, counts: tuple[str, str], headers: tuple[str, str]
) -> tuple[list[str], list[list[str]]]:
    """The window's PSI, then each hour's, with the two counts named by ``counts``."""
    first, second = counts
    rows = [
        ["window", *(count(getattr(drift, f"{c}_n")) for c in counts), number(drift.window_psi)]
    ]
    for r in drift.hourly.to_dict("records"):
        rows.append(
            [f"{r['hour']:%Y-%m-%d %H:00}", count(r[f"{first}_n"]), count(r[f"{second}_n"]),
             number(r["psi"])]
        )  # fmt: skip
    return ["hour (UTC)", *headers, "PSI"], rows


def drift_rows(drift: Drift) -> tuple[list[str], list[list[str]]]:
    return _psi_rows(drift, ("champion", "canary"), ("first choice n", "canary n"))


def self_drift_rows(drift: Any) -> tuple[list[str], list[list[str]]]:
    """A canary against its own reference window (:class:`rendezvous.archive.drift.SelfDrift`)."""
    return _psi_rows(drift, ("reference", "canary"), ("reference n", "canary n"))


def feature_drift_rows(features: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    rows = [
        [str(r.feature), count(r.reference_n), count(r.current_n), number(r.psi)]
        for r in features.itertuples()
    ]
    return ["feature", "reference n", "window n", "PSI"], rows


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    """Columns padded to their widest cell; text left-aligned, numbers right-aligned."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(cells, widths, strict=True)
        ]
        return (indent + "  ".join(parts)).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def _numeric(cell: str) -> bool:
    return cell == "-" or cell.lstrip("+-").replace(".", "", 1).rstrip("%").isdigit()


# ---- plots -------------------------------------------------------------------------------


def _figure(width: float = 7.0, height: float = 3.2) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_tag(fig: Figure, alt: str) -> str:
    """``fig`` as an <img> with the PNG inlined."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def latency_figure(models: pd.DataFrame) -> Figure | None:
    """Latency p50/p95/p99 per model, grouped bars."""
    shown = models.dropna(subset=["latency_p50"])
    if shown.empty:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    width = 0.27
    for i, (label, col) in enumerate(
        [("p50", "latency_p50"), ("p95", "latency_p95"), ("p99", "latency_p99")]
    ):
        xs = [x + (i - 1) * width for x in range(len(shown))]
        ax.bar(xs, shown[col], width=width, label=label)
    ax.set_xticks(range(len(shown)), shown["model"])
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency of ok scores")
    ax.legend()
    return fig


def delta_figure(deltas: pd.DataFrame, champion: str | None) -> Figure | None:
    """Distribution of each model's per-request deltas to the first choice."""
    if deltas.empty:
        return None
    models = sorted(deltas["model"].unique())
    fig = _figure()
    ax = fig.add_subplot()
    ax.boxplot([deltas.loc[deltas["model"] == m, "delta"] for m in models], tick_labels=models)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_ylabel(f"value - {champion or 'first choice'}")
    ax.set_title("Score deltas to the first choice, per request")
    return fig


def drift_figure(drift: Sequence[Drift]) -> Figure | None:
    """PSI of each canary per hour, with the usual 0.1 / 0.25 reading lines."""
    series = [(d.canary, d.hourly.dropna(subset=["psi"])) for d in drift]
    series = [(name, h) for name, h in series if not h.empty]
    if not series:
        return None
    import pandas as pd

    fig = _figure()
    ax = fig.add_subplot()
    for name, hourly in series:
        ax.plot(hourly["hour"].dt.tz_localize(None), hourly["psi"], marker="o", label=name)
    hours = [h for _, hourly in series for h in hourly["hour"].dt.tz_localize(None)]
    half_hour = pd.Timedelta(minutes=30)
    ax.set_xlim(min(hours) - half_hour, max(hours) + half_hour)
    ax.axhline(PSI_WATCH, color="orange", linestyle="--", linewidth=0.8, label="0.1 watch")
    ax.axhline(PSI_SHIFTED, color="red", linestyle="--", linewidth=0.8, label="0.25 shifted")
    ax.set_ylabel("PSI")
    ax.set_xlabel("hour (UTC)")
    ax.set_title("Canary drift against the first choice")
    ax.legend()
    fig.autofmt_xdate()
    return fig


def distribution_figure(values: pd.DataFrame) -> Figure | None:
    """Histogram of the first choice's and the canaries' values over the window."""
    if values.empty or values["role"].nunique() < 2:
        return None
    import numpy as np

    fig = _figure()
    ax = fig.add_subplot()
    bins = np.histogram_bin_edges(values["value"], bins=20)
    for model in sorted(values["model"].unique()):
        ax.hist(
            values.loc[values["model"] == model, "value"],
            bins=bins,
            histtype="step",
            density=True,
            label=model,
        )
    ax.set_xlabel("value")
    ax.set_ylabel("density")
    ax.set_title("Output values, first choice and canaries")
    ax.legend()
    return fig


# ---- HTML --------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
.note { color: #a40; }
img { display: block; margin: 0.5em 0 1.5em; max-width: 100%; }
"""


def html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def service_html(report: ServiceReport) -> str:
    """One service's section: tables and plots."""
    parts = [
        f"<h2>{html.escape(report.service)}</h2>",
        f"<p>{report.requests} requests, {report.decisions} decisions, compared with "
        f"<b>{html.escape(first_choice_text(report))}</b></p>",
        *(f'<p class="note">{html.escape(n)}</p>' for n in report.notes),
        "<h3>Models against the first choice</h3>",
        html_table(*model_rows(report.models)),
        "<h3>Models against the true labels</h3>",
        f"<p>{html.escape(outcome_title(report))}</p>" + html_table(*outcome_rows(report.models))
        if report.labelled
        else f"<p>{html.escape(NO_LABELS)}</p>",
        *(["<h3>A/B arms</h3>", html_table(*arm_rows(report.arms))] if len(report.arms) else []),
        *(
            ["<h3>Sampled models</h3>", html_table(*sample_rows(report.samples))]
            if len(report.samples)
            else []
        ),
        "<h3>Decisions by reason</h3>",
        html_table(*reason_rows(report.reasons)),
    ]
    for drift in report.drift:
        parts += [
            f"<h3>Canary drift: {html.escape(drift.canary)} (PSI)</h3>",
            html_table(*drift_rows(drift)),
        ]
    reference = html.escape(report.drift_reference)
    for drift in report.self_drift:
        parts += [
            f"<h3>Canary {html.escape(drift.canary)} against its own outputs in the reference "
            f"window, {reference} (PSI)</h3>",
            html_table(*self_drift_rows(drift)),
        ]
    if len(report.feature_drift):
        parts += [
            f"<h3>Input features against the reference window, {reference} (PSI)</h3>",
            html_table(*feature_drift_rows(report.feature_drift)),
        ]
    figures = [
        (latency_figure(report.models), "latency per model"),
        (delta_figure(report.deltas, report.champion), "score deltas to the first choice"),
        (drift_figure(report.drift), "canary PSI per hour"),
        (distribution_figure(report.values), "output value distributions"),
    ]
    parts += [png_tag(fig, alt) for fig, alt in figures if fig is not None]
    return "\n".join(parts)


def page(reports: Sequence[ServiceReport], *, title: str, subtitle: str) -> str:
    """The whole report as one HTML document."""
    from rendezvous.archive.metrics import PSI_FLOOR

    binning = (
        "PSI bins are the deciles of the first choice's values over the window (open-ended outer "
        f"bins; equal deciles merge); an empty bin counts as a share of {PSI_FLOOR}. "
        f"Reading: below {PSI_WATCH} stable, up to {PSI_SHIFTED} watch, above shifted."
    )
    body = "\n".join(service_html(r) for r in reports)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p>"
        f"<p><small>{html.escape(binning)}</small></p>\n{body}\n</body></html>\n"
    )
