"""Admission control: the limit falls when deadlines are missed and climbs back when they are met."""

from __future__ import annotations

import pytest

from rendezvous.proxy.admission import Admission

pytestmark = pytest.mark.unit


def test_places_run_out_at_the_limit_and_come_back() -> None:
    a = Admission(limit=2)
    assert a.try_enter() and a.try_enter()
    assert not a.try_enter() and a.rejected == 1
    a.leave_unjudged()
    assert a.try_enter() and a.in_flight == 2


def test_missed_deadlines_cut_the_limit_once_per_cooldown_and_answers_restore_it() -> None:
    a = Admission(limit=100, min_limit=8, decrease=0.5, cooldown_ms=100)
    for _ in range(20):  # a burst of timeouts within one cooldown: one cut
        a.try_enter()
        a.leave(in_time=False, now_ms=1_000)
    assert a.limit == 50
    for t in range(10):  # sustained timeouts: a cut per cooldown, never under the floor
        a.try_enter()
        a.leave(in_time=False, now_ms=1_100 + 100 * t)
    assert a.limit == 8
    before = a.limit
    for _ in range(200):
        a.try_enter()
        a.leave(in_time=True, now_ms=5_000)
    assert a.limit > before + 50 and a.in_flight == 0
