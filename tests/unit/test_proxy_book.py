"""A proxy replica's book of requests and results, with a fake clock and no event loop."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rendezvous.proxy import errors
from rendezvous.proxy.book import ReplicaBook, fingerprint

pytestmark = pytest.mark.unit

T0 = 1_700_000_000_000
TTL, GRACE = 1_000, 50
BODY = fingerprint(b'{"amount": 1}')
OTHER = fingerprint(b'{"amount": 2}')


class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def book(clock: Clock, cache_size: int = 10) -> ReplicaBook[str]:
    return ReplicaBook(cache_size=cache_size, cache_ttl_ms=TTL, result_grace_ms=GRACE, clock=clock)


def result(rid: str, service: str = "credit", **over: object) -> dict:
    return {"request_id": rid, "service": service, "received_ms": T0, "output": "1", **over}


def test_a_result_answers_its_waiter_and_is_served_for_the_ttl() -> None:
    clock = Clock()
    b = book(clock)
    b.wait("r1", "waiter-1")
    b.produced("r1", BODY)
    clock.now += 7
    assert b.on_result(result("r1")) == "waiter-1"
    assert b.unconfirmed == set()  # a result proves Kafka took it
    b.stop_waiting("r1")
    assert b.status("r1") == (T0 + 7, result("r1"))
    clock.now += TTL
    assert b.status("r1") == (T0 + 7, result("r1"))  # at most TTL old: still served
    clock.now += 1
    with pytest.raises(errors.UnknownRequest, match=f"last {TTL} ms"):
        b.status("r1")


def test_the_first_answer_wins() -> None:
    clock = Clock()
    b = book(clock)
    b.on_result(result("r1", output="first"))
    clock.now += 5
    b.on_result(result("r1", output="second"))
    assert b.status("r1") == (T0, result("r1", output="first"))


def test_the_cache_keeps_the_most_recently_used_results() -> None:
    b = book(Clock(), cache_size=3)
    for i in range(5):
        b.on_result(result(f"r{i}"))
    assert list(b.cache) == ["r2", "r3", "r4"]
    b.status("r2")  # used: the oldest is now r3
    b.on_result(result("r5"))
    assert sorted(b.cache) == ["r2", "r4", "r5"]


def test_an_in_flight_id_is_refused_and_a_finished_one_returns_its_answer() -> None:
    b = book(Clock())
    b.wait("sync", "w")
    b.accept("async", "credit", T0 + 100)
    for rid in ("sync", "async"):
        with pytest.raises(errors.DuplicateRequest, match="already in flight"):
            b.check_new(rid, "credit", BODY)
    b.on_result(result("done"))
    assert b.check_new("done", "credit", BODY) == (T0, result("done"))
    with pytest.raises(errors.DuplicateRequest, match="already used for service 'credit'"):
        b.check_new("done", "fraud", BODY)
    assert b.check_new("new", "credit", BODY) is None


def test_a_fingerprint_is_eight_bytes_of_the_raw_body() -> None:
    assert len(BODY) == 8 and fingerprint(b'{"amount": 1}') == BODY
    assert fingerprint(b'{"amount":1}') != BODY  # the bytes, not the JSON they spell


def test_an_id_taken_for_another_body_is_a_conflict_in_flight_and_answered() -> None:
    clock = Clock()
    b = book(clock)
    b.wait("sync", "w")
    b.produced("sync", BODY)
    b.accept("async", "credit", T0 + 100)
    b.produced("async", BODY)
    for rid in ("sync", "async"):
        with pytest.raises(errors.DuplicateRequest, match="already in flight"):
            b.check_new(rid, "credit", BODY)  # a retry: wait for the answer
        with pytest.raises(errors.RequestIdConflict) as conflict:
            b.check_new(rid, "credit", OTHER)
        assert conflict.value.request_id == rid
        assert f"request id {rid} was already used for another body" in conflict.value.message
        assert "new X-Request-ID" in conflict.value.message
    b.stop_waiting("sync")
    clock.now += 3
    for rid in ("sync", "async"):
        b.on_result(result(rid))
        assert b.check_new(rid, "credit", BODY) == (T0 + 3, result(rid))  # the same answer
        with pytest.raises(errors.RequestIdConflict, match="another body"):
            b.check_new(rid, "credit", OTHER)


def test_a_sync_request_that_gave_up_still_refuses_another_body_for_its_late_result() -> None:
    b = book(Clock())
    b.wait("r1", "w")
    b.produced("r1", BODY)
    b.stop_waiting("r1")  # 504: no result by the deadline
    b.judge("r1")
    assert b.check_new("r1", "credit", OTHER) is None  # unknown now: a new request
    b.on_result(result("r1"))
    with pytest.raises(errors.RequestIdConflict):
        b.check_new("r1", "credit", OTHER)


def test_another_service_keeps_its_message_and_another_replicas_result_any_body() -> None:
    b = book(Clock())
    b.produced("mine", BODY)
    b.on_result(result("mine"))
    with pytest.raises(errors.DuplicateRequest, match="already used for service 'credit'"):
        b.check_new("mine", "fraud", OTHER)
    b.on_result(result("theirs"))  # taken by another replica: its body is not known here
    assert b.check_new("theirs", "credit", OTHER) == (T0, result("theirs"))


def test_a_forgotten_id_is_new_whatever_its_old_body() -> None:
    clock = Clock()
    b = book(clock)
    b.produced("r1", BODY)
    b.on_result(result("r1"))
    clock.now += TTL + 1
    assert b.check_new("r1", "credit", OTHER) is None
    b.produced("r1", OTHER)
    b.on_result(result("r1"))
    assert b.check_new("r1", "credit", OTHER) is not None
    with pytest.raises(errors.RequestIdConflict):
        b.check_new("r1", "credit", BODY)


def test_fingerprints_are_bounded_and_a_retried_id_is_kept_as_a_new_one() -> None:
    b = book(Clock(), cache_size=3)
    for i in range(3):
        b.produced(f"r{i}", BODY)
        b.on_result(result(f"r{i}"))
    assert b.check_new("r0", "credit", BODY) is not None  # a retry: r0 is the newest now
    b.produced("r3", BODY)
    assert list(b.bodies) == ["r2", "r0", "r3"]
    b.produced("r2", OTHER)  # produced again: the newest, with its new body
    assert list(b.bodies) == ["r0", "r3", "r2"] and b.bodies["r2"] == OTHER


def test_an_accepted_request_is_pending_then_late_then_forgotten() -> None:
    clock = Clock()
    b = book(clock)
    b.accept("a1", "credit", T0 + 100)
    assert b.status("a1") is None
    clock.now = T0 + 100
    assert b.status("a1") is None
    clock.now += 1
    with pytest.raises(errors.AnswerTimeout, match=f"{GRACE} ms grace"):
        b.status("a1")
    clock.now = T0 + 100 + TTL + 1
    with pytest.raises(errors.UnknownRequest):
        b.status("a1")
    assert b.accepted == {}


def test_a_late_request_kafka_never_acknowledged_is_not_called_archived() -> None:
    clock = Clock()
    b = book(clock)
    for rid in ("taken", "lost"):
        b.produced(rid, BODY)
        b.accept(rid, "credit", T0 + 100)
    b.delivered(["taken"])
    clock.now = T0 + 101
    with pytest.raises(errors.AnswerTimeout, match="Kafka took the request, so it is still"):
        b.status("taken")
    with pytest.raises(errors.KafkaUnavailable, match="Kafka has not acknowledged it") as lost:
        b.status("lost")
    assert "archived downstream" not in lost.value.message


def test_a_delivery_failure_is_the_status_of_an_accepted_request() -> None:
    b = book(Clock())
    b.accept("a1", "credit", T0 + 100)
    b.produced("a1", BODY)
    assert b.delivery_failed("a1", "broker said no") is None  # nobody waits on it
    assert b.unconfirmed == set()
    with pytest.raises(errors.KafkaUnavailable, match="did not reach Kafka: broker said no"):
        b.status("a1")
    b.wait("s1", "w")
    assert b.delivery_failed("s1", "x") == "w"


def test_accepted_requests_are_bounded_oldest_first() -> None:
    b = book(Clock(), cache_size=2)
    for i in range(3):
        b.accept(f"a{i}", "credit", T0 + 100)
    assert list(b.accepted) == ["a1", "a2"]


def test_judging_tells_whether_kafka_had_taken_the_request() -> None:
    b = book(Clock())
    b.produced("r1", BODY)
    b.produced("r2", OTHER)
    b.delivered(["r2"])
    assert b.judge("r1") is True
    assert b.judge("r2") is False
    assert b.unconfirmed == set()


ids = st.sampled_from(["a", "b", "c", "d"])
events = st.one_of(
    st.tuples(st.just("wait"), ids),
    st.tuples(st.just("accept"), ids),
    st.tuples(st.just("result"), ids),
    st.tuples(st.just("fail"), ids),
    st.tuples(st.just("tick"), st.integers(0, 2 * TTL)),
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(events, max_size=30))
def test_any_interleaving_keeps_the_first_answer_and_bounded_maps(steps) -> None:
    clock = Clock()
    b = book(clock, cache_size=3)
    first: dict[str, tuple[int, int]] = {}  # rid -> (arrived_ms, the answer's serial number)
    for serial, (kind, arg) in enumerate(steps):
        if kind == "tick":
            clock.now += arg
        elif kind == "wait":
            b.wait(arg, arg)
        elif kind == "accept":
            b.accept(arg, "credit", clock.now + 100)
        elif kind == "result":
            known = arg in b.cache
            waiter = b.on_result(result(arg, output=serial))
            assert waiter == b.pending.get(arg)
            if not known:
                first[arg] = (clock.now, serial)
            assert arg not in b.accepted and arg not in b.unconfirmed
        else:
            b.delivery_failed(arg, "no")
        assert len(b.cache) <= 3 and len(b.accepted) <= 3
        for rid, (arrived, answer) in first.items():
            hit = b.cache.get(rid)
            if hit is not None:
                assert hit[0] == arrived and hit[1]["output"] == answer
                assert clock.now - arrived <= TTL


bodies = st.sampled_from([BODY, OTHER])
steps_with_bodies = st.lists(
    st.one_of(
        st.tuples(st.just("sync"), ids, bodies),
        st.tuples(st.just("async"), ids, bodies),
        st.tuples(st.just("result"), ids, bodies),
        st.tuples(st.just("tick"), st.integers(0, 2 * TTL), bodies),
    ),
    max_size=30,
)


@settings(max_examples=500, deadline=None)
@given(steps_with_bodies)
def test_a_known_id_answers_only_its_own_body(steps) -> None:
    """Whatever the interleaving: an unknown id is new, the body a known id was taken with is
    never a conflict, and another body is one while its fingerprint is kept."""
    clock = Clock()
    b = book(clock, cache_size=3)
    taken: dict[str, bytes] = {}  # rid -> the body it was last produced with
    for kind, arg, body in steps:
        if kind == "tick":
            clock.now += arg
            continue
        if kind == "result":
            b.on_result(result(arg))
            b.stop_waiting(arg)  # the sync waiter, if any, is answered and leaves
            continue
        in_flight = arg in b.pending or arg in b.accepted
        known = in_flight or arg in b.cache
        conflict = known and arg in b.bodies and taken[arg] != body
        try:
            hit = b.check_new(arg, "credit", body)
        except errors.RequestIdConflict:
            assert conflict
            continue
        except errors.DuplicateRequest:
            assert in_flight and not conflict
            continue
        assert not conflict and not in_flight
        assert (hit is not None) == known
        if hit is None:
            if kind == "sync":
                b.wait(arg, arg)
            else:
                b.accept(arg, "credit", clock.now + 100)
            b.produced(arg, body)
            taken[arg] = body
        assert len(b.bodies) <= 3 and all(b.bodies[rid] == taken[rid] for rid in b.bodies)


def test_the_book_needs_no_event_loop_nor_http() -> None:
    code = (
        "import sys, rendezvous.proxy.book; "
        "print([m for m in ('asyncio', 'starlette', 'pyflink') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cached_results_add_nothing_for_the_garbage_collector_to_walk() -> None:
    import gc

    b = book(Clock(), cache_size=5_000)
    gc.collect()
    before = len(gc.get_objects())
    for i in range(5_000):
        b.on_result(result(f"g{i}"))
    gc.collect()
    # A decoded result is a dict of strings and numbers, which the collector does not track;
    # the cache must not add a tracked object of its own per entry either.
    assert len(gc.get_objects()) - before < 100
    assert len(b.cache) == 5_000
