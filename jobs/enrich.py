"""Enrich job: requests (+ control) -> model-input (+ dead letters).

Control records reach every parallel instance (broadcast partitioning); each instance stamps
the service's current policy onto the model-input record, so a policy change applies to every
request accepted after it, and the rendezvous decision depends only on recorded inputs.
"""

from __future__ import annotations

from pyflink.datastream.functions import CoFlatMapFunction, RuntimeContext

from jobs import common
from jobs.connectors import BYTES, kafka_sink, kafka_source, no_watermarks, route
from rendezvous import serde, topics
from rendezvous.enrich import Enricher, PolicyBook, to_model_input


class EnrichFunction(CoFlatMapFunction):
    def __init__(self, settings: common.JobSettings) -> None:
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        cfg = self.settings.config()
        base = self.settings.config_path.parent
        self.enrichers = {name: Enricher(spec, base) for name, spec in cfg.services.items()}
        self.policies = PolicyBook(cfg)

    def flat_map1(self, value: bytes):
        try:
            request = serde.decode_as(serde.Kind.REQUEST, value)
        except serde.SerdeError as exc:
            yield _dead_letter(value, str(exc))
            return
        policy = self.policies.get(request["service"])
        if policy is None:
            policy = {"preference": [], "sla_ms": 0, "grace_ms": 0, "version": -1}
        record, dead = to_model_input(
            request, policy, self.enrichers.get(request["service"]), common.now_ms()
        )
        yield serde.encode(serde.Kind.MODEL_INPUT, record)
        if dead is not None:
            yield serde.encode(serde.Kind.DEAD_LETTER, dead)

    def flat_map2(self, value: bytes):
        try:
            kind, record = serde.decode(value)
        except serde.SerdeError as exc:
            yield _dead_letter(value, str(exc))
            return
        if kind == serde.Kind.CONTROL:
            self.policies.apply(record)


def _dead_letter(value: bytes, error: str) -> bytes:
    return serde.encode(
        serde.Kind.DEAD_LETTER,
        {
            "request_id": None,
            "service": None,
            "stage": "enrich",
            "error": error,
            "record": value,
            "at_ms": common.now_ms(),
        },
    )


def build(
    env,
    requests_source,
    control_source,
    model_input_sink,
    rendezvous_sink,
    dead_letter_sink,
    settings,
) -> None:
    """Model inputs go to the scoring jobs and, as a copy, into the stream the rendezvous job
    reads: it then reads one topic, whose every partition carries heartbeats."""
    requests = env.from_source(requests_source, no_watermarks(), "requests", type_info=BYTES).uid(
        "enrich-requests"
    )
    control = env.from_source(control_source, no_watermarks(), "control", type_info=BYTES).uid(
        "enrich-control"
    )
    out = (
        requests.connect(control.broadcast())
        .flat_map(EnrichFunction(settings), output_type=BYTES)
        .name("enrich")
        .uid("enrich")
    )
    route(
        out,
        serde.Kind.MODEL_INPUT,
        model_input_sink,
        rendezvous_sink,
        name="model-input",
        uid="enrich-mi",
    )
    route(out, serde.Kind.DEAD_LETTER, dead_letter_sink, name="dead-letter", uid="enrich-dl")


def main(argv: list[str] | None = None) -> None:
    s = common.parse_args(argv)
    env = common.environment()
    build(
        env,
        kafka_source(s.bootstrap, [topics.REQUESTS], f"{s.group_prefix}-enrich", start=s.start),
        # Control is re-read from the start on every run: the latest version per service wins.
        kafka_source(
            s.bootstrap, [topics.CONTROL], f"{s.group_prefix}-enrich-control", start="earliest"
        ),
        kafka_sink(s.bootstrap, topics.MODEL_INPUT),
        kafka_sink(s.bootstrap, topics.RENDEZVOUS),
        kafka_sink(s.bootstrap, topics.DEAD_LETTER),
        s,
    )
    env.execute("rendezvous-enrich")


if __name__ == "__main__":
    main()
