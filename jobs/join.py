"""Rendezvous job: joins each request with its scores by request ID under event-time deadlines.

One source reads model inputs, scores and clock ticks; the ticks carry time forward when no
traffic does, so a lone request is still answered at its deadline.

Known limit: partitions idle for ``idle_ms`` are left out of the watermark, so after a stall
longer than the SLA a score already on an idle partition can be read after clock ticks that
passed its deadline; it then counts as late. Heartbeats into every partition would remove the
need for idleness.
"""

from __future__ import annotations

from pyflink.common.typeinfo import Types
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from jobs import common
from jobs.connectors import BYTES, event_time, kafka_sink, kafka_source, route
from rendezvous import core, serde, topics


def request_id(value: bytes) -> str:
    kind, record = serde.decode(value)
    return record["request_id"]


def decodable(value: bytes) -> bool:
    try:
        return serde.decode(value)[0] in (serde.Kind.MODEL_INPUT, serde.Kind.SCORE)
    except serde.SerdeError:
        return False


class RendezvousFunction(KeyedProcessFunction):
    def open(self, runtime_context: RuntimeContext) -> None:
        self.pending = runtime_context.get_state(
            ValueStateDescriptor("pending", Types.PICKLED_BYTE_ARRAY())
        )

    def process_element(self, value: bytes, ctx: KeyedProcessFunction.Context):
        kind, record = serde.decode(value)
        state = self.pending.value() or core.Pending()
        if kind == serde.Kind.MODEL_INPUT:
            outcome = core.on_request(state, record)
        else:
            outcome = core.on_score(state, record)
        yield from self._apply(state, outcome, ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        state = self.pending.value()
        if state is None:
            return
        yield from self._apply(state, core.on_timer(state, timestamp), ctx)

    def _apply(self, state: core.Pending, outcome: core.Outcome, ctx):
        for t in outcome.timers:
            ctx.timer_service().register_event_time_timer(t)
        if outcome.done:
            self.pending.clear()
        else:
            self.pending.update(state)
        for result in outcome.results:
            yield serde.encode(serde.Kind.RESULT, result)
        for decision in outcome.decisions:
            yield serde.encode(serde.Kind.DECISION, decision)


def build(env, source, results_sink, decisions_sink, *, idle_ms: int = 50) -> None:
    stream = env.from_source(
        source,
        event_time(out_of_order_ms=0, idle_ms=idle_ms),
        "inputs+scores+clock",
        type_info=BYTES,
    ).uid("join-source")
    out = (
        stream.filter(decodable)
        .name("drop ticks")
        .uid("join-filter")
        .key_by(request_id, key_type=Types.STRING())
        .process(RendezvousFunction(), output_type=BYTES)
        .name("rendezvous")
        .uid("rendezvous")
    )
    route(out, serde.Kind.RESULT, results_sink, name="results", uid="join-results")
    route(out, serde.Kind.DECISION, decisions_sink, name="decisions", uid="join-decisions")


def main(argv: list[str] | None = None) -> None:
    s = common.parse_args(argv)
    env = common.environment()
    build(
        env,
        kafka_source(
            s.bootstrap,
            [topics.MODEL_INPUT, topics.SCORES, topics.CLOCK],
            f"{s.group_prefix}-join",
            start=s.start,
        ),
        kafka_sink(s.bootstrap, topics.RESULTS),
        kafka_sink(s.bootstrap, topics.DECISIONS),
    )
    env.execute("rendezvous-join")


if __name__ == "__main__":
    main()
