"""The proxy's JSON responses, and the one place an exception becomes an HTTP error response.

Every error body reads ``{"error": {"code", "message", "request_id"}}``, with ``field`` too when
the error is about one field of the body (a 422 names it): the status, the code
and any extra header come from the exception itself (see :mod:`rendezvous.proxy.errors`).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from rendezvous.errors import RendezvousError
from rendezvous.proxy.errors import NoAnswer, code_for, headers_for, status_for

log = logging.getLogger(__name__)

JSON = "application/json"
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")


def json_response(body: bytes, status: int, rid: str | None = None) -> Response:
    """A response of an already encoded JSON body, with ``X-Request-ID`` when ``rid`` is one."""
    # A request ID goes back as a header only when it is one: a rejected ID may hold any
    # character, and a header can hold neither non-Latin-1 characters nor control bytes.
    headers = {"x-request-id": rid} if rid and REQUEST_ID_RE.fullmatch(rid) else None
    return Response(body, status, headers=headers, media_type=JSON)


def answer_body(result: dict[str, Any], latency_ms: int) -> bytes:
    """The JSON body answering a request with its result; an error result raises NoAnswer."""
    rid = result["request_id"]
    if result["status"] != "ok":
        detail = result.get("error")
        raise NoAnswer(
            f"no model answered request {rid} of service {result['service']!r}: "
            f"{result['reason']}" + (f": {detail}" if detail else ""),
            request_id=rid,
        )
    output = result["output"]
    # The output is already JSON (written by serde.to_json): embedded as it is, not re-parsed.
    return orjson.dumps(
        {
            "request_id": rid,
            "service": result["service"],
            "model": result["model"],
            "model_version": result["version"],
            "role": result["role"],
            "output": None if output is None else orjson.Fragment(output),
            "reason": result["reason"],
            "latency_ms": latency_ms,
            "arm": result.get("arm"),
        }
    )


def error_response(exc: Exception, rid: str | None) -> Response:
    """The error response for ``exc`` raised while handling request ``rid`` (if known)."""
    if isinstance(exc, RendezvousError):
        message = exc.message
        rid = exc.request_id or rid
    else:
        log.exception("unexpected error in the proxy (request %s)", rid, exc_info=exc)
        message = f"internal error: {type(exc).__name__}: {exc}"
    if rid is not None and REQUEST_ID_RE.fullmatch(rid) is None:
        rid = None  # not an ID: the message quotes what was sent
    detail = {"code": code_for(exc), "message": message, "request_id": rid}
    field = getattr(exc, "field", None)
    if field is not None:
        detail["field"] = field
    body = orjson.dumps({"error": detail})
    response = json_response(body, status_for(exc), rid)
    extra = headers_for(exc)
    if extra:
        response.headers.update(extra)
    return response


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no such route, wrong method) in the same body shape."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    if status == 404:
        message = f"no endpoint {request.method} {request.url.path}; see GET /docs for the API"
    elif status == 405:
        message = f"{request.method} is not allowed on {request.url.path}; see GET /docs"
    else:
        message = str(getattr(exc, "detail", exc))
    body = orjson.dumps({"error": {"code": code, "message": message, "request_id": None}})
    headers = getattr(exc, "headers", None)
    return Response(body, status, headers=headers, media_type=JSON)
