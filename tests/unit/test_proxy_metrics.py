"""The proxy's own metrics that are not about one request: Kafka acknowledgements, GC pauses,
the lag of its give-ups."""

from __future__ import annotations

import gc

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rendezvous.proxy.metrics import Metrics

pytestmark = pytest.mark.unit


def samples(m: Metrics) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_kafka_acknowledgements_land_in_their_buckets() -> None:
    m = Metrics()
    for ms in (1, 3, 40, 400):
        m.kafka_ack(ms)
    s = samples(m)
    assert s[("rdv_proxy_kafka_ack_seconds_count", ())] == 4
    assert s[("rdv_proxy_kafka_ack_seconds_bucket", (("le", "0.005"),))] == 2
    assert s[("rdv_proxy_kafka_ack_seconds_bucket", (("le", "0.25"),))] == 3
    assert s[("rdv_proxy_kafka_ack_seconds_sum", ())] == pytest.approx(0.444)


def test_give_up_lags_land_in_their_buckets_and_an_early_one_counts_as_none() -> None:
    m = Metrics()
    for ms in (-2, 0, 4, 30, 150):
        m.give_up_lag(ms)
    s = samples(m)
    assert s[("rdv_proxy_give_up_lag_seconds_count", ())] == 5
    assert s[("rdv_proxy_give_up_lag_seconds_bucket", (("le", "0.001"),))] == 2
    assert s[("rdv_proxy_give_up_lag_seconds_bucket", (("le", "0.005"),))] == 3
    assert s[("rdv_proxy_give_up_lag_seconds_bucket", (("le", "0.1"),))] == 4
    assert s[("rdv_proxy_give_up_lag_seconds_sum", ())] == pytest.approx(0.184)


def test_collections_are_timed_by_generation_only_while_watched() -> None:
    m = Metrics()
    m.watch_gc()
    try:
        gc.collect(2)
    finally:
        m.unwatch_gc()
    key = ("rdv_proxy_gc_pause_seconds_count", (("generation", "2"),))
    assert samples(m)[key] >= 1
    before = samples(m)[key]
    gc.collect(2)
    assert samples(m)[key] == before
    m.unwatch_gc()  # a second unwatch is harmless
