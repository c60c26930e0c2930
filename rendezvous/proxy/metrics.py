"""The proxy's Prometheus metrics, one :class:`~prometheus_client.CollectorRegistry` a replica.

Several replicas can live in one process (tests do that), so nothing goes into the library's
global registry. ``GET /metrics`` serves :meth:`Metrics.render`, the library's own text
exposition. The per-request calls look a labelled child up in a dict once and then only
increment it.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Sized

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from rendezvous.proxy.admission import Admission

# The text format generate_latest writes.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class Metrics:
    """Counters, a latency histogram and callback gauges of one proxy replica."""

    BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
    ACK_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "rdv_proxy_requests_total",
            "HTTP requests by service, endpoint and status code.",
            ("service", "endpoint", "code"),
            registry=registry,
        )
        self._latency = Histogram(
            "rdv_proxy_request_duration_seconds",
            "Time from accepting a sync request to its answer.",
            ("service",),
            buckets=self.BUCKETS_S,
            registry=registry,
        )
        self._results = Counter(
            "rdv_proxy_results_total",
            "RESULT records read from the results topic.",
            registry=registry,
        )
        self._results_matched = Counter(
            "rdv_proxy_results_matched_total",
            "Results that answered a request waiting on this replica.",
            registry=registry,
        )
        self._ticks = Counter(
            "rdv_proxy_ticks_total", "Clock heartbeats produced.", registry=registry
        )
        self._tick_errors = Counter(
            "rdv_proxy_tick_errors_total",
            "Clock heartbeats that could not be queued.",
            registry=registry,
        )
        self._delivery_failures = Counter(
            "rdv_proxy_delivery_failures_total",
            "Requests Kafka failed to take after they were queued.",
            registry=registry,
        )
        self._kafka_ack = Histogram(
            "rdv_proxy_kafka_ack_seconds",
            "Time from producing a batch of requests to Kafka's acknowledgement of it.",
            buckets=self.ACK_BUCKETS_S,
            registry=registry,
        )
        self._give_up_lag = Histogram(
            "rdv_proxy_give_up_lag_seconds",
            "How long after its planned time (deadline plus grace) a sync request that got no "
            "result was given up: the lag of this replica's event loop, which an explicit "
            "error's lateness starts from.",
            buckets=self.ACK_BUCKETS_S,
            registry=registry,
        )
        self._gc_pause = Histogram(
            "rdv_proxy_gc_pause_seconds",
            "Pauses of Python's cyclic garbage collector in this process, by generation.",
            ("generation",),
            buckets=self.ACK_BUCKETS_S,
            registry=registry,
        )
        self._gc_children = [self._gc_pause.labels(str(g)) for g in range(3)]
        self._gc_started = 0.0
        # (service, endpoint, status) -> its child counter; service -> its histogram child
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}

    # -- on the request path
    def count(self, service: str, endpoint: str, status: int) -> None:
        key = (service, endpoint, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self._requests.labels(
                service, endpoint, str(status)
            )
        child.inc()

    def observe(self, service: str, latency_ms: int) -> None:
        child = self._latency_children.get(service)
        if child is None:
            child = self._latency_children[service] = self._latency.labels(service)
        child.observe(latency_ms / 1000)

    def result(self, matched: bool) -> None:
        self._results.inc()
        if matched:
            self._results_matched.inc()

    def ticks(self, n: int) -> None:
        self._ticks.inc(n)

    def tick_error(self) -> None:
        self._tick_errors.inc()

    def delivery_failure(self) -> None:
        self._delivery_failures.inc()

    def kafka_ack(self, ack_ms: int) -> None:
        self._kafka_ack.observe(ack_ms / 1000)

    def give_up_lag(self, lag_ms: int) -> None:
        self._give_up_lag.observe(max(lag_ms, 0) / 1000)

    # -- the garbage collector (gc.callbacks: on whichever thread triggered the collection)
    def watch_gc(self) -> None:
        gc.callbacks.append(self._on_gc)

    def unwatch_gc(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self._gc_children[info["generation"]].observe(time.perf_counter() - self._gc_started)

    # -- at scrape time
    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A gauge whose value ``read()`` gives each time the metrics are scraped."""
        Gauge(name, help_text, registry=self.registry).set_function(read)

    def replica_gauges(
        self,
        pending: Sized,
        accepted: Sized,
        cache: Sized,
        ready: Callable[[], bool],
        admission: Admission,
    ) -> None:
        """The gauges of a replica's book, its Kafka readiness and its admission control."""
        self.gauge(
            "rdv_proxy_pending_requests",
            "Sync requests waiting for their result on this replica.",
            lambda: len(pending),
        )
        self.gauge(
            "rdv_proxy_accepted_requests",
            "Async requests accepted here and not answered yet (or expired, kept for status).",
            lambda: len(accepted),
        )
        self.gauge(
            "rdv_proxy_cached_results",
            "Results kept for GET /v1/requests/{id}.",
            lambda: len(cache),
        )
        self.gauge("rdv_proxy_ready", "1 when Kafka is reachable.", lambda: int(ready()))
        self.gauge(
            "rdv_proxy_admission_limit",
            "Sync requests this replica lets into the pipeline at once (adaptive).",
            lambda: int(admission.limit),
        )
        self.gauge(
            "rdv_proxy_admission_rejected",
            "Requests answered 503 overloaded since start (a counter).",
            lambda: admission.rejected,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
