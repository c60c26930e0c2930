"""Reading the control topic: a partition without its leader yet is asked again, bounded."""

from __future__ import annotations

import confluent_kafka
import pytest
from confluent_kafka import KafkaError, KafkaException

from rendezvous import control
from rendezvous.errors import RendezvousError
from rendezvous.kafka import KafkaConnection

pytestmark = pytest.mark.unit


class Consumer:
    """Answers the watermark request with ``errors`` first, then an empty partition."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = list(errors)
        self.asked = 0
        self.closed = False

    def __call__(self, config: dict) -> Consumer:
        return self

    def get_watermark_offsets(self, partition, timeout: float) -> tuple[int, int]:
        self.asked += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return 0, 0

    def close(self) -> None:
        self.closed = True


def test_not_leader_yet_is_asked_again(monkeypatch):
    fake = Consumer([KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE])
    monkeypatch.setattr(confluent_kafka, "Consumer", fake)
    log = control.KafkaControl(KafkaConnection("127.0.0.1:1"), timeout_s=5)
    assert log.entries() == [] and fake.asked == 3 and fake.closed


def test_other_errors_fail_at_once_naming_the_topic(monkeypatch):
    fake = Consumer([KafkaError._TRANSPORT])
    monkeypatch.setattr(confluent_kafka, "Consumer", fake)
    log = control.KafkaControl(KafkaConnection("127.0.0.1:1"), timeout_s=5)
    with pytest.raises(RendezvousError, match="could not read rdv.control at 127.0.0.1:1"):
        log.entries()
    assert fake.asked == 1
