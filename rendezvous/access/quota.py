"""Request quotas per API key, counted by every proxy replica and summed across them.

A key's quota is a budget of requests per window: epoch time cut into windows of the quota's
period (an hour's window starts on the hour, UTC). Each replica counts the requests it admits
for each key in the current window, publishes its count every ``usage_interval_ms`` to the
compacted topic ``rdv.usage`` (one record per key and replica: the latest count of the window),
and follows that topic, summing the other replicas' counts of the same window. A request is
admitted while this replica's count plus the others' is under the budget.

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
    limit: int  # requests per window
    remaining: int  # left in the window after this request
    reset_ms: int  # when the window ends (epoch ms)

    def headers(self, now_ms: int) -> dict[str, str]:
        reset_s = max(1, -(-(self.reset_ms - now_ms) // 1000))
        out = {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(self.remaining),
            "x-ratelimit-reset": str(reset_s),
        }
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
    def take(self, record: ApiKey, now_ms: int) -> Verdict | None:
        """Count one request of ``record``'s key if its quota allows it; None: no quota."""
        q = record["quota"]
        if q is None:
            return None
        key_id, limit = record["key_id"], q["requests"]
        start, end = window(q["period_ms"], now_ms)
        mine = self.local.get(key_id)
        if mine is None or mine[0] != start:
            mine = self.local[key_id] = [start, end, 0]
        used = mine[2] + self.sums.get((key_id, start), 0)
        if used >= limit:
            return Verdict(False, limit, 0, end)
        mine[2] += 1
        return Verdict(True, limit, limit - used - 1, end)

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
