"""Request quotas per API key, counted by every proxy replica and summed across them.

A key's quota is a budget per window: epoch time cut into windows of the quota's period (an
hour's window starts on the hour, UTC). The budget is a number of requests, or of tokens when a
service the key may call gives its models quota weights (what a request costs is
:mod:`rendezvous.access.cost`'s; without weights it is 1, and tokens are requests). The record
fields keep their first names (``requests`` of a quota, ``count`` of a usage record) whatever
the unit. Each replica counts what it admits for each key in the current window, publishes its
count every ``usage_interval_ms`` to the compacted topic ``rdv.usage`` (one record per key and
replica: the latest count of the window), and follows that topic, summing the other replicas'
counts of the same window. A request is admitted when its cost fits in what this replica's
count plus the others' leaves of the budget; a refused request is not counted.

The sum lags the other replicas by about one publishing interval, so a key spread over N
replicas can go over its budget by what N - 1 replicas admit in one interval, and no more.
Counts are cumulative per window, so a record read twice or out of date changes nothing, and
a replica that stopped leaves its last count behind until the window ends.

Pure: no Kafka, no clock (times are passed in). O(1) per request.
"""

from __future__ import annotations

from dataclasses import dataclass

from rendezvous.records import ApiKey, Usage


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the quota says of one request."""

    allowed: bool
    limit: int  # requests (or tokens) per window
    remaining: int  # left in the window after this request (a refused one: before it)
    reset_ms: int  # when the window ends (epoch ms)
    # What the request costs, said in an X-RateLimit-Cost header; None: no header (a service
    # without weights, where every request costs 1).
    cost: int | None = None

    def headers(self, now_ms: int) -> dict[str, str]:
        reset_s = max(1, -(-(self.reset_ms - now_ms) // 1000))
        out = {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(self.remaining),
            "x-ratelimit-reset": str(reset_s),
        }
        if self.cost is not None:
            out["x-ratelimit-cost"] = str(self.cost)
        if not self.allowed:
            out["retry-after"] = str(reset_s)
        return out


def window(period_ms: int, now_ms: int) -> tuple[int, int]:
    """The window of ``period_ms`` that holds ``now_ms``: (start, end)."""
    start = now_ms - now_ms % period_ms
    return start, start + period_ms


class QuotaBook:
    """One replica's counts, the other replicas' counts it read, and their sums per window."""

    def __init__(self, replica_id: str) -> None:
        self.replica_id = replica_id
        # key id -> [window start, window end, count] of this replica
        self.local: dict[str, list[int]] = {}
        self._reported: dict[str, tuple[int, int]] = {}  # key id -> (window start, count)
        # "<key id>/<replica>" -> (key id, window start, window end, count), other replicas
        self.remote: dict[str, tuple[str, int, int, int]] = {}
        self.sums: dict[tuple[str, int], int] = {}  # (key id, window start) -> their sum

    # -- per request
    def take(
        self, record: ApiKey, now_ms: int, cost: int = 1, *, say_cost: bool = False
    ) -> Verdict | None:
        """Count a request of ``record``'s key that costs ``cost`` if what is left of its
        quota covers it, else count nothing; None: the key has no quota. ``say_cost``: the
        verdict's headers say the cost."""
        q = record["quota"]
        if q is None:
            return None
        key_id, limit = record["key_id"], q["requests"]
        start, end = window(q["period_ms"], now_ms)
        mine = self.local.get(key_id)
        if mine is None or mine[0] != start:
            mine = self.local[key_id] = [start, end, 0]
        used = mine[2] + self.sums.get((key_id, start), 0)
        said = cost if say_cost else None
        if used + cost > limit:
            return Verdict(False, limit, max(0, limit - used), end, said)
        mine[2] += cost
        return Verdict(True, limit, limit - used - cost, end, said)

    def used(self, record: ApiKey, now_ms: int) -> tuple[int, int, int] | None:
        """(used, window start, window end) of a key with a quota, without counting."""
        q = record["quota"]
        if q is None:
            return None
        start, end = window(q["period_ms"], now_ms)
        mine = self.local.get(record["key_id"])
        own = mine[2] if mine is not None and mine[0] == start else 0
        return own + self.sums.get((record["key_id"], start), 0), start, end

    # -- from the usage topic
    def on_usage(self, key: str, usage: Usage | None) -> None:
        """The latest record of ``key`` (``<key id>/<replica>``) on the usage topic."""
        old = self.remote.pop(key, None)
        if old is not None:
            self._add(old[0], old[1], -old[3])
        if usage is None:
            return
        key_id, start = usage["key_id"], usage["window_start_ms"]
        if usage["replica_id"] == self.replica_id:
            # This replica's own count from before a restart under the same id.
            mine = self.local.get(key_id)
            if mine is None or mine[0] < start:
                self.local[key_id] = [start, usage["window_end_ms"], usage["count"]]
            elif mine[0] == start and mine[2] < usage["count"]:
                mine[2] = usage["count"]
            return
        self.remote[key] = (key_id, start, usage["window_end_ms"], usage["count"])
        self._add(key_id, start, usage["count"])

    def _add(self, key_id: str, start: int, count: int) -> None:
        total = self.sums.get((key_id, start), 0) + count
        if total:
            self.sums[(key_id, start)] = total
        else:
            self.sums.pop((key_id, start), None)

    # -- to the usage topic
    def report(self, now_ms: int) -> list[Usage]:
        """This replica's counts that changed since the last report, as usage records; counts
        of windows that have ended are forgotten once reported, and the others' with them."""
        out: list[Usage] = []
        for key_id, (start, end, count) in list(self.local.items()):
            if self._reported.get(key_id) != (start, count):
                out.append(
                    {
                        "key_id": key_id,
                        "replica_id": self.replica_id,
                        "window_start_ms": start,
                        "window_end_ms": end,
                        "count": count,
                        "at_ms": now_ms,
                    }
                )
                self._reported[key_id] = (start, count)
            elif end <= now_ms:
                del self.local[key_id]
                del self._reported[key_id]
        for key, (key_id, start, end, count) in list(self.remote.items()):
            if end <= now_ms:
                del self.remote[key]
                self._add(key_id, start, -count)
        return out

    def unreported(self, records: list[Usage]) -> None:
        """``records`` of :meth:`report` could not be sent: report them again next time."""
        for r in records:
            if self._reported.get(r["key_id"]) == (r["window_start_ms"], r["count"]):
                del self._reported[r["key_id"]]
