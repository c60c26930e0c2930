"""Where a request's answer goes: the address a proxy replica writes into ``reply_to``.

A replica reads one partition of the results topic, its *reply partition*, and names it in every
request it produces: ``reply_to`` is ``<replica id>@<partition>``. The rendezvous job writes
each result batch into the partition its requests named, so adding replicas does not multiply
the results each one reads. A ``reply_to`` without ``@`` (a client producing requests itself,
or a replica reading every partition) leaves the partition to the producer.

Replica IDs never hold ``@`` (``rendezvous.proxy.settings.REPLICA_ID_RE``). Pure.
"""

from __future__ import annotations

import struct
import zlib

SEPARATOR = "@"
# The rendezvous job's result values start with this: the partition, big-endian, -1 for any
# (read by dev.rendezvous.flink.ReplyRouted, which cuts it off).
_PREFIX = struct.Struct(">i")
ANY = -1


def address(replica_id: str, partition: int | None) -> str:
    """The ``reply_to`` of a replica reading ``partition`` (None: every partition)."""
    return replica_id if partition is None else f"{replica_id}{SEPARATOR}{partition}"


def partition_of(reply_to: str) -> int | None:
    """The partition a ``reply_to`` names, or None when it names none (or not a valid one)."""
    _, sep, tail = reply_to.rpartition(SEPARATOR)
    if not sep or not tail.isdigit() or len(tail) > 6:
        return None
    return int(tail)


def choose(replica_id: str, partitions: int) -> int:
    """The reply partition of a replica that was not given one: a stable hash of its ID.

    Two replicas may share a partition; each still finds its own requests' results in it (a
    replica matches results by request ID), it only reads the other's as well."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, got {partitions}")
    return zlib.crc32(replica_id.encode()) % partitions


def routed(reply_to: str, value: bytes) -> bytes:
    """``value`` prefixed with the partition ``reply_to`` names, for the results sink."""
    p = partition_of(reply_to)
    return _PREFIX.pack(ANY if p is None else p) + value


def unrouted(record: bytes) -> tuple[int | None, bytes]:
    """The partition and value of a :func:`routed` record (what the sink does, for tests)."""
    (p,) = _PREFIX.unpack_from(record)
    return (None if p < 0 else p), record[_PREFIX.size :]
