"""A proxy replica on a real uvicorn server in a thread, answered by the in-memory transport:
the whole HTTP surface over TCP, without Kafka."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from rendezvous import serde
from rendezvous.proxy import tls
from rendezvous.proxy.app import create_app
from rendezvous.proxy.settings import ProxySettings
from rendezvous.proxy.transport import InMemoryTransport, Record


def answer_every_request(t: InMemoryTransport, record: Record) -> None:
    """The pipeline, as far as HTTP can tell: every request is answered at once."""
    kind, _, items = serde.decode_items(record.value)
    if kind is serde.Kind.REQUEST:
        for request in items:
            t.inject_result(t.result_for(request, output=1))


@contextlib.contextmanager
def served(
    settings: ProxySettings,
    config,
    *,
    sockets: list[socket.socket] | None = None,
    **uvicorn_options: Any,
) -> Iterator[ProxySettings]:
    """Serve one replica of ``config`` on ``settings.host:settings.port`` until the block ends,
    over HTTPS when the settings have a certificate (reach it at ``tls.url(settings)`` with
    ``verify=tls.verify(settings)``); on ``sockets`` already bound, as ``serve`` does."""
    app = create_app(settings, config, InMemoryTransport(on_produce=answer_every_request))
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "warning",
        **tls.uvicorn_options(settings),
        **uvicorn_options,
    }
    server = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": sockets}, name="proxy-under-test", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped before it started; see the log above"
        assert time.monotonic() < deadline, "uvicorn did not start within 20 s"
        time.sleep(0.02)
    try:
        yield settings
    finally:
        server.should_exit = True
        thread.join(10)
        assert not thread.is_alive(), "uvicorn did not stop within 10 s"
