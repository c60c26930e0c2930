"""Unit tests never reach an MLflow server: the registry that promotions move aliases in is
an in-memory one (the ``registry`` fixture), whatever runs on this machine's default port."""

from __future__ import annotations

import itertools

import pytest

from rendezvous.models import promotion


class MemoryRegistry:
    """The calls of :class:`rendezvous.models.promotion.Registry`, over dicts."""

    def __init__(self) -> None:
        self.aliases: dict[tuple[str, str], str] = {}  # (registered model, alias) -> version
        self.runs: list[dict] = []  # {"name", "params", "metrics"}, oldest first
        self._ids = (f"run{i}" for i in itertools.count(1))

    def __call__(self, tracking_uri: str) -> MemoryRegistry:
        return self

    def alias_version(self, name: str, alias: str) -> str | None:
        return self.aliases.get((name, alias))

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.aliases[(name, alias)] = version

    def last_previous(self, service: str, model: str) -> str | None:
        for run in reversed(self.runs):
            p = run["params"]
            if p["service"] == service and p["from_model"] == model:
                return p.get("previous_version") or None
        return None

    def log_run(self, name, params, metrics, at_ms) -> str:
        self.runs.append({"name": name, "params": dict(params), "metrics": dict(metrics)})
        return next(self._ids)


@pytest.fixture(autouse=True)
def registry(monkeypatch) -> MemoryRegistry:
    memory = MemoryRegistry()
    monkeypatch.setattr(promotion, "Registry", memory)
    return memory
