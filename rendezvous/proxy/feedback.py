"""``POST /v1/requests/{request_id}/feedback``: the true label of a past request, onto Kafka.

How the replica knows that a request exists, and what it answered:

1. the results it read from its reply partition of the results topic (its own requests',
   see :mod:`rendezvous.replies`), kept ``cache_ttl_ms`` (10 minutes) and at most
   ``cache_size`` of them: a request it answered a moment ago is known here;
2. else the archive's decisions (:class:`~rendezvous.archive.lookup.ArchiveLookup`), when the
   replica has an archive (``RDV_PROXY_ARCHIVE``; ``rendezvous proxy`` uses the stack's): a
   decision is there once the request's batch closed (deadline plus grace) and the archive
   job committed (its next checkpoint, about 10 s later), for ``feedback_lookback_days``.

A request in neither is a 404 ``unknown_request``: an ID that never was, one answered more than
``cache_ttl_ms`` ago on a replica without the archive, or one between its result's expiry and
its decision's commit. The message says to retry later.

And that it has no label yet: the labels this replica accepted (the newest ``cache_size``), and
the archive's ``feedback`` table. Two labels sent to two replicas within a checkpoint of each
other both reach the topic; the archive keeps both rows and the first by ``labelled_ms`` counts
(the ``labels`` view, the report). Nothing archived is changed: a label is a new row of its own
table.

A label is produced as a one-item FEEDBACK_BATCH keyed by the request ID, and the answer (202)
waits for Kafka's acknowledgement, so a 202 means the label is on the topic.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson

from rendezvous import records, serde, topics
from rendezvous.archive.layout import ArchiveError
from rendezvous.archive.lookup import ArchiveLookup
from rendezvous.clock import Clock
from rendezvous.proxy.book import ResultCache
from rendezvous.proxy.errors import (
    AlreadyLabelled,
    ArchiveUnavailable,
    KafkaUnavailable,
    UnknownRequest,
)
from rendezvous.proxy.labels import check_label, encoded, parse_feedback
from rendezvous.proxy.transport import Transport

log = logging.getLogger(__name__)


class FeedbackDesk:
    """Takes labels on one replica (see the module docstring)."""

    def __init__(
        self,
        transport: Transport,
        clock: Clock,
        results: ResultCache,
        lookup: ArchiveLookup | None,
        *,
        cache_size: int,
        delivery_timeout_ms: int,
        run_in_thread: Callable[..., Any] | None = None,
    ) -> None:
        self.transport = transport
        self.clock = clock
        self.results = results
        self.lookup = lookup
        self.cache_size = cache_size
        self.delivery_timeout_ms = delivery_timeout_ms
        self.run_in_thread = run_in_thread or asyncio.to_thread
        # request id -> service, of the labels this replica accepted, the newest cache_size
        self.labelled: OrderedDict[str, str] = OrderedDict()

    async def take(
        self, rid: str, body: Any, allow: Callable[[str], None] | None = None
    ) -> tuple[str, bytes]:
        """Check and produce the label ``body`` (parsed JSON) for request ``rid``; the service
        and the JSON of the 202 answer. ``allow(service)`` raises when the caller may not
        label that service's requests (access control)."""
        given = parse_feedback(body)
        self._not_labelled_here(rid)
        hit = self.results.get(rid)
        archived = None
        if self.lookup is not None:
            try:
                archived = await self.run_in_thread(self.lookup.find, rid, now_ms=self.clock())
            except ArchiveError as exc:
                raise ArchiveUnavailable(
                    f"{exc.message}; the label was not taken, send it again once the archive "
                    f"can be read",
                    request_id=rid,
                ) from None
        if hit is not None:
            service, output = hit[1]["service"], hit[1]["output"]
        elif archived is not None:
            service, output = archived.service, archived.output
        else:
            raise UnknownRequest(self._unknown(rid), request_id=rid)
        if allow is not None:
            allow(service)
        if archived is not None and archived.labelled:
            raise AlreadyLabelled(_labelled(rid, service, "the archive holds"), request_id=rid)
        label = check_label(given.label, output, request_id=rid, service=service)
        self._not_labelled_here(rid)  # again: another label may have come in meanwhile
        if not self.transport.ready():
            raise KafkaUnavailable(
                f"Kafka is not ready: {self.transport.detail() or 'no detail'}; the label was "
                f"not taken, send it again (check GET /readyz)",
                request_id=rid,
            )
        now = self.clock()
        record = records.feedback(
            request_id=rid,
            service=service,
            label=encoded(label),
            labelled_ms=now,
            observed_ms=given.observed_ms,
            source=given.source,
        )
        self._remember(rid, service)
        try:
            await self._produce(rid, record, now)
        except BaseException:
            self.labelled.pop(rid, None)  # not taken: the label may be sent again
            raise
        answer = {
            "request_id": rid,
            "service": service,
            "label": label,
            "labelled_ms": now,
            "status": "accepted",
        }
        return service, orjson.dumps(answer)

    # -- steps
    def _not_labelled_here(self, rid: str) -> None:
        service = self.labelled.get(rid)
        if service is not None:
            raise AlreadyLabelled(
                _labelled(rid, service, "this proxy replica took"), request_id=rid
            )

    def _remember(self, rid: str, service: str) -> None:
        labelled = self.labelled
        labelled[rid] = service
        if len(labelled) > self.cache_size:
            labelled.popitem(last=False)

    async def _produce(self, rid: str, record: records.Feedback, now: int) -> None:
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[str | None] = loop.create_future()

        def settle(outcome: str | None) -> None:
            if not acked.done():
                acked.set_result(outcome)

        value = serde.encode_batch(serde.Kind.FEEDBACK, rid, [record])
        self.transport.produce(
            topics.FEEDBACK,
            rid.encode(),
            value,
            now,
            on_error=settle,
            on_delivered=lambda: settle(None),
        )
        try:
            # the producer reports a failure after delivery_timeout_ms itself; a little more for
            # that report to arrive
            async with asyncio.timeout(self.delivery_timeout_ms / 1000 + 0.5):
                failure = await acked
        except TimeoutError:
            failure = f"no acknowledgement within {self.delivery_timeout_ms} ms"
        if failure is not None:
            raise KafkaUnavailable(
                f"Kafka did not take the label of request {rid}: {failure}; send it again "
                f"(a missing topic {topics.FEEDBACK} is created by `rendezvous up`)",
                request_id=rid,
            )

    def _unknown(self, rid: str) -> str:
        where = (
            f"among the results this replica read in the last {self.results.ttl_ms} ms, nor in "
            + (self.lookup.describe() if self.lookup is not None else "an archive (none is set)")
        )
        fix = (
            "a request's decision reaches the archive after its deadline, its service's grace "
            "and the archive's next checkpoint (about 10 s): retry later, or check the ID"
            if self.lookup is not None
            else "give the replica the archive (RDV_PROXY_ARCHIVE or `rendezvous proxy "
            "--archive PATH`) to label older requests, or check the ID"
        )
        return f"request {rid} is not known: it is not {where}; {fix}"


def _labelled(rid: str, service: str, where: str) -> str:
    return (
        f"request {rid} of service {service!r} has a label already ({where} one): the first "
        f"label counts and is never replaced (the archive's feedback table keeps every label "
        f"it received, the view labels the first of each request)"
    )
