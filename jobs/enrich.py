"""Enrich job: requests (+ control) -> model-input (+ dead letters).

Every service it enriches is defined on the control topic (see :mod:`rendezvous.catalog`): one
enrich job serves the services of any number of configuration files, and submitting, changing
or removing one needs no restart. Control records reach every parallel instance (broadcast
partitioning); each instance stamps the service's current policy onto the model-input record,
so a policy change applies to every request accepted after it, and the rendezvous decision
depends only on recorded inputs.
"""

from __future__ import annotations

import logging

from pyflink.datastream import OutputTag
from pyflink.datastream.functions import CoProcessFunction, RuntimeContext

from jobs import common
from jobs.connectors import BYTES, kafka_sink, kafka_source, no_watermarks
from rendezvous import records, serde, topics
from rendezvous.clock import now_ms
from rendezvous.control import KafkaControl
from rendezvous.enrich import EnrichError, ServiceBook, to_model_input
from rendezvous.policy import NO_POLICY

logger = logging.getLogger(__name__)

DEAD_LETTERS = OutputTag("dead-letters", BYTES)


class EnrichFunction(CoProcessFunction):
    def __init__(self, settings: common.JobSettings, control_log=None) -> None:
        self.settings = settings
        self.control_log = control_log  # None: the control topic of the job's Kafka

    def open(self, runtime_context: RuntimeContext) -> None:
        # The whole control log first, so that a request never races its service's
        # definition and a job restored from a checkpoint (whose control source resumes at
        # the checkpoint's offset) holds every definition and policy that was in force; the
        # control source then brings what comes after, and what it reads again changes
        # nothing (records apply by version).
        self.services = ServiceBook()
        log = self.control_log or KafkaControl(self.settings.kafka)
        for kind, record in log.entries():
            self._apply(kind, record)

    def _apply(self, kind, record) -> None:
        try:
            done = self.services.apply(kind, record)
        except EnrichError as exc:
            logger.error("%s", exc)
            return
        if done:
            logger.info("control: %s", done)

    def process_element1(self, value: bytes, ctx):
        try:
            kind, batch_id, requests = serde.decode_items(value)
            if kind != serde.Kind.REQUEST:
                raise serde.SerdeError(
                    f"expected a REQUEST or REQUEST_BATCH record, got {kind.name}"
                )
        except serde.SerdeError as exc:
            yield DEAD_LETTERS, _dead_letter(value, str(exc))
            return
        now = now_ms()
        records = []
        services = self.services
        for request in requests:
            service = request["service"]
            policy = services.policy(service) or NO_POLICY
            record, dead = to_model_input(request, policy, services.enricher(service), now)
            records.append(record)
            if dead is not None:
                yield DEAD_LETTERS, serde.encode(serde.Kind.DEAD_LETTER, dead)
        yield serde.encode_batch(serde.Kind.MODEL_INPUT, batch_id, records)

    def process_element2(self, value: bytes, ctx):
        try:
            kind, record = serde.decode(value)
        except serde.SerdeError as exc:
            yield DEAD_LETTERS, _dead_letter(value, str(exc))
            return
        self._apply(kind, record)


def _dead_letter(value: bytes, error: str) -> bytes:
    return serde.encode(
        serde.Kind.DEAD_LETTER,
        records.dead_letter(stage="enrich", error=error, record=value, at_ms=now_ms()),
    )


def build(env, requests_source, control_source, model_input_sink, dead_letter_sink, settings):
    requests = env.from_source(requests_source, no_watermarks(), "requests", type_info=BYTES).uid(
        "enrich-requests"
    )
    control = env.from_source(control_source, no_watermarks(), "control", type_info=BYTES).uid(
        "enrich-control"
    )
    out = (
        requests.connect(control.broadcast())
        .process(EnrichFunction(settings), output_type=BYTES)
        .name("enrich")
        .uid("enrich")
    )
    out.sink_to(model_input_sink).name("model-input sink").uid("enrich-mi-sink")
    out.get_side_output(DEAD_LETTERS).sink_to(dead_letter_sink).name("dead-letter sink").uid(
        "enrich-dl-sink"
    )


def main(argv: list[str] | None = None) -> None:
    s = common.parse_args(argv)
    env = common.environment(latency_critical=True, checkpoint_interval=s.checkpoint_interval)
    build(
        env,
        kafka_source(s.kafka, [topics.REQUESTS], f"{s.group_prefix}-enrich", start=s.start),
        # Control is re-read from the start on every run: the latest version per service wins.
        kafka_source(
            s.kafka, [topics.CONTROL], f"{s.group_prefix}-enrich-control", start="earliest"
        ),
        # Transactional, so that the archive (reading committed records) holds each request
        # once; the scoring and rendezvous jobs read them as soon as they are written.
        kafka_sink(
            s.kafka,
            topics.MODEL_INPUT,
            exactly_once=True,
            txn_prefix=f"{s.group_prefix}-enrich-model-input",
        ),
        kafka_sink(s.kafka, topics.DEAD_LETTER),
        s,
    )
    env.execute("rendezvous-enrich")


if __name__ == "__main__":
    main()
