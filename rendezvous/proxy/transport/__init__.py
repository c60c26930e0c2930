"""How the proxy talks to Kafka: a small interface, the real one, and an in-memory double.

The interface is four calls: :meth:`Transport.start` (with the event loop and the callback that
receives every decoded RESULT record), :meth:`Transport.produce` (never blocks; raises
:class:`~rendezvous.proxy.errors.KafkaUnavailable` when the record cannot even be queued, and
reports a later delivery failure through ``on_error`` on the event loop),
:meth:`Transport.ready` (cheap, cached) and :meth:`Transport.close`.

| module | what |
|---|---|
| :mod:`~rendezvous.proxy.transport.base` | the :class:`Transport` interface and :class:`Record` |
| :mod:`~rendezvous.proxy.transport.kafka` | :class:`KafkaTransport`: the producer, its delivery poller and readiness probe |
| :mod:`~rendezvous.proxy.transport.results` | :class:`ResultsReader`: the thread that reads the results topic |
| :mod:`~rendezvous.proxy.transport.memory` | :class:`InMemoryTransport`: the double for tests and experiments |
"""

from __future__ import annotations

from rendezvous.proxy.transport.base import ErrorHandler, Record, ResultHandler, Transport
from rendezvous.proxy.transport.kafka import KafkaTransport
from rendezvous.proxy.transport.memory import InMemoryTransport
from rendezvous.proxy.transport.results import ResultsReader

__all__ = [
    "ErrorHandler",
    "InMemoryTransport",
    "KafkaTransport",
    "Record",
    "ResultHandler",
    "ResultsReader",
    "Transport",
]
