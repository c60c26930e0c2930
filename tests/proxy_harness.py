"""The harness of the proxy's unit tests: one replica over the in-memory transport, driven
through an ASGI client, with a clock the test moves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from rendezvous import config, serde
from rendezvous.access.log import MemoryUsageLog
from rendezvous.proxy import InMemoryTransport, ProxySettings, create_app
from rendezvous.proxy.transport import Record

CONFIG = config.parse(
    {
        "services": {
            "credit": {
                "sla_ms": 100,
                "models": [
                    {"name": "gbm", "role": "champion", "callable": "udfs.rules:approve"},
                    {"name": "rules", "role": "backstop", "callable": "udfs.rules:approve"},
                ],
                "input": {
                    "amount": "double",
                    "age": {"type": "long", "required": False, "default": 40},
                    "region": {"type": "string", "required": False},
                },
            },
            "fast": {
                "sla_ms": 20,
                "models": [{"name": "m", "role": "champion", "callable": "udfs.rules:approve"}],
                "input": {"x": "double"},
            },
        }
    }
)
T0 = 1_700_000_000_000


class FakeClock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def proxy(
    transport: InMemoryTransport | None = None,
    clock: Callable[[], int] | None = None,
    keys: Any = None,
    usage: Any = None,
    policies: Any = None,
    services: config.Config | None = None,
    **overrides: Any,
) -> AsyncIterator[tuple[httpx.AsyncClient, InMemoryTransport, Any]]:
    """One replica of ``services`` (default: :data:`CONFIG`) with these settings."""
    settings = ProxySettings(**{"replica_id": "r1", "tick_interval_ms": 0, **overrides})
    transport = InMemoryTransport() if transport is None else transport
    if keys is not None and usage is None:
        usage = MemoryUsageLog()
    app = create_app(
        settings, services or CONFIG, transport, clock, keys, usage, policy_log=policies
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://proxy"
        ) as client,
    ):
        yield client, transport, app.state.proxy


def answering(
    clock: FakeClock | None = None, elapsed_ms: int = 0, **result: Any
) -> Callable[[InMemoryTransport, Record], None]:
    """An on_produce hook that answers every REQUEST at once (after ``elapsed_ms``)."""

    def hook(t: InMemoryTransport, record: Record) -> None:
        kind, _, items = serde.decode_items(record.value)
        if kind is serde.Kind.REQUEST:
            if clock is not None:
                clock.now += elapsed_ms
            for rec in items:
                t.inject_result(t.result_for(rec, **result))

    return hook


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    # ``field`` only for an error about one field of the body
    assert set(body["error"]) - {"field"} == {"code", "message", "request_id"}
    return body["error"]
