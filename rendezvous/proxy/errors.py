"""The proxy's exceptions: each class carries its HTTP ``status`` and a stable ``code``.

The exception classes are the one table of HTTP statuses: :func:`status_for`, :func:`code_for`
and :func:`headers_for` read them, and ``rendezvous.proxy.responses.error_response`` turns any
exception into the one error body, ``{"error": {"code", "message", "request_id"}}`` (plus
``field`` when the error is about one field of the body). Anything
that is not a :class:`~rendezvous.errors.RendezvousError` is a 500 ``internal``.
"""

from __future__ import annotations

from rendezvous.errors import RendezvousError


class ProxyError(RendezvousError):
    """Root of the errors the proxy turns into HTTP responses."""

    status = 500
    code = "internal"

    def headers(self) -> dict[str, str] | None:
        """Response headers this error adds (besides the request id), or None."""
        return None


class BadJson(ProxyError):
    """The body is not valid JSON (the message gives line and column)."""

    status = 400
    code = "bad_json"


class BadRequestId(ProxyError):
    """``X-Request-ID`` (or a request id in a URL) is not 1-128 of ``[A-Za-z0-9._-]``."""

    status = 400
    code = "bad_request_id"


class BadDeadline(ProxyError):
    """``X-Deadline-Ms`` is not a whole number of milliseconds of at least 1."""

    status = 400
    code = "bad_deadline"


BEARER_REALM = 'Bearer realm="rendezvous"'


class Unauthorized(ProxyError):
    """No API key, or one that is not known or was revoked (access control is on).

    ``error`` is the RFC 6750 error code of the ``WWW-Authenticate`` header: none when no key
    was sent, ``invalid_token`` when the key sent is not valid."""

    status = 401
    code = "unauthorized"

    def __init__(
        self, message: str, *, error: str | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.error = error

    def headers(self) -> dict[str, str] | None:
        if self.error is None:
            return {"www-authenticate": BEARER_REALM}
        return {"www-authenticate": f'{BEARER_REALM}, error="{self.error}"'}


class Forbidden(ProxyError):
    """A valid API key, for other services than the one asked for."""

    status = 403
    code = "forbidden"

    def headers(self) -> dict[str, str] | None:
        return {"www-authenticate": f'{BEARER_REALM}, error="insufficient_scope"'}


class UnknownService(ProxyError):
    status = 404
    code = "unknown_service"


class UnknownEndpoint(ProxyError):
    """An endpoint this replica does not serve as configured."""

    status = 404
    code = "not_found"


class UnknownRequest(ProxyError):
    status = 404
    code = "unknown_request"


class RequestTimeout(ProxyError):
    """The body did not arrive in time (shorter than its Content-Length, or too slow).

    The connection is closed after the answer: the rest of the body may still be on its way,
    so the next bytes on it could not be read as a new request."""

    status = 408
    code = "request_timeout"

    def headers(self) -> dict[str, str] | None:
        return {"connection": "close"}


class DuplicateRequest(ProxyError):
    """A request with this id is already waiting on this replica."""

    status = 409
    code = "duplicate_request_id"


class RequestIdConflict(ProxyError):
    """The request id was already used on this replica for a different body."""

    status = 409
    code = "request_id_conflict"


class QuotaExceeded(ProxyError):
    """The API key has used its quota of requests for the current window."""

    status = 429
    code = "quota_exceeded"

    def __init__(
        self, message: str, *, limit_headers: dict[str, str], request_id: str | None = None
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.limit_headers = limit_headers

    def headers(self) -> dict[str, str] | None:
        return self.limit_headers


class AlreadyLabelled(ProxyError):
    """The request already has a true label: the first one counts and is never replaced."""

    status = 409
    code = "already_labelled"


class BodyTooLarge(ProxyError):
    status = 413
    code = "body_too_large"


class UnsupportedMediaType(ProxyError):
    """The body was sent with a Content-Type that is not JSON."""

    status = 415
    code = "unsupported_media_type"


class SchemaViolation(ProxyError):
    """The body does not match the service's input fields."""

    status = 422
    code = "schema"

    def __init__(
        self, message: str, *, field: str | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.field = field


class LabelTypeMismatch(SchemaViolation):
    """A feedback label whose JSON type is not the one the service answers with."""

    code = "label_type"


class NoAnswer(ProxyError):
    """The rendezvous job answered with an error result: no model produced a usable score."""

    status = 502
    code = "no_answer"


class KafkaUnavailable(ProxyError):
    """Kafka is not reachable, or producing the request failed."""

    status = 503
    code = "kafka_unavailable"


class KeysUnavailable(ProxyError):
    """Access control is on and this replica has not read the API keys yet."""

    status = 503
    code = "keys_unavailable"
    retry_after_s = 1

    def headers(self) -> dict[str, str] | None:
        return {"retry-after": str(self.retry_after_s)}


class ArchiveUnavailable(ProxyError):
    """The archive, where the proxy looks up past requests and their labels, cannot be read."""

    status = 503
    code = "archive_unavailable"


class Overloaded(ProxyError):
    """The replica is at its admission limit: the request was not sent into the pipeline."""

    status = 503
    code = "overloaded"
    retry_after_s = 1

    def headers(self) -> dict[str, str] | None:
        return {"retry-after": str(self.retry_after_s)}


class AnswerTimeout(ProxyError):
    """No result arrived by the request's deadline plus the result grace."""

    status = 504
    code = "deadline_exceeded"


def status_for(exc: BaseException) -> int:
    """The HTTP status ``exc`` carries (500 for anything not raised on purpose)."""
    return exc.status if isinstance(exc, RendezvousError) else 500


def code_for(exc: BaseException) -> str:
    """The machine-readable code ``exc`` carries (``internal`` for anything else)."""
    return exc.code if isinstance(exc, RendezvousError) else "internal"


def headers_for(exc: BaseException) -> dict[str, str] | None:
    """Extra response headers ``exc`` asks for, such as ``Retry-After``."""
    return exc.headers() if isinstance(exc, ProxyError) else None
