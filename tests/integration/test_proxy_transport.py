"""The proxy's Kafka transport against the real broker: what it reports back per record."""

from __future__ import annotations

import asyncio

import pytest

from rendezvous.proxy.settings import ProxySettings
from rendezvous.proxy.transport import KafkaTransport

pytestmark = [pytest.mark.kafka]


def test_acknowledgements_and_failures_reach_the_event_loop(stack, unique_topic):
    topic, results = unique_topic("ack"), unique_topic("results")
    settings = ProxySettings(bootstrap=stack.settings.kafka_bootstrap, delivery_timeout_ms=2000)
    transport = KafkaTransport(settings, results_topic=results, probe_topics=(topic,))

    async def go() -> tuple[list[str], list[str]]:
        acked: list[str] = []
        failed: list[str] = []
        transport.start(asyncio.get_running_loop(), lambda record: None)
        try:
            for i in range(3):
                transport.produce(
                    topic, b"k", b"v", 0, failed.append, lambda i=i: acked.append(f"r{i}")
                )
            # A topic the broker does not have: the delivery fails, and says so.
            transport.produce(
                "t-missing-" + topic, b"k", b"v", 0, failed.append, lambda: acked.append("x")
            )
            for _ in range(200):
                if len(acked) == 3 and failed:
                    break
                await asyncio.sleep(0.05)
        finally:
            transport.close()
        return acked, failed

    acked, failed = asyncio.run(go())
    assert sorted(acked) == ["r0", "r1", "r2"]
    assert len(failed) == 1 and "t-missing-" in failed[0], failed
