"""The proxy's exceptions and the one table that maps them to HTTP statuses.

Each class carries its HTTP ``status`` and a stable machine-readable ``code``; :data:`HTTP_STATUS`
is the single table the proxy consults (walking the exception's class hierarchy), so an error
body always reads ``{"error": {"code", "message", "request_id"}}``.
"""

from __future__ import annotations

from rendezvous.errors import ConfigError, RendezvousError


class ProxyError(RendezvousError):
    """Root of the errors the proxy turns into HTTP responses."""

    status = 500
    code = "internal"


class BadJson(ProxyError):
    """The body is not valid JSON (the message gives line and column)."""

    status = 400
    code = "bad_json"


class BadRequestId(ProxyError):
    """``X-Request-ID`` (or a request id in a URL) is not 1-128 of ``[A-Za-z0-9._-]``."""

    status = 400
    code = "bad_request_id"


class UnknownService(ProxyError):
    status = 404
    code = "unknown_service"


class UnknownRequest(ProxyError):
    status = 404
    code = "unknown_request"


class DuplicateRequest(ProxyError):
    """A request with this id is already waiting on this replica."""

    status = 409
    code = "duplicate_request_id"


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


class NoAnswer(ProxyError):
    """The rendezvous job answered with an error result: no model produced a usable score."""

    status = 502
    code = "no_answer"


class KafkaUnavailable(ProxyError):
    """Kafka is not reachable, or producing the request failed."""

    status = 503
    code = "kafka_unavailable"


class Overloaded(ProxyError):
    """The replica is at its admission limit: the request was not sent into the pipeline."""

    status = 503
    code = "overloaded"
    retry_after_s = 1


class AnswerTimeout(ProxyError):
    """No result arrived by the request's deadline plus the result grace."""

    status = 504
    code = "deadline_exceeded"


# The one table: exception class -> HTTP status. Anything not listed (walking the MRO) is a 500.
HTTP_STATUS: dict[type[BaseException], int] = {
    cls: cls.status
    for cls in (
        BadJson,
        BadRequestId,
        UnknownService,
        UnknownRequest,
        DuplicateRequest,
        BodyTooLarge,
        UnsupportedMediaType,
        SchemaViolation,
        NoAnswer,
        KafkaUnavailable,
        Overloaded,
        AnswerTimeout,
        ProxyError,
    )
}
HTTP_STATUS[ConfigError] = 500
HTTP_STATUS[RendezvousError] = 500


def status_for(exc: BaseException) -> int:
    """The HTTP status for ``exc`` from :data:`HTTP_STATUS` (500 when nothing matches)."""
    for cls in type(exc).__mro__:
        status = HTTP_STATUS.get(cls)
        if status is not None:
            return status
    return 500


def code_for(exc: BaseException) -> str:
    return exc.code if isinstance(exc, RendezvousError) else "internal"
