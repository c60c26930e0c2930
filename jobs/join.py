"""Rendezvous job: joins each request with its scores by request ID under event-time deadlines.

It reads one topic: the scores, plus the copy of each model input that the enrich job writes
there. Element timestamps are broker append times, and every partition carries heartbeats (see
:mod:`rendezvous.heartbeat`), so the watermark moves when no traffic does and never passes a
score that the broker stamped before it: no partition is ever declared idle, and a lone request
is still answered at its deadline.
"""

from __future__ import annotations

from pyflink.common.typeinfo import Types
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from jobs import common
from jobs.connectors import BYTES, event_time, kafka_sink, kafka_source, route
from rendezvous import core, serde, topics

_JOINED = (serde.Kind.MODEL_INPUT, serde.Kind.SCORE)


def joined(value: bytes) -> bool:
    """Model inputs and scores; heartbeats and anything unknown are dropped here."""
    return bool(value) and value[0] in _JOINED


def key_of(value: bytes) -> str:
    try:
        return serde.request_id(value)
    except serde.SerdeError:
        return ""  # process_element drops what it cannot decode


class RendezvousFunction(KeyedProcessFunction):
    def open(self, runtime_context: RuntimeContext) -> None:
        self.pending = runtime_context.get_state(
            ValueStateDescriptor("pending", Types.PICKLED_BYTE_ARRAY())
        )

    def process_element(self, value: bytes, ctx: KeyedProcessFunction.Context):
        try:
            kind, record = serde.decode(value)
        except serde.SerdeError:
            return  # written by something else than the enrich and score jobs: not joinable
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


def build(env, source, results_sink, decisions_sink) -> None:
    stream = env.from_source(
        source,
        event_time(out_of_order_ms=0, idle_ms=None),
        "inputs+scores",
        type_info=BYTES,
    ).uid("join-source")
    out = (
        stream.filter(joined)
        .name("drop heartbeats")
        .uid("join-filter")
        .key_by(key_of, key_type=Types.STRING())
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
            [topics.RENDEZVOUS],
            f"{s.group_prefix}-join",
            start=s.start,
        ),
        kafka_sink(s.bootstrap, topics.RESULTS),
        kafka_sink(s.bootstrap, topics.DECISIONS),
    )
    env.execute("rendezvous-join")


if __name__ == "__main__":
    main()
