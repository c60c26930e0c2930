"""Models named by their behaviour, for tests and experiments: `callable: "udfs.zoo:<name>"`."""

from __future__ import annotations

import time
import zlib
from typing import Any


def echo(features: dict[str, Any]) -> dict[str, Any]:
    return features


def constant(features: dict[str, Any], value: Any = 0.5) -> Any:
    return value


def slow(features: dict[str, Any], delay_ms: float = 200.0, value: Any = 0.5) -> Any:
    time.sleep(delay_ms / 1000.0)
    return value


class ModelFailure(RuntimeError):
    pass


def failing(features: dict[str, Any], message: str = "this model always fails") -> Any:
    raise ModelFailure(message)


def flaky(features: dict[str, Any], every: int = 3, value: Any = 0.5) -> Any:
    """Fails on a deterministic one-in-``every`` share of inputs (by a hash of the features)."""
    if zlib.crc32(repr(sorted(features.items())).encode()) % every == 0:
        raise ModelFailure(f"flaky model failed on this input (one in {every})")
    return value
