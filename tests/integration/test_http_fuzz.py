"""Hostile HTTP input against a real proxy server (uvicorn with its C parser, over TCP).

A schema-driven fuzzer (schemathesis) generates requests from the proxy's own ``/openapi.json``,
valid and invalid, and checks every response: never a 5xx, a status and a content type the
document declares, a body matching its schema. A few hand-written requests cover what a
schema cannot describe (bytes no client library would send). Kafka is replaced by the
in-memory transport, which answers every request at once: what is under test is the HTTP
surface, not the pipeline.
"""

from __future__ import annotations

import socket

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from rendezvous import config
from rendezvous.proxy.settings import ProxySettings
from tests.conftest import free_port
from tests.served_proxy import served

CONFIG = config.parse(
    {
        "services": {
            "credit": {
                # the in-memory pipeline answers at once: a generous SLA keeps a busy machine's
                # pauses from turning an answer into a 504
                "sla_ms": 2000,
                "models": [
                    {"name": "gbm", "role": "champion", "callable": "udfs.rules:approve"},
                    {"name": "rules", "role": "backstop", "callable": "udfs.rules:approve"},
                ],
                "input": {
                    "amount": "double",
                    "age": {"type": "long", "required": False, "default": 40},
                    "region": {"type": "string", "required": False},
                },
            }
        }
    }
)


@pytest.fixture(scope="module")
def proxy_url():
    # A fuzzed X-Deadline-Ms may be 1 ms: the result grace gives the in-memory pipeline's
    # instant answer the same room on a busy machine as the generous SLA does.
    settings = ProxySettings(
        replica_id="fuzz", port=free_port(), tick_interval_ms=0, result_grace_ms=2000
    )
    with served(settings, CONFIG, host=settings.host, port=settings.port, http="httptools"):
        yield f"http://{settings.host}:{settings.port}"


@pytest.fixture(scope="module")
def api_schema(proxy_url):
    return schemathesis.openapi.from_url(f"{proxy_url}/openapi.json")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_response_is_documented_and_none_is_a_server_error(api_schema, mode) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 6, [op.label for op in operations]
    fuzzed = []
    for operation in operations:

        @settings(
            max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def fuzz(case) -> None:
            if mode is GenerationMode.POSITIVE and case.operation.path.endswith("/feedback"):
                # A label's type is the type of the request's own answer, which no schema can
                # state: a schema-valid label of another type is refused, and only for that.
                response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
                if response.status_code == 422:
                    assert response.json()["error"]["code"] == "label_type", response.text
                else:
                    assert response.status_code < 400 or response.status_code in (404, 409)
                return
            case.call_and_validate()

        try:
            fuzz()
        except Unsatisfiable:
            # nothing to make invalid: an operation without parameters or body
            assert mode is GenerationMode.NEGATIVE, operation.label
            continue
        fuzzed.append(operation.label)
    # the score, submit, status and feedback operations take input, so each had cases in
    # either mode
    assert len([label for label in fuzzed if "/v1/" in label]) == 4, fuzzed


def _raw(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(request)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b'"error"' in b"".join(chunks):
                break
    return b"".join(chunks)


@pytest.mark.parametrize(
    "request_line, headers, body",
    [
        (b"GET /v1/requests/%00 HTTP/1.1", b"", b""),
        (b"GET /v1/requests/%C3%A9t%C3%A9 HTTP/1.1", b"", b""),
        (b"GET /v1/requests/%FF%FE%FD HTTP/1.1", b"", b""),
        (b"GET /v1/requests/a%0D%0Ab HTTP/1.1", b"", b""),
        (
            b"POST /v1/services/credit/score HTTP/1.1",
            b"X-Request-ID: caf\xc3\xa9\r\n",
            b'{"amount": 1}',
        ),
        (
            b"POST /v1/services/credit/score HTTP/1.1",
            b"X-Request-ID: \xff\xfe\r\n",
            b'{"amount": 1}',
        ),
        (b"POST /v1/services/credit/score HTTP/1.1", b"", b'{"amount": "\x00"}'),
        (b"POST /v1/services/credit/score HTTP/1.1", b"", b"\xff\xfe{not json"),
        (b"POST /v1/services/%00/score HTTP/1.1", b"", b'{"amount": 1}'),
        (b"POST /v1/services/cr%C3%A9dit/score HTTP/1.1", b"", b'{"amount": 1}'),
    ],
)
def test_bytes_no_client_would_send_get_a_4xx_json_answer(
    proxy_url, request_line: bytes, headers: bytes, body: bytes
) -> None:
    content = b"Content-Type: application/json\r\n" if body else b""
    request = (
        request_line
        + b"\r\nHost: proxy\r\nConnection: close\r\n"
        + content
        + headers
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    response = _raw(proxy_url, request)
    assert response, "the connection was dropped without an answer"
    status_line, _, rest = response.partition(b"\r\n")
    status = int(status_line.split()[1])
    assert 400 <= status < 500, response[:400]
    head, _, payload = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), response[:400]
    assert b'"error"' in payload and b'"code"' in payload, response[:400]
