"""The proxy's interface to Kafka, and the record a transport produces.

Implemented by :class:`~rendezvous.proxy.transport.kafka.KafkaTransport` and, for tests,
:class:`~rendezvous.proxy.transport.memory.InMemoryTransport`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, NamedTuple

ResultHandler = Callable[[dict[str, Any]], None]
ErrorHandler = Callable[[str], None]


class Record(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes
    timestamp_ms: int


class Transport:
    """What the proxy needs from Kafka. Subclasses implement all four methods."""

    def start(self, loop: asyncio.AbstractEventLoop, on_result: ResultHandler) -> None:
        """Begin delivering RESULT records to ``on_result``, called on ``loop``."""
        raise NotImplementedError

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        timestamp_ms: int,
        on_error: ErrorHandler | None = None,
        on_delivered: Callable[[], None] | None = None,
    ) -> None:
        """Queue one record; ``on_error(text)`` runs on the loop if delivery fails later,
        ``on_delivered()`` once the broker has acknowledged it."""
        raise NotImplementedError

    def tick(self, at_ms: int) -> int:
        """Queue one heartbeat into every partition of the heartbeat topics; return how many."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether Kafka is reachable (cached; must be cheap enough to call per request)."""
        raise NotImplementedError

    def tick_partitions(self) -> int:
        """How many partitions a heartbeat goes into (0 while unknown)."""
        raise NotImplementedError

    def detail(self) -> str:
        """Why the transport is not ready, in words for an operator."""
        return ""

    def reply_to(self, replica_id: str) -> str:
        """What requests put in ``reply_to`` so that their results reach this transport's
        reader (see :mod:`rendezvous.replies`): by default the replica's ID alone."""
        return replica_id

    def close(self) -> None:
        """Stop background work and flush what is queued (may block briefly)."""
        raise NotImplementedError
