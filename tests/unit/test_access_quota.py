"""Quotas per API key: one replica's counts, the others' read from the usage topic, their sum."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rendezvous.access import keys
from rendezvous.access.log import usage_key
from rendezvous.access.quota import QuotaBook, window

pytestmark = pytest.mark.unit

HOUR = 3_600_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR  # on the hour


def key(requests: int = 3, period_ms: int = HOUR) -> dict:
    _, record = keys.new_key(
        "ci", ["credit"], created_by="t", created_ms=T0, quota=keys.quota(requests, period_ms)
    )
    return record


def test_windows_are_aligned_to_the_epoch() -> None:
    assert window(HOUR, T0) == (T0, T0 + HOUR)
    assert window(HOUR, T0 + HOUR - 1) == (T0, T0 + HOUR)
    assert window(HOUR, T0 + HOUR) == (T0 + HOUR, T0 + 2 * HOUR)


def test_a_quota_admits_its_budget_per_window_then_refuses_until_the_window_ends() -> None:
    book, record = QuotaBook("r1"), key(3)
    verdicts = [book.take(record, T0 + i) for i in range(4)]
    assert [(v.allowed, v.remaining) for v in verdicts] == [
        (True, 2),
        (True, 1),
        (True, 0),
        (False, 0),
    ]
    refused = verdicts[-1]
    assert refused.reset_ms == T0 + HOUR
    assert refused.headers(T0 + HOUR - 1500) == {
        "x-ratelimit-limit": "3",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": "2",
        "retry-after": "2",
    }
    assert "retry-after" not in verdicts[0].headers(T0)
    assert book.take(record, T0 + HOUR).allowed  # the next window
    assert book.used(record, T0 + HOUR) == (1, T0 + HOUR, T0 + 2 * HOUR)


def test_a_key_without_a_quota_is_not_counted() -> None:
    _, record = keys.new_key("ci", ["credit"], created_by="t", created_ms=T0)
    book = QuotaBook("r1")
    assert book.take(record, T0) is None and book.used(record, T0) is None
    assert book.report(T0) == []


def test_the_other_replicas_counts_are_summed_with_this_ones() -> None:
    record = key(10)
    book = QuotaBook("r1")
    other = QuotaBook("r2")
    for _ in range(4):
        other.take(record, T0)
    [published] = other.report(T0 + 5)
    assert published["count"] == 4 and published["replica_id"] == "r2"
    book.on_usage(usage_key(published), published)
    for _ in range(2):
        other.take(record, T0 + 10)
    [later] = other.report(T0 + 20)
    book.on_usage(usage_key(later), later)  # the latest count replaces the one before
    book.on_usage(usage_key(published), published)  # and a stale one read again is no sum
    assert book.used(record, T0 + 30) == (4, T0, T0 + HOUR)
    book.on_usage(usage_key(later), later)
    assert book.used(record, T0 + 30)[0] == 6
    verdicts = [book.take(record, T0 + 40) for _ in range(5)]
    assert [v.allowed for v in verdicts] == [True] * 4 + [False]
    assert other.report(T0 + 50) == []  # nothing new on r2


def test_a_count_of_another_window_does_not_count_now() -> None:
    record = key(2)
    book, other = QuotaBook("r1"), QuotaBook("r2")
    other.take(record, T0 - 10)
    other.take(record, T0 - 5)
    [last_hour] = other.report(T0 - 1)
    book.on_usage(usage_key(last_hour), last_hour)
    assert book.take(record, T0).allowed
    book.report(T0 + 1)  # the ended window's count is forgotten
    assert book.remote == {} and book.sums == {}


def test_a_replica_restarted_under_its_own_id_takes_its_count_back() -> None:
    record = key(5)
    before = QuotaBook("r1")
    for _ in range(3):
        before.take(record, T0)
    [mine] = before.report(T0 + 1)
    after = QuotaBook("r1")
    after.on_usage(usage_key(mine), mine)
    assert after.used(record, T0 + 2)[0] == 3 and after.sums == {}


def test_a_report_that_could_not_be_sent_is_sent_again() -> None:
    record = key(5)
    book = QuotaBook("r1")
    book.take(record, T0)
    first = book.report(T0 + 1)
    assert book.report(T0 + 2) == []
    book.unreported(first)
    assert [r["count"] for r in book.report(T0 + 3)] == [1]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["r1", "r2", "r3"]), st.integers(0, 3 * HOUR // 1000)),
        max_size=60,
    ),
    st.integers(1, 12),
)
def test_with_every_count_shared_no_window_admits_more_than_its_budget(events, budget) -> None:
    # Replicas that share every count before the next request (an interval of zero) admit
    # exactly what one replica alone would: at most the budget in each window.
    record = key(budget)
    books = {r: QuotaBook(r) for r in ("r1", "r2", "r3")}
    admitted: dict[int, int] = {}
    for replica, second in sorted(events, key=lambda e: e[1]):
        now = T0 + second * 1000
        verdict = books[replica].take(record, now)
        if verdict.allowed:
            start = window(HOUR, now)[0]
            admitted[start] = admitted.get(start, 0) + 1
        for usage in books[replica].report(now):
            for name, book in books.items():
                if name != replica:
                    book.on_usage(usage_key(usage), usage)
    assert all(n <= budget for n in admitted.values()), admitted
    per_window: dict[int, int] = {}
    for _, second in events:
        start = window(HOUR, T0 + second * 1000)[0]
        per_window[start] = per_window.get(start, 0) + 1
    assert admitted == {w: min(n, budget) for w, n in per_window.items()}


def test_a_quota_is_checked() -> None:
    with pytest.raises(ValueError, match="from 1 s"):
        keys.quota(10, 10)
    with pytest.raises(ValueError, match=">= 0"):
        keys.quota(-1, HOUR)
