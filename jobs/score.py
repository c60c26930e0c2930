"""Score job: one model reads every model-input record on its own and writes scores.

One job per model, so a slow or failing model never delays another model or the answer. A
model-input record is a batch of requests; the model scores it in one vectorised call and
writes one score batch with the same batch ID.
"""

from __future__ import annotations

from pyflink.datastream.functions import FlatMapFunction, RuntimeContext

from jobs import common
from jobs.connectors import BYTES, kafka_sink, kafka_source, no_watermarks, without_heartbeats
from jobs.metrics import ScoreMetrics
from rendezvous import restarts, serde, topics
from rendezvous.clock import now_ms
from rendezvous.config import ModelSpec
from rendezvous.scoring import score_records

_INPUTS = (serde.Kind.MODEL_INPUT, serde.Kind.MODEL_INPUT_BATCH)


class ScoreFunction(FlatMapFunction):
    def __init__(self, settings: common.JobSettings, spec: ModelSpec) -> None:
        self.settings = settings
        self.spec = spec  # read where the job is submitted: it travels with the job
        self.scorer = None
        self.metrics = None

    def open(self, runtime_context: RuntimeContext) -> None:
        from rendezvous.models import load_scorer

        self.metrics = ScoreMetrics(
            runtime_context.get_metrics_group(), self.settings.service, self.settings.model
        )
        self.scorer = load_scorer(self.spec, tracking_uri=self.settings.tracking_uri)

    def close(self) -> None:
        if self.scorer is not None:
            self.scorer.close()

    def flat_map(self, value: bytes):
        if not value or value[0] not in _INPUTS or serde.is_heartbeat(value):
            return
        try:
            _, batch_id, records = serde.decode_items(value)
        except serde.SerdeError:
            return  # the enrich job already dead-lettered what it could not encode
        self.scorer.refresh()  # follows an alias moved in the registry (cheap; see models.py)
        scores = score_records(self.scorer, self.settings.service, records, now_ms)
        self.metrics.add(scores)
        if scores:
            yield serde.encode_batch(serde.Kind.SCORE, batch_id, scores)


def build(env, source, sink, settings: common.JobSettings, spec: ModelSpec) -> None:
    name = f"score-{settings.service}-{settings.model}"
    inputs = env.from_source(source, no_watermarks(), "model-input", type_info=BYTES).uid(
        f"{name}-in"
    )
    scores = without_heartbeats(inputs, f"{name}-data").flat_map(
        ScoreFunction(settings, spec), output_type=BYTES
    )
    scores.name(name).uid(name).sink_to(sink).name("scores sink").uid(f"{name}-out")


def main(argv: list[str] | None = None) -> None:
    s = common.parse_args(argv, needs_service=True, needs_model=True)
    spec = s.config().service(s.service).model(s.model)
    env = common.environment(
        latency_critical=True,
        process=spec.isolation == "process",
        checkpoint_interval=s.checkpoint_interval,
        # gives up on a model that cannot load instead of restarting it forever
        restarts=restarts.SCORING,
    )
    group = f"{s.group_prefix}-score-{s.service}-{s.model}"
    build(
        env,
        kafka_source(s.kafka, [topics.MODEL_INPUT], group, start=s.start),
        # Transactional, so that the archive (reading committed records) holds each score
        # once; the rendezvous job reads them as soon as they are written.
        kafka_sink(s.kafka, topics.SCORES, exactly_once=True, txn_prefix=f"{group}-scores"),
        s,
        spec,
    )
    env.execute(f"rendezvous-score {s.service}/{s.model}")


if __name__ == "__main__":
    main()
