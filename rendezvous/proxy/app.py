"""The proxy's HTTP application: Starlette routes over one :class:`Proxy` replica.

The replica wires its parts together and holds the endpoints: :mod:`~rendezvous.proxy.parsing`
reads a request, :mod:`~rendezvous.proxy.validation` checks its body, the
:class:`~rendezvous.proxy.batcher.RequestBatcher` produces it, the
:class:`~rendezvous.proxy.book.ReplicaBook` keeps what it waits on, accepted and saw,
:mod:`~rendezvous.proxy.responses` writes the answer or the error,
:class:`~rendezvous.proxy.heartbeat.Heartbeat` keeps event time moving,
:class:`~rendezvous.proxy.feedback.FeedbackDesk` takes the true labels of past requests and
:mod:`~rendezvous.proxy.metrics` counts. Everything on the request path is O(1) and
allocation-light: validators are built once per service, JSON goes through orjson, and nothing
is logged per request.

About 500 lines, kept together: the endpoints are short, and what is left is the one place
that wires a replica's parts and their lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rendezvous import serde, topics
from rendezvous.access.cost import costs
from rendezvous.access.log import KafkaKeyLog, KafkaUsageLog, KeyLog
from rendezvous.access.quota import Verdict
from rendezvous.archive.layout import ArchiveError
from rendezvous.archive.lookup import ArchiveLookup
from rendezvous.clock import Clock, now_ms
from rendezvous.config import Config, ServiceSpec
from rendezvous.proxy.access import Gate
from rendezvous.proxy.admission import Admission
from rendezvous.proxy.apidoc import OPENAPI_URL, docs_routes, openapi
from rendezvous.proxy.batcher import RequestBatcher
from rendezvous.proxy.book import ReplicaBook, fingerprint
from rendezvous.proxy.errors import (
    AnswerTimeout,
    ArchiveUnavailable,
    KafkaUnavailable,
    KeysUnavailable,
    Overloaded,
    UnknownEndpoint,
    UnknownRequest,
    UnknownService,
)
from rendezvous.proxy.feedback import FeedbackDesk
from rendezvous.proxy.heartbeat import Heartbeat
from rendezvous.proxy.metrics import CONTENT_TYPE, Metrics
from rendezvous.proxy.parsing import (
    DEADLINE_HEADER,
    Deadline,
    deadline,
    parse_json,
    path_request_id,
    read_body,
    request_id,
)
from rendezvous.proxy.policies import KafkaPolicyLog, Policies
from rendezvous.proxy.responses import (
    answer_body,
    error_response,
    http_error,
    json_response,
)
from rendezvous.proxy.settings import ProxySettings
from rendezvous.proxy.transport import KafkaTransport, Transport
from rendezvous.proxy.validation import Validator
from rendezvous.records import ApiKey

log = logging.getLogger(__name__)

UNKNOWN_SERVICE_LABEL = "_unknown"


class _Failed:
    """Resolves a waiting future when producing the request failed."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


# ---- the replica's state and handlers ------------------------------------------------------
class Proxy:
    """One replica: validation, produce, and the rendezvous of results with waiting requests."""

    def __init__(
        self,
        settings: ProxySettings,
        config: Config,
        transport: Transport,
        clock: Clock,
        keys: KeyLog | None = None,
        usage: KeyLog | None = None,
        policy_log: KeyLog | None = None,
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
        # The SLA and grace in force per service, from the control topic when a log is given.
        self.policies = Policies({name: spec for name, (spec, _) in self.services.items()})
        self.policy_log = policy_log
        self._policy_following: Any = None
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
            on_acked=self.metrics.kafka_ack,
        )
        self.heartbeat = Heartbeat(
            transport,
            self.metrics,
            clock,
            lambda: self.batcher.last_flush_ms,
            interval_ms=settings.tick_interval_ms,
            idle_interval_ms=settings.idle_tick_interval_ms,
        )
        self.feedback_desk = FeedbackDesk(
            transport,
            clock,
            self.book.cache,
            None
            if settings.archive is None
            else ArchiveLookup(settings.archive, lookback_days=settings.feedback_lookback_days),
            cache_size=settings.cache_size,
            delivery_timeout_ms=settings.delivery_timeout_ms,
        )
        # Access control: the gate every scoring and status request passes; None when the
        # replica takes requests without keys.
        self.gate: Gate | None = None
        if settings.require_api_keys:
            client = f"rdv-proxy-{settings.replica_id}"
            self.gate = Gate(
                replica_id=settings.replica_id,
                key_log=KafkaKeyLog(settings.kafka, client_id=f"{client}-keys")
                if keys is None
                else keys,
                usage_log=KafkaUsageLog(settings.kafka, client_id=f"{client}-usage")
                if usage is None
                else usage,
                usage_interval_ms=settings.usage_interval_ms,
                costs=costs(config.services.values()),
            )
        self.openapi_json = orjson.dumps(
            openapi(config, access=self.gate is not None), option=orjson.OPT_INDENT_2
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self.metrics.replica_gauges(
            self.pending, self.accepted, self.cache, transport.ready, self.admission
        )

    # -- lifespan
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.batcher.start(self._loop)
        self.transport.start(self._loop, self.on_result)
        if self.policy_log is not None:
            self._policy_following = self.policy_log.follow(
                self.policies.on_record,
                self.policies.on_caught_up,
                lambda problem: log.warning("policies: %s", problem),
            )
        if self.gate is not None:
            self.gate.start(self._loop, self.transport, self.clock)
        self.heartbeat.start(self._loop)
        self.metrics.watch_gc()
        log.info(
            "proxy replica %s up: services %s, Kafka %s",
            self.replica_id,
            self.known_services,
            self.settings.bootstrap,
        )

    def ready(self) -> bool:
        """Whether this replica can take requests: Kafka reached, its results assigned, the
        services' policies read (when followed), and with access control on the API keys and
        their usage read."""
        return (
            self.transport.ready()
            and (self.gate is None or self.gate.ready)
            and (self.policy_log is None or self.policies.caught_up)
        )

    async def wait_ready(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for :meth:`ready`; whether it became so."""
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() >= deadline:
                if timeout_s > 0:
                    log.warning(
                        "proxy replica %s not ready after %.0f s", self.replica_id, timeout_s
                    )
                return False
            await asyncio.sleep(0.05)
        return True

    async def stop(self) -> None:
        if self._policy_following is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._policy_following.close)
        await self.heartbeat.stop()
        self.metrics.unwatch_gc()
        self.batcher.flush()
        for fut in self.pending.values():
            if not fut.done():
                fut.set_result(_Failed("this proxy replica is shutting down; retry on another"))
        loop = asyncio.get_running_loop()
        if self.gate is not None:
            await self.gate.stop(self.transport, self.clock)
        await loop.run_in_executor(None, self.transport.close)

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

    def _headed(self, response: Response, due: Deadline | None, quota: Verdict | None) -> Response:
        """``response`` with the headers that say which deadline an X-Deadline-Ms got and
        what is left of the key's quota."""
        extra = None if due is None else due.headers()
        if extra:
            response.headers.update(extra)
        if quota is not None:
            response.headers.update(quota.headers(self.clock()))
        return response

    # -- shared steps
    def _admit(self, request: Request, service: str) -> ApiKey | None:
        """With access control on: the request's API key, valid, for ``service`` and with
        something left of its quota (counted once the body says what the request costs)."""
        if self.gate is None:
            return None
        return self.gate.admit(request.headers.get("authorization"), service, self.clock())

    def _charge(
        self, key: ApiKey | None, service: str, rid: str, payload: dict[str, Any]
    ) -> Verdict | None:
        """Count the request's cost against its key's quota (429 when less is left)."""
        if self.gate is None or key is None:
            return None
        return self.gate.charge(key, service, rid, payload, self.clock())

    def _charge_refused(self, key: ApiKey | None, service: str) -> Verdict | None:
        """Count 1 for an admitted request refused before its cost was known."""
        if self.gate is None or key is None:
            return None
        return self.gate.charge_refused(key, service, self.clock())

    def _service(self, name: str) -> tuple[ServiceSpec, Validator]:
        try:
            return self.policies.spec(name), self.services[name][1]
        except KeyError:
            raise UnknownService(
                f"unknown service {name[:64]!r}; configured services: {self.known_services}"
            ) from None

    async def _body(self, request: Request, validator: Validator) -> tuple[dict[str, Any], bytes]:
        """The request's payload, checked, and its body's fingerprint."""
        settings = self.settings
        raw = await read_body(request, settings.max_body_bytes, settings.body_timeout_ms)
        return validator(parse_json(raw)), fingerprint(raw)

    def _produce(
        self, spec: ServiceSpec, rid: str, payload: dict[str, Any], fp: bytes, budget_ms: int
    ) -> tuple[int, int]:
        """Queue the request for the next batch; a failure to produce it resolves its waiter.

        ``budget_ms`` is the request's time from now: the SLA, or a tighter X-Deadline-Ms."""
        if not self.transport.ready():
            raise KafkaUnavailable(
                f"Kafka is not ready: {self.transport.detail() or 'no detail'}; "
                f"check GET /readyz and try again"
            )
        received_ms = self.clock()
        # The pipeline's deadline, a little before the client's: see
        # ProxySettings.decision_lead_ms.
        deadline_ms = received_ms + budget_ms - min(self.settings.decision_lead_ms, budget_ms // 4)
        self.book.produced(rid, fp)
        self.batcher.add(
            {
                "request_id": rid,
                "service": spec.name,
                "received_ms": received_ms,
                "deadline_ms": deadline_ms,
                "payload": serde.to_json(payload),
                "reply_to": self.transport.reply_to(self.replica_id),
            }
        )
        self.heartbeat.busy_until(deadline_ms + max(spec.grace_ms, self.settings.result_grace_ms))
        return received_ms, deadline_ms

    def _flushed(self, items: list[dict[str, Any]]) -> None:
        # The join's timer for a deadline fires once the watermark reaches it, and the
        # watermark trails the newest event time by 1 ms: one heartbeat after the batch's last
        # deadline, unless later traffic carries time past it.
        self.heartbeat.tick_at(max(r["deadline_ms"] for r in items) + 1)

    # -- endpoints
    async def score(self, request: Request) -> Response:
        name = request.path_params["service"]
        label, rid, due, quota, uncharged = UNKNOWN_SERVICE_LABEL, None, None, None, None
        try:
            rid = request_id(request)
            uncharged = self._admit(request, name)
            spec, validator = self._service(name)
            label = name
            due = deadline(request.headers.get(DEADLINE_HEADER), spec.sla_ms)
            payload, fp = await self._body(request, validator)
            key, uncharged = uncharged, None
            quota = self._charge(key, name, rid, payload)
            hit = self.book.check_new(rid, name, fp)
            if hit is not None:
                body = answer_body(hit[1], hit[0] - hit[1]["received_ms"])
            else:
                body = await self._wait(spec, rid, payload, fp, due)
        except Exception as exc:
            if uncharged is not None:
                quota = self._charge_refused(uncharged, name)
            response = self._headed(error_response(exc, rid), due, quota)
            self.metrics.count(label, "score", response.status_code)
            return response
        self.metrics.count(label, "score", 200)
        return self._headed(json_response(body, 200, rid), due, quota)

    async def _wait(
        self, spec: ServiceSpec, rid: str, payload: dict[str, Any], fp: bytes, due: Deadline
    ) -> bytes:
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
            received_ms, _ = self._produce(spec, rid, payload, fp, due.ms)
            give_up_ms = received_ms + due.ms + self.settings.result_grace_ms
            timer = loop.call_later(max(give_up_ms - self.clock(), 0) / 1000, _resolve_none, fut)
            outcome = await fut
            if outcome is None:
                self.metrics.give_up_lag(self.clock() - give_up_ms)
            # A request missing a deadline its client made tighter than the SLA says little
            # about the pipeline, and must not let one client shrink every client's limit.
            if isinstance(outcome, dict) or (outcome is None and due.ms == spec.sla_ms):
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
                f"Kafka had not acknowledged request {rid} by its deadline ({_budget(due, spec)}) "
                f"plus {self.settings.result_grace_ms} ms grace: it may never reach the "
                f"pipeline (or reach it late, and then be decided and archived as "
                f"deadline_exceeded); Kafka at {self.settings.bootstrap} is slow or down",
                request_id=rid,
            )
        if outcome is None:
            raise AnswerTimeout(
                f"no result for request {rid} of service {spec.name!r} by its deadline "
                f"({_budget(due, spec)}) plus {self.settings.result_grace_ms} ms grace; Kafka took "
                f"the request, so it is still decided and archived downstream; check that the "
                f"stream jobs run (`rendezvous status`)"
            )
        if isinstance(outcome, _Failed):
            raise KafkaUnavailable(f"request {rid} failed: {outcome.text}")
        latency_ms = self.clock() - received_ms
        self.metrics.observe(spec.name, latency_ms)
        return answer_body(outcome, latency_ms)

    async def submit(self, request: Request) -> Response:
        name = request.path_params["service"]
        label, rid, due, quota, uncharged = UNKNOWN_SERVICE_LABEL, None, None, None, None
        try:
            rid = request_id(request)
            uncharged = self._admit(request, name)
            spec, validator = self._service(name)
            label = name
            due = deadline(request.headers.get(DEADLINE_HEADER), spec.sla_ms)
            payload, fp = await self._body(request, validator)
            key, uncharged = uncharged, None
            quota = self._charge(key, name, rid, payload)
            if self.book.check_new(rid, name, fp) is None:
                received_ms, _ = self._produce(spec, rid, payload, fp, due.ms)
                self.book.accept(rid, name, received_ms + due.ms + self.settings.result_grace_ms)
        except Exception as exc:
            if uncharged is not None:
                quota = self._charge_refused(uncharged, name)
            response = self._headed(error_response(exc, rid), due, quota)
            self.metrics.count(label, "requests", response.status_code)
            return response
        self.metrics.count(label, "requests", 202)
        body = orjson.dumps({"request_id": rid, "status_url": f"/v1/requests/{rid}"})
        return self._headed(json_response(body, 202, rid), due, quota)

    async def status(self, request: Request) -> Response:
        rid = request.path_params["request_id"]
        try:
            gate = self.gate
            key = None if gate is None else gate.authenticate(request.headers.get("authorization"))
            checked = path_request_id(rid)
            if gate is not None and key is not None:
                gate.scope(key, self.book.service_of(checked))
            try:
                body, status = self._status(checked)
            except UnknownRequest as unknown:
                archived = await self._archived_answer(checked, unknown)
                if gate is not None and key is not None:
                    gate.scope(key, archived["service"])
                latency = int(archived["decided_ms"]) - int(archived["received_ms"])
                body, status = answer_body(archived, latency), 200
        except Exception as exc:
            response = error_response(exc, rid)
            self.metrics.count("", "status", response.status_code)
            return response
        self.metrics.count("", "status", status)
        return json_response(body, status, rid)

    async def _archived_answer(self, rid: str, unknown: UnknownRequest) -> dict[str, Any]:
        """A request this replica does not know, from the archive's decisions (answered on
        another replica, or before this one started); ``unknown`` again when not there."""
        lookup = self.feedback_desk.lookup
        if lookup is None:
            raise unknown
        try:
            archived = await self.feedback_desk.run_in_thread(
                lookup.answer, rid, now_ms=self.clock()
            )
        except ArchiveError as exc:
            raise ArchiveUnavailable(
                f"request {rid} is not known to this replica, and {exc.message}", request_id=rid
            ) from None
        if archived is None:
            raise UnknownRequest(
                f"request {rid} is not known to this replica (not accepted here, and no result "
                f"for it read in the last {self.settings.cache_ttl_ms // 1000} s) nor to "
                f"{lookup.describe()}; a request answered on another replica is archived "
                "within the archive's commit interval (10 s by default): retry shortly",
                request_id=rid,
            )
        return archived

    def _status(self, rid: str) -> tuple[bytes, int]:
        hit = self.book.status(rid)
        if hit is None:
            return orjson.dumps({"request_id": rid, "status": "pending"}), 202
        arrived_ms, result = hit
        return answer_body(result, arrived_ms - result["received_ms"]), 200

    async def usage(self, request: Request) -> Response:
        """GET /v1/usage: the calling key, its scope and its quota in the current window."""
        gate = self.gate
        try:
            if gate is None:
                raise UnknownEndpoint(
                    "GET /v1/usage reports an API key's quota, and this proxy takes requests "
                    "without keys (RDV_PROXY_REQUIRE_API_KEYS is off)"
                )
            key = gate.authenticate(request.headers.get("authorization"))
        except Exception as exc:
            response = error_response(exc, None)
            self.metrics.count("", "usage", response.status_code)
            return response
        self.metrics.count("", "usage", 200)
        return json_response(orjson.dumps(gate.usage(key, self.clock())), 200)

    async def feedback(self, request: Request) -> Response:
        rid = request.path_params["request_id"]
        service = ""
        try:
            rid = path_request_id(rid)
            settings = self.settings
            raw = await read_body(request, settings.max_body_bytes, settings.body_timeout_ms)
            allow = None
            gate = self.gate
            if gate is not None:
                key = gate.authenticate(request.headers.get("authorization"))
                allow = partial(gate.scope, key)
            service, body = await self.feedback_desk.take(rid, parse_json(raw), allow)
        except Exception as exc:
            response = error_response(exc, rid)
            self.metrics.count(service, "feedback", response.status_code)
            return response
        self.metrics.count(service, "feedback", 202)
        return json_response(body, 202, rid)

    async def healthz(self, request: Request) -> Response:
        return json_response(orjson.dumps({"status": "ok", "replica_id": self.replica_id}), 200)

    async def readyz(self, request: Request) -> Response:
        gate = self.gate
        if gate is not None and not gate.ready:
            return error_response(
                KeysUnavailable(
                    f"this replica has not read its API keys and their usage yet: {gate.problem}"
                ),
                None,
            )
        if self.ready():
            return json_response(
                orjson.dumps({"status": "ready", "replica_id": self.replica_id}), 200
            )
        if self.transport.ready():
            return error_response(
                KafkaUnavailable(
                    f"this replica has not read the services' policies from {topics.CONTROL} "
                    f"at {self.settings.bootstrap} yet"
                ),
                None,
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


def _budget(due: Deadline, spec: ServiceSpec) -> str:
    if due.ms == spec.sla_ms:
        return f"{spec.sla_ms} ms SLA"
    return f"{due.ms} ms from X-Deadline-Ms, SLA {spec.sla_ms} ms"


# ---- construction --------------------------------------------------------------------------
def create_app(
    settings: ProxySettings,
    config: Config,
    transport: Transport | None = None,
    clock: Clock | None = None,
    keys: KeyLog | None = None,
    usage: KeyLog | None = None,
    *,
    policy_log: KeyLog | None = None,
    ready_wait_s: float = 0.0,
) -> Starlette:
    """The Starlette app of one replica; its lifespan starts/stops the transport and heartbeat.

    With ``ready_wait_s``, the lifespan's startup waits up to that long for the replica to be
    ready (Kafka reached, results assigned, keys read): a server starts listening only after
    its app's startup, so a replica that joins others on a shared port takes no traffic it
    would have to refuse.

    ``transport`` defaults to a :class:`KafkaTransport` on ``settings.bootstrap``; ``clock``
    (epoch milliseconds) defaults to the wall clock; ``keys`` and ``usage``, the logs of API
    keys and of their usage followed when ``settings.require_api_keys`` is on, to the
    ``rdv.api-keys`` and ``rdv.usage`` topics; ``policy_log``, where the policies in force
    (SLA and grace after a promotion) are followed, to ``rdv.control`` when the transport is
    Kafka's own, else to none (the configuration's SLA holds). The :class:`Proxy` is
    ``app.state.proxy``.
    """
    if policy_log is None and transport is None:
        policy_log = KafkaPolicyLog(
            settings.kafka, client_id=f"rdv-proxy-{settings.replica_id}-policies"
        )
    proxy = Proxy(
        settings,
        config,
        KafkaTransport(settings) if transport is None else transport,
        now_ms if clock is None else clock,
        keys,
        usage,
        policy_log,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await proxy.start()
        await proxy.wait_ready(ready_wait_s)
        try:
            yield
        finally:
            await proxy.stop()

    routes = [
        Route("/v1/services/{service}/score", proxy.score, methods=["POST"]),
        Route("/v1/services/{service}/requests", proxy.submit, methods=["POST"]),
        Route("/v1/requests/{request_id}", proxy.status, methods=["GET"]),
        Route("/v1/usage", proxy.usage, methods=["GET"]),
        Route("/v1/requests/{request_id}/feedback", proxy.feedback, methods=["POST"]),
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
