"""Score job: one model reads every model-input record on its own and writes scores.

One job per model, so a slow or failing model never delays another model or the answer.
"""

from __future__ import annotations

from pyflink.datastream.functions import FlatMapFunction, RuntimeContext

from jobs import common
from jobs.connectors import BYTES, kafka_sink, kafka_source, no_watermarks
from rendezvous import serde, topics
from rendezvous.scoring import score_record


class ScoreFunction(FlatMapFunction):
    def __init__(self, settings: common.JobSettings) -> None:
        self.settings = settings
        self.scorer = None

    def open(self, runtime_context: RuntimeContext) -> None:
        from rendezvous.models import load_scorer

        spec = self.settings.config().service(self.settings.service).model(self.settings.model)
        self.scorer = load_scorer(spec, tracking_uri=self.settings.tracking_uri)

    def close(self) -> None:
        if self.scorer is not None:
            self.scorer.close()

    def flat_map(self, value: bytes):
        if not value or value[0] != serde.Kind.MODEL_INPUT:
            return  # heartbeats
        try:
            record = serde.decode_as(serde.Kind.MODEL_INPUT, value)
        except serde.SerdeError:
            return  # the enrich job already dead-lettered what it could not encode
        self.scorer.refresh()  # follows an alias moved in the registry (cheap; see models.py)
        score = score_record(self.scorer, self.settings.service, record, common.now_ms)
        if score is not None:
            yield serde.encode(serde.Kind.SCORE, score)


def build(env, source, sink, settings: common.JobSettings) -> None:
    name = f"score-{settings.service}-{settings.model}"
    env.from_source(source, no_watermarks(), "model-input", type_info=BYTES).uid(
        f"{name}-in"
    ).flat_map(ScoreFunction(settings), output_type=BYTES).name(name).uid(name).sink_to(sink).name(
        "scores sink"
    ).uid(f"{name}-out")


def main(argv: list[str] | None = None) -> None:
    s = common.parse_args(argv, needs_service=True, needs_model=True)
    env = common.environment()
    group = f"{s.group_prefix}-score-{s.service}-{s.model}"
    build(
        env,
        kafka_source(s.bootstrap, [topics.MODEL_INPUT], group, start=s.start),
        kafka_sink(s.bootstrap, topics.SCORES),
        s,
    )
    env.execute(f"rendezvous-score {s.service}/{s.model}")


if __name__ == "__main__":
    main()
