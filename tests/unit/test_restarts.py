"""The scoring jobs' restart strategy: fast first restart, gives up on a crash loop."""

from __future__ import annotations

import zipfile

import yaml

from rendezvous import restarts
from rendezvous.settings import REPO_ROOT
from rendezvous.stack.flink import pyflink_home

OPTIONS_CLASS = "org/apache/flink/configuration/RestartStrategyOptions.class"


def test_every_key_is_one_flink_knows():
    (dist,) = (pyflink_home() / "lib").glob("flink-dist-*.jar")
    with zipfile.ZipFile(dist) as jar:
        known = jar.read(OPTIONS_CLASS)
    for key in restarts.SCORING:
        assert key.encode() in known, key


def test_the_first_restart_is_as_fast_as_the_clusters_and_the_delays_are_its_own():
    cluster = yaml.safe_load((REPO_ROOT / "flink-conf.yaml").read_text())
    prefix = "restart-strategy.exponential-delay."
    assert restarts.SCORING["restart-strategy.type"] == cluster["restart-strategy.type"]
    for option in ("initial-backoff", "max-backoff"):
        assert restarts.SCORING[prefix + option] == cluster[prefix + option]


def test_a_crash_loop_ends_after_about_a_minute_of_delays():
    delays = restarts.delays_s(restarts.SCORING)
    assert len(delays) == restarts.SCORING_ATTEMPTS
    assert delays[0] == 1.0 and max(delays) == 10.0
    assert 45 <= sum(delays) <= 90
