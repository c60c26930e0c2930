"""Reading a proxy request: its request id, its deadline and its JSON body, or the error that
says why not."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request

from rendezvous.proxy.errors import (
    BadDeadline,
    BadJson,
    BadRequestId,
    BodyTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from rendezvous.proxy.responses import REQUEST_ID_RE


def request_id(request: Request) -> str:
    """The request's ``X-Request-ID``, checked, or a new random one."""
    given = request.headers.get("x-request-id")
    if given is None:
        return uuid.uuid4().hex
    if REQUEST_ID_RE.fullmatch(given) is None:
        raise BadRequestId(
            f"X-Request-ID {given[:64]!r} is not 1-128 characters of letters, digits, "
            f"'.', '_' or '-'; send such an id or leave the header out to get one assigned"
        )
    return given


DEADLINE_HEADER = "x-deadline-ms"
# Response headers: the deadline applied, and whether the one asked for was cut to the SLA.
DEADLINE_APPLIED_HEADER = "x-deadline-ms"
DEADLINE_CAPPED_HEADER = "x-deadline-capped"
# The largest value read (about 30 years); anything above the SLA is capped at it anyway.
MAX_DEADLINE_MS = 10**12 - 1


@dataclass(frozen=True, slots=True)
class Deadline:
    """The time a request has, from when the proxy accepts it: at most the service's SLA."""

    ms: int
    requested: int | None = None  # what X-Deadline-Ms asked for; None when it was not sent

    @property
    def capped(self) -> bool:
        return self.requested is not None and self.requested > self.ms

    def headers(self) -> dict[str, str] | None:
        """The response headers that tell the client which deadline was applied."""
        if self.requested is None:
            return None
        out = {DEADLINE_APPLIED_HEADER: str(self.ms)}
        if self.capped:
            out[DEADLINE_CAPPED_HEADER] = "true"
        return out


def deadline(value: str | None, sla_ms: int) -> Deadline:
    """The deadline of a request whose ``X-Deadline-Ms`` header is ``value`` (None: not sent).

    A tighter deadline than the SLA is taken; a looser one is capped at the SLA (and the
    answer says so); anything but a whole number of milliseconds >= 1 is :class:`BadDeadline`.
    """
    if value is None:
        return Deadline(sla_ms)
    text = value.strip()
    asked = int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else 0
    if not 1 <= asked <= MAX_DEADLINE_MS:
        raise BadDeadline(
            f"X-Deadline-Ms {value[:32]!r} is not a whole number of milliseconds from 1 to "
            f"{sla_ms} (the service's SLA; a larger value, up to {MAX_DEADLINE_MS}, is capped "
            f"at it); send such a number or leave the header out to get the SLA"
        )
    return Deadline(min(asked, sla_ms), asked)


async def read_body(request: Request, limit: int, timeout_ms: int) -> bytes:
    """The request's raw body: sent as JSON, at most ``limit`` bytes, and all of it within
    ``timeout_ms`` of this call (else :class:`RequestTimeout`)."""
    kind = request.headers.get("content-type")
    if kind is not None:
        media = kind.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise UnsupportedMediaType(
                f"Content-Type {kind[:80]!r} is not JSON; send the body as JSON with "
                f"the header 'Content-Type: application/json'"
            )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise BodyTooLarge(
            f"request body is {int(length)} bytes, more than the limit of {limit}; send a "
            f"smaller body or raise RDV_PROXY_MAX_BODY_BYTES"
        )
    chunks = []
    size = 0
    try:
        # One timer per request, for the whole body: a body already read by the server costs
        # no wait, only arming and cancelling the timer.
        async with asyncio.timeout(timeout_ms / 1000):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(
                        f"request body is more than the limit of {limit} bytes; send a smaller "
                        f"body or raise RDV_PROXY_MAX_BODY_BYTES"
                    )
                chunks.append(chunk)
    except TimeoutError:
        got = (
            f"{size} of the {length} bytes its Content-Length announced"
            if length is not None
            else f"{size} bytes and no end"
        )
        raise RequestTimeout(
            f"request body did not arrive within {timeout_ms} ms (got {got}); send the whole "
            f"body without pausing, with a Content-Length that matches it, or raise "
            f"RDV_PROXY_BODY_TIMEOUT_MS"
        ) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    """``raw`` as JSON, or :class:`BadJson` with the line and column of the first mistake."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadJson(
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column "
            f"{exc.colno}; send a JSON object of the service's input fields"
        ) from None


def path_request_id(rid: str) -> str:
    """A request id from a status URL, checked."""
    if REQUEST_ID_RE.fullmatch(rid) is None:
        raise BadRequestId(
            f"{rid[:64]!r} is not a request id (1-128 characters of letters, digits, "
            f"'.', '_' or '-'); use the request_id a POST returned"
        )
    return rid
