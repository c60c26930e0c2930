"""Rendezvous job: joins each request with its scores under event-time deadlines.

It reads two topics with one source: the model inputs and the scores. Requests and scores
travel in batches, so the job is keyed by batch ID and the pure :mod:`rendezvous.batch` applies
the per-request core (:mod:`rendezvous.core`) to every request of the batch: each request still
gets its own answer at its own deadline. Element
timestamps are broker append times, and heartbeats carry time whenever traffic does not
(see :mod:`rendezvous.heartbeat`), so the watermark moves when no traffic does and never passes
a score that the broker stamped before it.

Each record crosses into Python twice (the key selector and the process function); results
leave on the main output, grouped by the proxy replica that waits for them and prefixed with that
replica's reply partition (:mod:`rendezvous.replies`; the results sink routes them and cuts the
prefix off), and decisions on a side output.
"""

from __future__ import annotations

from pyflink.common.typeinfo import Types
from pyflink.datastream import DataStream, OutputTag
from pyflink.datastream.connectors import Sink, Source
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from jobs import common
from jobs.connectors import BYTES, event_time, kafka_sink, kafka_source, without_heartbeats
from jobs.metrics import JoinMetrics
from rendezvous import batch, replies, serde, topics

DECISIONS = OutputTag("decisions", BYTES)
_JOINED = frozenset(
    k for item in (serde.Kind.MODEL_INPUT, serde.Kind.SCORE) for k in (item, serde.BATCH_OF[item])
)


def key_of(value: bytes) -> str:
    """The batch ID of model inputs and scores; "" for heartbeats and anything unknown, which
    the process function drops before touching state."""
    if not value or value[0] not in _JOINED:
        return ""
    try:
        return serde.request_id(value)
    except serde.SerdeError:
        return ""


class RendezvousFunction(KeyedProcessFunction):
    def open(self, runtime_context: RuntimeContext) -> None:
        self.state = runtime_context.get_state(
            ValueStateDescriptor("batch", Types.PICKLED_BYTE_ARRAY())
        )
        self.metrics = JoinMetrics(runtime_context.get_metrics_group())

    def process_element(self, value: bytes, ctx: KeyedProcessFunction.Context):
        if not value or value[0] not in _JOINED or serde.is_heartbeat(value):
            return  # heartbeats carry time only
        try:
            kind, _, items = serde.decode_items(value)
        except serde.SerdeError:
            return  # written by something else than the enrich and score jobs: not joinable
        state = self.state.value() or batch.BatchState()
        if kind == serde.Kind.MODEL_INPUT:
            self.metrics.on_requests(items)
            outcome = batch.on_requests(state, items)
        else:
            outcome = batch.on_scores(state, items)
        self.metrics.add(outcome.results, outcome.decisions)
        yield from self._apply(state, outcome, ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        state = self.state.value()
        if state is None:
            return
        outcome = batch.on_timer(state, timestamp)
        self.metrics.add(outcome.results, outcome.decisions)
        yield from self._apply(state, outcome, ctx)

    def _apply(self, state: batch.BatchState, outcome: batch.BatchOutcome, ctx):
        timers = ctx.timer_service()
        for t in outcome.cancelled:
            timers.delete_event_time_timer(t)
        for t in outcome.timers:
            timers.register_event_time_timer(t)
        if outcome.done:
            self.state.clear()
        else:
            self.state.update(state)
        key = ctx.get_current_key()
        for reply_to, results in batch.by_reply_to(outcome.results).items():
            yield replies.routed(reply_to, serde.encode_batch(serde.Kind.RESULT, key, results))
        if outcome.decisions:
            yield DECISIONS, serde.encode_batch(serde.Kind.DECISION, key, outcome.decisions)


def build(
    env,
    source: Source | DataStream,
    results_sink: Sink | None = None,
    decisions_sink: Sink | None = None,
) -> tuple[DataStream, DataStream]:
    """The job's wiring: model inputs, scores and heartbeats in; results and decisions out.

    ``source`` is the Kafka source of both topics (element timestamps and watermarks come from
    the record timestamps), or a stream of the same values whose elements carry their timestamps
    and watermarks already (a bounded collection in tests). Returns the results and the
    decisions streams, each written to its sink when one is given.
    """
    if isinstance(source, DataStream):
        stream = source
    else:
        stream = env.from_source(
            source,
            event_time(out_of_order_ms=0, idle_ms=None),
            "inputs+scores",
            type_info=BYTES,
        ).uid("join-source")
    out = (
        without_heartbeats(stream, "join-data")
        .key_by(key_of, key_type=Types.STRING())
        .process(RendezvousFunction(), output_type=BYTES)
        .name("rendezvous")
        .uid("rendezvous")
    )
    if results_sink is not None:
        out.sink_to(results_sink).name("results sink").uid("join-results-sink")
    decisions = out.get_side_output(DECISIONS)
    if decisions_sink is not None:
        decisions.sink_to(decisions_sink).name("decisions sink").uid("join-decisions-sink")
    return out, decisions


def main(argv: list[str] | None = None) -> None:
    s = common.parse_args(argv)
    env = common.environment(
        latency_critical=True, watermarks=True, checkpoint_interval=s.checkpoint_interval
    )
    build(
        env,
        kafka_source(
            s.kafka,
            list(topics.RENDEZVOUS),
            f"{s.group_prefix}-join",
            start=s.start,
        ),
        kafka_sink(s.kafka, topics.RESULTS, reply_routed=True),
        # Transactional: the archive reads committed decisions only, so a decision re-emitted
        # after a recovery is archived once.
        kafka_sink(
            s.kafka,
            topics.DECISIONS,
            exactly_once=True,
            txn_prefix=f"{s.group_prefix}-join-decisions",
        ),
    )
    env.execute("rendezvous-join")


if __name__ == "__main__":
    main()
