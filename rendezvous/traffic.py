"""Traffic control: sticky A/B arms and sampled shadows. Pure: no Flink, no clock.

Both decisions come from a stable hash of recorded data, so the enrich job that makes them, a
replay of the archive and a unit test all agree:

- **Arms.** A service's split names a request field (the key) and arms by model, with
  weights. The key's value hashes to a point in [0, 1); the arms, in the order written, cut
  that interval in proportion to their weights, and the arm whose piece holds the point answers
  first. The same key always lands on the same arm while the weights stay; when they change,
  only keys near the moved boundaries change arm. A request without the key gets no arm (the
  policy's own preference applies, and the arm is recorded as null).
- **Samples.** A model with ``sample: r`` scores a request when the hash of its sample key (the
  request ID, or a named field) falls below ``r``. The hash is salted with the model's name, so
  two sampled shadows see independent shares. A request a model does not sample is recorded as
  *not sampled*; the join does not wait for that model and it never counts as late.

The hash is BLAKE2b (``hashlib``, 8 bytes), never Python's ``hash()``, which is salted per
process.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rendezvous.errors import RendezvousError

_SCALE = float(1 << 64)
REQUEST_ID = "request_id"  # the default sample key


def key_text(value: Any) -> str | None:
    """The text a key value hashes as: a string itself, a whole number in decimal (so ``7`` and
    ``7.0`` agree), anything else as JSON; None for a missing key."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    import orjson

    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def unit_hash(salt: str, text: str) -> float:
    """A point in [0, 1) that depends only on ``salt`` and ``text``."""
    digest = hashlib.blake2b(f"{salt}\x00{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


class TrafficError(RendezvousError):
    code = "traffic"


@dataclass(frozen=True)
class Split:
    """A service's A/B split: the request field whose value picks the arm, and the arms (model
    name, weight) in order."""

    key: str
    arms: tuple[tuple[str, float], ...]

    SALT = "rdv-split"

    @classmethod
    def of(cls, key: str, arms: Mapping[str, float] | Sequence[tuple[str, float]]) -> Split:
        pairs = tuple(arms.items()) if isinstance(arms, Mapping) else tuple(arms)
        return cls(key, tuple((str(m), float(w)) for m, w in pairs))

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(m for m, _ in self.arms)

    @property
    def shares(self) -> dict[str, float]:
        total = sum(w for _, w in self.arms)
        return {m: w / total for m, w in self.arms}

    def arm_of(self, value: Any) -> str | None:
        """The arm of a key value (None when it is missing)."""
        text = key_text(value)
        if text is None:
            return None
        point = unit_hash(self.SALT, text) * sum(w for _, w in self.arms)
        edge = 0.0
        for model, weight in self.arms:
            edge += weight
            if point < edge:
                return model
        return self.arms[-1][0]  # rounding at the very top

    def arm_for(self, payload: Mapping[str, Any]) -> str | None:
        return self.arm_of(payload.get(self.key))

    def to_record(self) -> dict[str, Any]:
        return {"key": self.key, "arms": [{"model": m, "weight": w} for m, w in self.arms]}

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> Split | None:
        if record is None:
            return None
        return cls(record["key"], tuple((a["model"], float(a["weight"])) for a in record["arms"]))

    def describe(self) -> str:
        return f"by {self.key}: " + ", ".join(f"{m}={_weight(w)}" for m, w in self.arms)


def _weight(w: float) -> str:
    return str(int(w)) if float(w).is_integer() else repr(w)


@dataclass(frozen=True)
class Sample:
    """A model that scores only a share of requests."""

    model: str
    rate: float  # in (0, 1]
    key: str = REQUEST_ID

    def takes(self, request_id: str, payload: Mapping[str, Any]) -> bool:
        """Whether the model scores this request. A request without the sample field is not
        sampled."""
        if self.rate >= 1.0:
            return True
        value = request_id if self.key == REQUEST_ID else payload.get(self.key)
        text = key_text(value)
        if text is None:
            return False
        return unit_hash(f"rdv-s:{self.model}", text) < self.rate


def unsampled(samples: Sequence[Sample], request_id: str, payload: Mapping[str, Any]) -> list[str]:
    """The sampled models that do not score this request, in the order given."""
    return [s.model for s in samples if not s.takes(request_id, payload)]


def preference_for(
    preference: Sequence[str], arm: str | None, skipped: Sequence[str] = ()
) -> list[str]:
    """A request's preference order: its arm's model first, then the policy's order; the models
    that did not sample the request left out (nothing waits for them)."""
    head = [arm] if arm is not None else []
    return [m for m in (*head, *(p for p in preference if p != arm)) if m not in skipped]


def parse_arms(text: str) -> list[tuple[str, float]]:
    """``gbm=90,lr=10`` as [(model, weight)], for ``rendezvous split``; TrafficError names the
    bad part."""
    arms: list[tuple[str, float]] = []
    for part in (p.strip() for p in text.split(",")):
        model, sep, weight = part.partition("=")
        model = model.strip()
        if not sep or not model:
            raise TrafficError(f"arm {part!r}: expected MODEL=WEIGHT, e.g. gbm=90,lr=10")
        try:
            value = float(weight)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise TrafficError(
                f"arm {model}: the weight must be a positive number, got {weight.strip()!r}"
            )
        if model in (m for m, _ in arms):
            raise TrafficError(f"arm {model} is named twice")
        arms.append((model, value))
    return arms
