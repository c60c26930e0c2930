"""Models named by their behaviour, for tests and experiments: ``callable: "udfs.zoo:<name>"``.

Each is a plain function ``f(features, **params)``; ``params`` come from the configuration::

    - {name: sleepy, role: challenger, callable: "udfs.zoo:slow", params: {delay_ms: 80}}

| name       | behaviour                                                              |
|------------|------------------------------------------------------------------------|
| `echo`     | returns the features it was given                                     |
| `constant` | returns `value` (default 0.5)                                          |
| `slow`     | sleeps `delay_ms` (default 200), then returns `value`                  |
| `busy`     | computes in pure Python for `cpu_ms` (default 20), holding the interpreter lock, then returns `value` |
| `failing`  | always raises :class:`ModelFailure` with `message`                     |
| `flaky`    | raises on a deterministic one-in-`every` share of inputs, else `value` |
| `not_json` | returns a set, which is not JSON: tests of output validation           |
| `scripted` | does what the request says: sleeps its `delay_ms` feature, raises when its `fail` feature is non-zero, else returns `value` |
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping
from typing import Any


class ModelFailure(RuntimeError):
    """What the failing zoo models raise."""


def echo(features: Mapping[str, Any]) -> dict[str, Any]:
    return dict(features)


def constant(features: Mapping[str, Any], value: Any = 0.5) -> Any:
    return value


def slow(features: Mapping[str, Any], delay_ms: float = 200.0, value: Any = 0.5) -> Any:
    time.sleep(delay_ms / 1000.0)
    return value


def busy(features: Mapping[str, Any], cpu_ms: float = 20.0, value: Any = 0.5) -> Any:
    end = time.perf_counter() + cpu_ms / 1000.0
    n = 0
    while time.perf_counter() < end:  # pure Python: never releases the interpreter lock for long
        n += 1
    return value


def failing(features: Mapping[str, Any], message: str = "this model always fails") -> Any:
    raise ModelFailure(message)


def flaky(features: Mapping[str, Any], every: int = 3, value: Any = 0.5) -> Any:
    """Fails on a deterministic one-in-``every`` share of inputs (by a CRC of the features).

    The same features always give the same outcome, in every process (no ``hash()``
    randomisation), so a replay reproduces the failures.
    """
    if every < 1:
        raise ValueError(f"flaky: every must be >= 1, got {every}")
    if failure_key(features) % every == 0:
        raise ModelFailure(f"flaky model failed on this input (one in {every})")
    return value


def failure_key(features: Mapping[str, Any]) -> int:
    """The stable number ``flaky`` fails on (when it is divisible by ``every``)."""
    return zlib.crc32(repr(sorted(features.items())).encode())


def not_json(features: Mapping[str, Any]) -> Any:
    return {"not", "json"}


def scripted(features: Mapping[str, Any], value: Any = 0.5) -> Any:
    """Lets each request choose this model's behaviour: end-to-end tests of late and failing
    models without a job per behaviour."""
    delay_ms = float(features.get("delay_ms") or 0)
    if delay_ms > 0:
        time.sleep(delay_ms / 1000.0)
    if features.get("fail"):
        raise ModelFailure("the request asked this model to fail")
    return value
