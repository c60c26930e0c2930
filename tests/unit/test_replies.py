"""Reply addresses: the results partition a replica reads, named in its requests' reply_to,
and the prefix the rendezvous job writes for the results sink."""

from __future__ import annotations

import asyncio
import threading

import pytest

from rendezvous import replies
from rendezvous.proxy.settings import ProxySettings
from rendezvous.proxy.transport.results import ResultsReader


def test_an_address_names_its_partition_and_reads_back():
    assert replies.address("r1", 3) == "r1@3"
    assert replies.partition_of("r1@3") == 3
    assert replies.address("r1", None) == "r1"
    assert replies.partition_of("r1") is None


@pytest.mark.parametrize("reply_to", ["", "r1", "r1@", "r1@x", "r1@-2", "r1@1234567", "@@"])
def test_a_reply_to_without_a_valid_partition_names_none(reply_to):
    assert replies.partition_of(reply_to) is None


def test_the_chosen_partition_is_stable_and_spreads_replicas():
    assert replies.choose("replica-a", 8) == replies.choose("replica-a", 8)
    chosen = [replies.choose(f"replica-{i}", 8) for i in range(200)]
    assert set(chosen) == set(range(8))  # 200 IDs over 8 partitions leave none out
    assert all(replies.choose(f"r{i}", 1) == 0 for i in range(20))
    with pytest.raises(ValueError):
        replies.choose("r", 0)


def test_a_routed_value_carries_its_partition_in_front():
    value = b"\x07batch"
    assert replies.unrouted(replies.routed("r@5", value)) == (5, value)
    assert replies.unrouted(replies.routed("r", value)) == (None, value)
    assert replies.routed("r@258", b"")[:4] == b"\x00\x00\x01\x02"


def reader(**settings) -> tuple[ResultsReader, list[str]]:
    problems: list[str] = []
    r = ResultsReader(
        ProxySettings(replica_id="rep-1", **settings),
        "rdv.results",
        asyncio.new_event_loop(),
        lambda _: None,
        threading.Event(),
        problems.append,
    )
    return r, problems


def test_a_replica_reads_one_partition_by_default_and_keeps_it():
    r, problems = reader()
    first = r._wanted([0, 1, 2, 3], set())
    assert first == [replies.choose("rep-1", 4)] and not problems
    assert r._wanted([0, 1, 2, 3, 4, 5], set(first)) == []  # partitions added later: kept


def test_a_named_partition_is_read_and_one_the_topic_lacks_is_refused():
    r, problems = reader(results_partition="2")
    assert r._wanted([0, 1, 2], set()) == [2]
    r, problems = reader(results_partition="5")
    assert r._wanted([0, 1, 2], set()) == []
    assert "partitions 0-2, not 5" in problems[0] and "RDV_PROXY_RESULTS_PARTITION" in problems[0]


def test_all_reads_every_partition_and_those_added_later():
    r, _ = reader(results_partition="all")
    assert r._wanted([0, 1], set()) == [0, 1]
    assert r._wanted([0, 1, 2], {0, 1}) == [2]
    assert r.reply_to == "rep-1"
