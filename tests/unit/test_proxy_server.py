"""The proxy under a real uvicorn server over TCP, with the options ``serve`` runs it with.

No Kafka: the in-memory transport answers every request at once. What is under test is what
only a real server and socket show: a body shorter than its Content-Length is answered 408 by
the body timeout and the connection is then closed.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import orjson
import pytest
import uvicorn

from rendezvous import config
from rendezvous.proxy.server import KEEP_ALIVE_S, server_options
from rendezvous.proxy.settings import ProxySettings
from tests.conftest import free_port
from tests.served_proxy import served

pytestmark = pytest.mark.unit

CONFIG = config.parse(
    {
        "services": {
            "credit": {
                "sla_ms": 2000,
                "models": [{"name": "m", "role": "champion", "callable": "udfs.rules:approve"}],
                "input": {"amount": "double"},
            }
        }
    }
)
BODY_TIMEOUT_MS = 300
# A busy machine (two cores, a benchmark beside the tests) may answer late: the bound is loose,
# the point is seconds, not the 90 s or more a short body held a connection for before.
MARGIN_S = 3.0


@pytest.fixture(scope="module")
def address() -> Iterator[tuple[str, int]]:
    """A proxy replica served by uvicorn in a thread, on a free port; stopped afterwards."""
    settings = ProxySettings(
        replica_id="tcp", port=free_port(), tick_interval_ms=0, body_timeout_ms=BODY_TIMEOUT_MS
    )
    uvicorn_options = {**server_options(settings)}
    uvicorn_options.pop("log_level", None)
    with served(settings, CONFIG, **uvicorn_options):
        yield settings.host, settings.port


def _read_until_closed(conn: socket.socket, timeout_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed it."""
    conn.settimeout(timeout_s)
    chunks = []
    try:
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        raise AssertionError(
            f"the connection was still open {timeout_s:.1f} s later; got {b''.join(chunks)!r}"
        ) from None
    return b"".join(chunks), time.monotonic()


def _parse(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


def _post(body: bytes, length: int, rid: str) -> bytes:
    return (
        b"POST /v1/services/credit/score HTTP/1.1\r\nHost: proxy\r\n"
        b"Content-Type: application/json\r\nX-Request-ID: " + rid.encode() + b"\r\n"
        b"Content-Length: " + str(length).encode() + b"\r\n\r\n" + body
    )


def test_a_body_shorter_than_its_content_length_is_408_json_then_closed(
    address: tuple[str, int],
) -> None:
    body = b'{"amount": 1}'
    with socket.create_connection(address, timeout=5) as conn:
        started = time.monotonic()
        conn.sendall(_post(body, len(body) + 20, "short-1"))
        response, closed = _read_until_closed(conn, BODY_TIMEOUT_MS / 1000 + MARGIN_S)
    assert closed - started >= BODY_TIMEOUT_MS / 1000 * 0.9  # it waited for the body
    assert closed - started < BODY_TIMEOUT_MS / 1000 + MARGIN_S
    status, headers, payload = _parse(response)
    assert status == 408, response
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert headers["x-request-id"] == "short-1"
    assert int(headers["content-length"]) == len(payload)
    error = orjson.loads(payload)["error"]
    assert error["code"] == "request_timeout"
    assert error["request_id"] == "short-1"
    assert f"{BODY_TIMEOUT_MS} ms" in error["message"]
    assert f"got {len(body)} of the {len(body) + 20} bytes" in error["message"]


def test_the_server_keeps_answering_after_a_408(address: tuple[str, int]) -> None:
    with socket.create_connection(address, timeout=5) as conn:
        conn.sendall(_post(b"{", 10, "short-2"))
        assert _parse(_read_until_closed(conn, BODY_TIMEOUT_MS / 1000 + MARGIN_S)[0])[0] == 408
    body = b'{"amount": 1}'
    with socket.create_connection(address, timeout=5) as conn:
        conn.sendall(_post(body, len(body), "whole-1"))
        conn.settimeout(5)
        response = b""
        while b'"output"' not in response:
            chunk = conn.recv(65536)
            assert chunk, f"closed before the answer: {response!r}"
            response += chunk
    status, headers, payload = _parse(response)
    assert status == 200, response
    assert "connection" not in headers  # a whole request keeps its connection
    assert orjson.loads(payload)["output"] == 1


def test_the_server_options_keep_the_access_log_off_and_idle_connections_short() -> None:
    options = server_options(ProxySettings(port=8123, host="0.0.0.0"))
    assert (options["host"], options["port"]) == ("0.0.0.0", 8123)
    assert options["access_log"] is False and options["server_header"] is False
    assert options["timeout_keep_alive"] == KEEP_ALIVE_S
    uvicorn.Config(object(), **options)  # every option is one uvicorn knows


def test_replicas_share_a_port_but_not_with_a_process_that_does_not() -> None:
    from rendezvous.errors import PortInUse
    from rendezvous.proxy.server import listening_socket

    first = listening_socket("127.0.0.1", 0)
    port = first.getsockname()[1]
    second = listening_socket("127.0.0.1", port)  # a replica taking over the same port
    for sock in (first, second):
        sock.listen()
    first.close()
    second.close()
    with socket.socket() as other:  # a process that holds the port for itself
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(PortInUse, match=r"RDV_PROXY_PORT"):
            listening_socket("127.0.0.1", other.getsockname()[1])
