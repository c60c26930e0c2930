"""The proxy's HTTP application: Starlette routes over one :class:`Proxy` state object.

One replica keeps three maps: the sync requests it is waiting on (request id -> future), the
async requests it accepted and has no result for yet, and a bounded LRU/TTL cache of *every*
result seen on the results topic (so any replica can answer ``GET /v1/requests/{id}``).
Everything on the request path is O(1) and allocation-light: validators are built once per
service, JSON goes through orjson, and nothing is logged per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rendezvous import serde, topics
from rendezvous.config import Config, ServiceSpec
from rendezvous.errors import ConfigError
from rendezvous.proxy.admission import Admission
from rendezvous.proxy.apidoc import OPENAPI_URL, docs_routes, openapi
from rendezvous.proxy.batcher import RequestBatcher
from rendezvous.proxy.book import ReplicaBook
from rendezvous.proxy.errors import (
    AnswerTimeout,
    BadJson,
    BadRequestId,
    BodyTooLarge,
    KafkaUnavailable,
    NoAnswer,
    Overloaded,
    UnknownService,
    UnsupportedMediaType,
)
from rendezvous.proxy.metrics import CONTENT_TYPE, Metrics
from rendezvous.proxy.responses import (
    REQUEST_ID_RE,
    error_response,
    http_error,
    json_response,
)
from rendezvous.proxy.settings import ProxySettings
from rendezvous.proxy.transport import KafkaTransport, Transport
from rendezvous.proxy.validation import Validator

log = logging.getLogger(__name__)

Clock = Callable[[], int]
UNKNOWN_SERVICE_LABEL = "_unknown"


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class _Failed:
    """Resolves a waiting future when producing the request failed."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


# ---- the replica's state and handlers ------------------------------------------------------
class Proxy:
    """One replica: validation, produce, and the rendezvous of results with waiting requests."""

    def __init__(
        self, settings: ProxySettings, config: Config, transport: Transport, clock: Clock
    ) -> None:
        self.settings = settings
        self.config = config
        self.transport = transport
        self.clock = clock
        self.replica_id = settings.replica_id
        self.services: dict[str, tuple[ServiceSpec, Validator]] = {
            name: (spec, Validator(spec)) for name, spec in config.services.items()
        }
        self.known_services = ", ".join(sorted(self.services)) or "none"
        self.book: ReplicaBook[asyncio.Future[Any]] = ReplicaBook(
            cache_size=settings.cache_size,
            cache_ttl_ms=settings.cache_ttl_ms,
            result_grace_ms=settings.result_grace_ms,
            clock=clock,
        )
        # The book's maps, under the names the gauges and tests read.
        self.pending = self.book.pending
        self.accepted = self.book.accepted
        self.cache = self.book.cache
        self.unconfirmed = self.book.unconfirmed
        self.metrics = Metrics()
        self.admission = Admission(
            limit=settings.admission_initial, max_limit=settings.admission_max
        )
        self.batcher = RequestBatcher(
            transport,
            clock,
            self._delivery_failed,
            interval_ms=settings.batch_interval_ms,
            max_items=settings.batch_max_requests,
            on_flushed=self._flushed,
            on_delivered=self._delivered,
        )
        # Heartbeats stay fast until this time: the last deadline plus its decision grace.
        self.busy_until_ms = 0
        self.openapi_json = orjson.dumps(openapi(config), option=orjson.OPT_INDENT_2)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        # Event times (ms) for which a deadline heartbeat is scheduled.
        self._deadline_ticks: set[int] = set()
        self._register_gauges()

    def _register_gauges(self) -> None:
        gauge = self.metrics.gauge
        gauge(
            "rdv_proxy_pending_requests",
            "Sync requests waiting for their result on this replica.",
            lambda: len(self.pending),
        )
        gauge(
            "rdv_proxy_accepted_requests",
            "Async requests accepted here and not answered yet (or expired, kept for status).",
            lambda: len(self.accepted),
        )
        gauge(
            "rdv_proxy_cached_results",
            "Results kept for GET /v1/requests/{id}.",
            lambda: len(self.cache),
        )
        gauge("rdv_proxy_ready", "1 when Kafka is reachable.", lambda: int(self.transport.ready()))
        gauge(
            "rdv_proxy_admission_limit",
            "Sync requests this replica lets into the pipeline at once (adaptive).",
            lambda: int(self.admission.limit),
        )
        gauge(
            "rdv_proxy_admission_rejected",
            "Requests answered 503 overloaded since start (a counter).",
            lambda: self.admission.rejected,
        )

    # -- lifespan
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.batcher.start(self._loop)
        self.transport.start(self._loop, self.on_result)
        if self.settings.tick_interval_ms > 0:
            self._heartbeat = asyncio.create_task(self.heartbeat(), name="rdv-proxy-heartbeat")
        log.info(
            "proxy replica %s up: services %s, Kafka %s",
            self.replica_id,
            self.known_services,
            self.settings.bootstrap,
        )

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        self.batcher.flush()
        for fut in self.pending.values():
            if not fut.done():
                fut.set_result(_Failed("this proxy replica is shutting down; retry on another"))
        await asyncio.get_running_loop().run_in_executor(None, self.transport.close)

    async def heartbeat(self) -> None:
        """Heartbeats into every partition the rendezvous job reads (see rendezvous.heartbeat):
        fast while a request of this replica may still be waiting, slow otherwise."""
        fast = self.settings.tick_interval_ms / 1000
        slow_ms = max(self.settings.tick_interval_ms, self.settings.idle_tick_interval_ms)
        last = 0
        while True:
            at_ms = self.clock()
            # At the slow cadence a heartbeat goes even while batches carry time, so that event
            # time still moves if every scoring job stops writing.
            if at_ms - last >= slow_ms or not self._time_carried_since(
                at_ms - self.settings.tick_interval_ms
            ):
                self._tick(at_ms)
                last = at_ms
            await asyncio.sleep(fast if at_ms < self.busy_until_ms else slow_ms / 1000)

    def _time_carried_since(self, at_ms: int) -> bool:
        """Whether a batch that left at or after ``at_ms`` will carry event time past it.

        With one partition per heartbeat topic the rendezvous job's watermark follows every
        record on them: the batch's model inputs land on one and its scores on the other, both
        stamped after the batch left, so a heartbeat adds nothing. With more partitions a batch
        reaches only some of them, so every heartbeat is written.
        """
        return (
            self.transport.tick_partitions() == len(topics.HEARTBEAT)
            and self.batcher.last_flush_ms >= at_ms
        )

    def _tick(self, at_ms: int) -> None:
        try:
            self.metrics.ticks(self.transport.tick(at_ms))
        except KafkaUnavailable:
            self.metrics.tick_error()

    def _tick_at(self, at_ms: int) -> None:
        """One heartbeat as soon as the clock reaches ``at_ms``, stamped with the clock.

        The periodic heartbeat alone would carry time past a deadline up to one interval late;
        this one lets the rendezvous job's timer for a lone request fire right at its deadline.
        A heartbeat is never stamped ahead of the clock: a request accepted later must not be
        behind the watermark."""
        if self._loop is None or self.settings.tick_interval_ms <= 0:
            return
        if at_ms in self._deadline_ticks:
            return
        self._deadline_ticks.add(at_ms)
        self._loop.call_later(max(at_ms - self.clock(), 0) / 1000, self._deadline_tick, at_ms)

    def _deadline_tick(self, at_ms: int) -> None:
        now = self.clock()
        if now < at_ms:  # the loop may wake a little early
            assert self._loop is not None
            self._loop.call_later((at_ms - now) / 1000, self._deadline_tick, at_ms)
            return
        self._deadline_ticks.discard(at_ms)
        if not self._time_carried_since(at_ms):
            self._tick(now)

    # -- results from the transport (on the event loop)
    def on_result(self, result: dict[str, Any]) -> None:
        fut = self.book.on_result(result)
        matched = fut is not None and not fut.done()
        if matched:
            fut.set_result(result)
        self.metrics.result(matched)

    def _delivered(self, rids: list[str]) -> None:
        self.book.delivered(rids)

    def _delivery_failed(self, rid: str, text: str) -> None:
        self.metrics.delivery_failure()
        fut = self.book.delivery_failed(rid, text)
        if fut is not None and not fut.done():
            fut.set_result(_Failed(text))

    # -- shared steps
    def _request_id(self, request: Request) -> str:
        given = request.headers.get("x-request-id")
        if given is None:
            return uuid.uuid4().hex
        if REQUEST_ID_RE.fullmatch(given) is None:
            raise BadRequestId(
                f"X-Request-ID {given[:64]!r} is not 1-128 characters of letters, digits, "
                f"'.', '_' or '-'; send such an id or leave the header out to get one assigned"
            )
        return given

    def _service(self, name: str) -> tuple[ServiceSpec, Validator]:
        try:
            return self.services[name]
        except KeyError:
            raise UnknownService(
                f"unknown service {name[:64]!r}; configured services: {self.known_services}"
            ) from None

    async def _body(self, request: Request) -> Any:
        kind = request.headers.get("content-type")
        if kind is not None:
            media = kind.split(";", 1)[0].strip().lower()
            if media != "application/json" and not media.endswith("+json"):
                raise UnsupportedMediaType(
                    f"Content-Type {kind[:80]!r} is not JSON; send the body as JSON with "
                    f"the header 'Content-Type: application/json'"
                )
        limit = self.settings.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise BodyTooLarge(
                f"request body is {int(length)} bytes, more than the limit of {limit}; send a "
                f"smaller body or raise RDV_PROXY_MAX_BODY_BYTES"
            )
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(
                    f"request body is more than the limit of {limit} bytes; send a smaller "
                    f"body or raise RDV_PROXY_MAX_BODY_BYTES"
                )
            chunks.append(chunk)
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadJson(
                f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column "
                f"{exc.colno}; send a JSON object of the service's input fields"
            ) from None

    def _produce(self, spec: ServiceSpec, rid: str, payload: dict[str, Any]) -> tuple[int, int]:
        """Queue the request for the next batch; a failure to produce it resolves its waiter."""
        if not self.transport.ready():
            raise KafkaUnavailable(
                f"Kafka is not ready: {self.transport.detail() or 'no detail'}; "
                f"check GET /readyz and try again"
            )
        received_ms = self.clock()
        # The pipeline's deadline, a little before the SLA: see ProxySettings.decision_lead_ms.
        deadline_ms = (
            received_ms + spec.sla_ms - min(self.settings.decision_lead_ms, spec.sla_ms // 4)
        )
        self.book.produced(rid)
        self.batcher.add(
            {
                "request_id": rid,
                "service": spec.name,
                "received_ms": received_ms,
                "deadline_ms": deadline_ms,
                "payload": serde.to_json(payload),
                "reply_to": self.replica_id,
            }
        )
        self.busy_until_ms = max(
            self.busy_until_ms, deadline_ms + max(spec.grace_ms, self.settings.result_grace_ms)
        )
        return received_ms, deadline_ms

    def _flushed(self, items: list[dict[str, Any]]) -> None:
        # The join's timer for a deadline fires once the watermark reaches it, and the
        # watermark trails the newest event time by 1 ms: one heartbeat after the batch's last
        # deadline, unless later traffic carries time past it.
        self._tick_at(max(r["deadline_ms"] for r in items) + 1)

    def _answer(self, result: dict[str, Any], latency_ms: int) -> bytes:
        rid = result["request_id"]
        if result["status"] != "ok":
            detail = result.get("error")
            raise NoAnswer(
                f"no model answered request {rid} of service {result['service']!r}: "
                f"{result['reason']}" + (f": {detail}" if detail else ""),
                request_id=rid,
            )
        output = result["output"]
        return orjson.dumps(
            {
                "request_id": rid,
                "service": result["service"],
                "model": result["model"],
                "model_version": result["version"],
                "role": result["role"],
                "output": None if output is None else orjson.loads(output),
                "reason": result["reason"],
                "latency_ms": latency_ms,
            }
        )

    # -- endpoints
    async def score(self, request: Request) -> Response:
        name = request.path_params["service"]
        label, rid = UNKNOWN_SERVICE_LABEL, None
        try:
            rid = self._request_id(request)
            spec, validator = self._service(name)
            label = name
            payload = validator(await self._body(request))
            hit = self.book.check_new(rid, name)
            if hit is not None:
                body = self._answer(hit[1], hit[0] - hit[1]["received_ms"])
            else:
                body = await self._wait(spec, rid, payload)
        except Exception as exc:
            response = error_response(exc, rid)
            self.metrics.count(label, "score", response.status_code)
            return response
        self.metrics.count(label, "score", 200)
        return json_response(body, 200, rid)

    async def _wait(self, spec: ServiceSpec, rid: str, payload: dict[str, Any]) -> bytes:
        admission = self.admission
        if not admission.try_enter():
            raise Overloaded(
                f"this proxy replica is at its limit of {int(admission.limit)} requests in "
                f"flight (the pipeline is not answering more in time); retry after "
                f"{Overloaded.retry_after_s} s or on another replica",
                request_id=rid,
            )
        loop = self._loop or asyncio.get_running_loop()
        fut = loop.create_future()
        self.book.wait(rid, fut)
        timer = None
        judged = False
        try:
            received_ms, _ = self._produce(spec, rid, payload)
            give_up_ms = received_ms + spec.sla_ms + self.settings.result_grace_ms
            timer = loop.call_later(max(give_up_ms - self.clock(), 0) / 1000, _resolve_none, fut)
            outcome = await fut
            if outcome is None or isinstance(outcome, dict):
                judged = True
                admission.leave(in_time=outcome is not None, now_ms=self.clock())
        finally:
            self.book.stop_waiting(rid)
            if timer is not None:
                timer.cancel()
            if not judged:
                admission.leave_unjudged()
        unacknowledged = self.book.judge(rid)
        if outcome is None and unacknowledged:
            raise KafkaUnavailable(
                f"Kafka had not acknowledged request {rid} by its deadline ({spec.sla_ms} ms "
                f"SLA) plus {self.settings.result_grace_ms} ms grace: it may never reach the "
                f"pipeline (or reach it late, and then be decided and archived as "
                f"deadline_exceeded); Kafka at {self.settings.bootstrap} is slow or down",
                request_id=rid,
            )
        if outcome is None:
            raise AnswerTimeout(
                f"no result for request {rid} of service {spec.name!r} by its deadline "
                f"({spec.sla_ms} ms SLA) plus {self.settings.result_grace_ms} ms grace; it was "
                f"queued for Kafka and, once Kafka takes it, will still be decided and archived; "
                f"check that the stream jobs run (`rendezvous status`)"
            )
        if isinstance(outcome, _Failed):
            raise KafkaUnavailable(f"request {rid} failed: {outcome.text}")
        latency_ms = self.clock() - received_ms
        self.metrics.observe(spec.name, latency_ms)
        return self._answer(outcome, latency_ms)

    async def submit(self, request: Request) -> Response:
        name = request.path_params["service"]
        label, rid = UNKNOWN_SERVICE_LABEL, None
        try:
            rid = self._request_id(request)
            spec, validator = self._service(name)
            label = name
            payload = validator(await self._body(request))
            if self.book.check_new(rid, name) is None:
                received_ms, _ = self._produce(spec, rid, payload)
                self.book.accept(
                    rid, name, received_ms + spec.sla_ms + self.settings.result_grace_ms
                )
        except Exception as exc:
            response = error_response(exc, rid)
            self.metrics.count(label, "requests", response.status_code)
            return response
        self.metrics.count(label, "requests", 202)
        return json_response(
            orjson.dumps({"request_id": rid, "status_url": f"/v1/requests/{rid}"}), 202, rid
        )

    async def status(self, request: Request) -> Response:
        rid = request.path_params["request_id"]
        try:
            if REQUEST_ID_RE.fullmatch(rid) is None:
                raise BadRequestId(
                    f"{rid[:64]!r} is not a request id (1-128 characters of letters, digits, "
                    f"'.', '_' or '-'); use the request_id a POST returned"
                )
            body, status = self._status(rid)
        except Exception as exc:
            response = error_response(exc, rid)
            self.metrics.count("", "status", response.status_code)
            return response
        self.metrics.count("", "status", status)
        return json_response(body, status, rid)

    def _status(self, rid: str) -> tuple[bytes, int]:
        hit = self.book.status(rid)
        if hit is None:
            return orjson.dumps({"request_id": rid, "status": "pending"}), 202
        arrived_ms, result = hit
        return self._answer(result, arrived_ms - result["received_ms"]), 200

    async def healthz(self, request: Request) -> Response:
        return json_response(orjson.dumps({"status": "ok", "replica_id": self.replica_id}), 200)

    async def readyz(self, request: Request) -> Response:
        if self.transport.ready():
            return json_response(
                orjson.dumps({"status": "ready", "replica_id": self.replica_id}), 200
            )
        exc = KafkaUnavailable(
            f"Kafka at {self.settings.bootstrap} is not ready: "
            f"{self.transport.detail() or 'no detail'}"
        )
        return error_response(exc, None)

    async def metrics_text(self, request: Request) -> Response:
        return Response(self.metrics.render(), 200, media_type=CONTENT_TYPE)

    async def openapi_doc(self, request: Request) -> Response:
        return json_response(self.openapi_json, 200)


def _resolve_none(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_result(None)


# ---- construction --------------------------------------------------------------------------
def create_app(
    settings: ProxySettings,
    config: Config,
    transport: Transport | None = None,
    clock: Clock | None = None,
) -> Starlette:
    """The Starlette app of one replica; its lifespan starts/stops the transport and heartbeat.

    ``transport`` defaults to a :class:`KafkaTransport` on ``settings.bootstrap``; ``clock``
    (epoch milliseconds) defaults to the wall clock. The :class:`Proxy` is ``app.state.proxy``.
    """
    proxy = Proxy(
        settings,
        config,
        KafkaTransport(settings) if transport is None else transport,
        wall_clock_ms if clock is None else clock,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await proxy.start()
        try:
            yield
        finally:
            await proxy.stop()

    routes = [
        Route("/v1/services/{service}/score", proxy.score, methods=["POST"]),
        Route("/v1/services/{service}/requests", proxy.submit, methods=["POST"]),
        Route("/v1/requests/{request_id}", proxy.status, methods=["GET"]),
        Route("/healthz", proxy.healthz, methods=["GET"]),
        Route("/readyz", proxy.readyz, methods=["GET"]),
        Route("/metrics", proxy.metrics_text, methods=["GET"]),
        Route(OPENAPI_URL, proxy.openapi_doc, methods=["GET"]),
        *docs_routes(),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
    )
    # A path with a trailing slash is an unknown endpoint (404 with a JSON body), not a 307
    # redirect with an empty one.
    app.router.redirect_slashes = False
    app.state.proxy = proxy
    return app


def resolve_signature_inputs(config: Config, tracking_uri: str) -> Config:
    """Validate bodies of ``{from_model: m}`` services against m's MLflow signature.

    A signature that cannot be read (no tracking server, no signature) is logged and the
    service keeps accepting any JSON object: the enrich job and the scorers still check.
    """
    if not any(s.input_fields is None for s in config.services.values()):
        return config
    from rendezvous.models import input_fields_from_signature

    resolved, problems = config.with_signature_inputs(
        lambda uri: input_fields_from_signature(uri, tracking_uri or None)
    )
    for service, why in problems.items():
        log.warning("service %s: input schema not checked by the proxy: %s", service, why)
    return resolved


def serve(settings: ProxySettings, config: Config | None = None) -> None:
    """Run one replica with uvicorn until interrupted (no access log; loop ``auto``)."""
    import uvicorn

    from rendezvous.config import load

    if config is None:
        if settings.config is None:
            raise ConfigError(
                "the proxy needs the service configuration: pass --config FILE or set "
                "RDV_PROXY_CONFIG"
            )
        config = load(settings.config)
    config = resolve_signature_inputs(config, settings.tracking_uri)
    app = create_app(settings, config)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="auto",
        http="auto",
        lifespan="on",
        access_log=False,
        server_header=False,
        log_level="info",
    )
