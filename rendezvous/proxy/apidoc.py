"""The proxy's OpenAPI 3.0 document and its Swagger UI page.

The bodies the proxy answers with are pydantic models here, and their component schemas come
from pydantic's JSON Schema (written the OpenAPI 3.0 way: ``nullable`` instead of a ``null``
type, ``enum`` instead of ``const``). The models document; they are never used to build or
check a response on the request path (the handlers encode plain dicts with orjson). Each
service adds its own request body schema, from its configured input fields.

``/docs`` is Swagger UI over ``/openapi.json``; its assets come from the ``swagger-ui-bundle``
package and are served by the proxy itself, so the page works without Internet access.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import GenerateJsonSchema, models_json_schema
from pydantic_core import core_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from rendezvous.config import Config, ServiceSpec
from rendezvous.proxy.labels import MAX_OBSERVED_MS
from rendezvous.proxy.parsing import MAX_DEADLINE_MS
from rendezvous.proxy.responses import JSON
from rendezvous.proxy.validation import EXAMPLE

REQUEST_ID_PATTERN = "^[A-Za-z0-9._-]{1,128}$"
OPENAPI_URL = "/openapi.json"
DOCS_URL = "/docs"
DOCS_ASSETS_URL = "/docs/static"


# ---- the bodies the proxy answers with ------------------------------------------------------
class Answer(BaseModel):
    """The answer to one request (200)."""

    request_id: str
    service: str
    model: str | None
    model_version: str | None
    role: str | None
    output: Any = Field(description="the model's output, as JSON")
    reason: str = Field(description="why this model's answer was chosen")
    latency_ms: int
    arm: str | None = Field(
        None,
        description="the A/B split's arm (a model name) the request's key picked; null "
        "without a split or when the request has no key",
    )


class Accepted(BaseModel):
    """An async request was accepted (202): poll its status URL."""

    request_id: str
    status_url: str


class Pending(BaseModel):
    """An async request accepted on this replica has no result yet (202)."""

    request_id: str
    status: Literal["pending"]


class QuotaUsage(BaseModel):
    """A key's quota in the current window, summed over every proxy replica."""

    requests: int = Field(
        description="requests (or tokens, see unit) allowed per window; the name stays for both"
    )
    period_ms: int = Field(description="the window's length; windows are aligned to the epoch")
    window_start_ms: int
    window_end_ms: int
    used: int = Field(
        description="requests (or tokens) counted in the window (other replicas' counts lag by "
        "about a second)"
    )
    remaining: int
    unit: Literal["requests", "tokens"] = Field(
        description="tokens when a service the key may call gives its models quota weights (a "
        "request costs the weights of the models that score it); else requests"
    )


class KeyUsage(BaseModel):
    """The API key a request was sent with (GET /v1/usage)."""

    key_id: str
    name: str
    services: list[str] = Field(description='the services it may call; ["*"]: every service')
    quota: QuotaUsage | None = Field(description="null: the key has no quota")
    costs: dict[str, int] = Field(
        description="per service of this replica the key may call, what a request costs when "
        "every model scores it (1 without quota weights; a sampled model skipping a request "
        "costs nothing)"
    )


class FeedbackIn(BaseModel):
    """The true outcome of a past request. The label must have the JSON type of the request's
    answer: of its output's label field (a classifier's {"label": 1, "probability": 0.9}), or
    of the output itself (a regressor's number). An integer class takes an integer (1.0 counts
    as 1), a number takes any number, a string a string, a boolean a boolean; when the request
    got no answer, any string, number or boolean. No other fields."""

    model_config = {"extra": "forbid"}

    label: str | float | bool = Field(
        description='the true label: 1, "fraud", true, 42.5 (never null, a list or an object)'
    )
    observed_ms: int | None = Field(
        default=None,
        ge=0,
        le=MAX_OBSERVED_MS,
        description="epoch ms when the outcome happened or was observed",
    )
    source: str | None = Field(
        default=None, max_length=200, description="who or what gave the label"
    )


class FeedbackAccepted(BaseModel):
    """The label is on the feedback topic (Kafka acknowledged it) (202)."""

    request_id: str
    service: str
    label: Any = Field(description="the label as stored (an integral number as an integer)")
    labelled_ms: int = Field(description="when the proxy took it: the first label by it counts")
    status: Literal["accepted"]


class ErrorDetail(BaseModel):
    code: str = Field(description="stable and machine-readable, such as deadline_exceeded")
    message: str = Field(description="what happened and how to fix it")
    request_id: str | None
    field: str | None = Field(
        default=None, description="the body field at fault, when there is one (422 errors)"
    )


class Error(BaseModel):
    """Every error response (4xx and 5xx) has this body."""

    error: ErrorDetail


class _OpenApi30(GenerateJsonSchema):
    """JSON Schema in the dialect of OpenAPI 3.0, without generated titles."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> dict[str, Any]:
        return {**self.generate_inner(schema["schema"]), "nullable": True}

    def literal_schema(self, schema: core_schema.LiteralSchema) -> dict[str, Any]:
        out = super().literal_schema(schema)
        out.pop("const", None)
        out["enum"] = list(schema["expected"])
        return out

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def component_schemas() -> dict[str, Any]:
    """The schemas of the proxy's response bodies, by name, as ``components/schemas``."""
    _, top = models_json_schema(
        [
            *((model, "serialization") for model in (Answer, Accepted, Pending, Error, KeyUsage)),
            (FeedbackAccepted, "serialization"),
            (FeedbackIn, "validation"),
        ],
        ref_template="#/components/schemas/{model}",
        schema_generator=_OpenApi30,
    )
    schemas = top["$defs"]
    for schema in schemas.values():
        schema.pop("title", None)
    return schemas


# ---- the request bodies, one per service -------------------------------------------------
_FIELD_TYPES = {
    "double": {"type": "number", "format": "double"},
    # An integral JSON number: the proxy takes 30.0 for 30 (a float is exact below 2**53).
    "long": {
        "type": "number",
        "multipleOf": 1,
        "minimum": -(2**53) + 1,
        "maximum": 2**53 - 1,
        "description": "an integer; a number with no fraction, such as 30.0, is taken as one",
    },
    "string": {"type": "string"},
    "boolean": {"type": "boolean"},
}


def input_schema(spec: ServiceSpec) -> dict[str, Any]:
    """The request body schema of one service, from its configured input fields."""
    if spec.input_fields is None:
        return {
            "type": "object",
            "description": f"the input of model {spec.input_from_model!r} (its MLflow signature); "
            "not checked by the proxy",
        }
    props: dict[str, Any] = {}
    for f in spec.input_fields:
        prop = dict(_FIELD_TYPES[f.type])
        if f.default is not None:
            prop["default"] = f.default
        if not f.required:
            prop["nullable"] = True  # null, like a missing field, takes the default
        props[f.name] = prop
    schema: dict[str, Any] = {
        "type": "object",
        "properties": props,
        "additionalProperties": False,
        "example": {f.name: EXAMPLE[f.type] for f in spec.input_fields},
    }
    required = [f.name for f in spec.input_fields if f.required]
    if required:
        schema["required"] = required
    return schema


# ---- the document ----------------------------------------------------------------------------
def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {JSON: {"schema": schema}}}


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, **_content(_ref(schema))}


def _err(description: str) -> dict[str, Any]:
    return _ok(description, "Error")


_RID_HEADER = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": "your own request id (1-128 of [A-Za-z0-9._-]); one is assigned if absent",
    "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
}
_DEADLINE_PARAM = {
    "name": "X-Deadline-Ms",
    "in": "header",
    "required": False,
    "description": "a deadline tighter than the service's SLA, in milliseconds from when the "
    "proxy accepts the request: the pipeline decides by it (falling back to the next model "
    "when the champion cannot make it) and a sync request is answered, or 504, by it plus the "
    "result grace. A value above the SLA is capped at the SLA (the answer's X-Deadline-Capped "
    "header says so); a value that is not a whole number >= 1 is 400 bad_deadline",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_DEADLINE_MS},
}
# The headers of an answer to a request that sent X-Deadline-Ms.
_DEADLINE_HEADERS = {
    "X-Deadline-Ms": {
        "description": "the deadline applied, in ms: the one asked for, or the SLA if that "
        "was lower (only when the request sent X-Deadline-Ms)",
        "schema": {"type": "integer"},
    },
    "X-Deadline-Capped": {
        "description": "true when the X-Deadline-Ms asked for was above the SLA and was capped",
        "schema": {"type": "string", "enum": ["true"]},
    },
}
_RID_PATH = {
    "name": "request_id",
    "in": "path",
    "required": True,
    "description": "the request_id a POST returned",
    "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
}
# The statuses of both POST endpoints, besides their success.
_POST_ERRORS = {
    "400": "malformed JSON (code bad_json), a bad X-Request-ID (code bad_request_id) or a bad "
    "X-Deadline-Ms (code bad_deadline)",
    "404": "unknown service",
    "408": "the body did not arrive within body_timeout_ms, such as one shorter than its "
    "Content-Length (code request_timeout; the connection is closed)",
    "409": "this request id is already in flight (code duplicate_request_id), or this replica "
    "already took it for another body (code request_id_conflict; a retry must repeat the body)",
    "413": "body larger than max_body_bytes",
    "415": "a Content-Type that is not JSON (application/json or */*+json)",
    "422": "body does not match the service's input fields",
    "503": "Kafka unavailable, or it had not acknowledged the request by its deadline (code "
    "kafka_unavailable), or this replica at its admission limit (code overloaded, with a "
    "Retry-After header)",
}
_SCORE_ERRORS = {
    "502": "no model could answer (error result)",
    "504": "no result by the deadline plus the result grace (code deadline_exceeded)",
}
_STATUS_ERRORS = {
    "400": "not a request id (code bad_request_id)",
    "404": "unknown request (code unknown_request): not among the results this replica read in "
    "the last cache_ttl_ms, nor among the archive's decisions of the last "
    "feedback_lookback_days (a request answered on another replica is archived within the "
    "archive's commit interval, about 10 s)",
    "503": "the request never reached Kafka (code kafka_unavailable), or the archive, where a "
    "request this replica does not know is looked up, cannot be read (code "
    "archive_unavailable)",
    "502": "no model could answer (error result)",
    "504": "no result by the deadline plus the result grace",
}

_FEEDBACK_ERRORS = {
    "400": "malformed JSON (code bad_json) or not a request id (code bad_request_id)",
    "404": "unknown request (code unknown_request): not among the results this replica read in "
    "the last cache_ttl_ms, nor among the archive's decisions of the last "
    "feedback_lookback_days. A decision is archived after the request's deadline, its "
    "service's grace and the archive's next checkpoint (about 10 s): retry later",
    "408": "the body did not arrive within body_timeout_ms (code request_timeout)",
    "409": "the request has a label already (code already_labelled): the first label counts "
    "and is never replaced. Known from this replica's labels and the archive's feedback table; "
    "two labels sent to two replicas within one archive checkpoint are both kept, and the "
    "first by labelled_ms counts",
    "413": "body larger than max_body_bytes",
    "415": "a Content-Type that is not JSON",
    "422": "the body breaks the schema (code schema: a missing label, an unknown field, a bad "
    "observed_ms or source) or the label is not of the type of the request's answer (code "
    "label_type); the error's field names the field",
    "503": "Kafka unavailable or did not acknowledge the label (code kafka_unavailable), or the "
    "archive cannot be read (code archive_unavailable); the label was not taken: send it again",
}


def _errors(table: dict[str, str]) -> dict[str, Any]:
    return {status: _err(description) for status, description in table.items()}


# ---- access control (documented when the proxy requires API keys) ----------------------------
SECURITY_SCHEME = "apiKey"
_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": 'Bearer realm="rendezvous", with error="invalid_token" when the key '
        'sent is unknown or revoked (RFC 6750), or error="insufficient_scope" on a 403',
        "schema": {"type": "string"},
    }
}
_ACCESS_ERRORS = {
    "401": {
        **_err(
            "no API key, a malformed Authorization header, or a key that is unknown or revoked "
            "(code unauthorized)"
        ),
        "headers": _WWW_AUTHENTICATE,
    },
    "403": {
        **_err("the API key is not scoped to this service (code forbidden)"),
        "headers": _WWW_AUTHENTICATE,
    },
}


_RATE_HEADERS = {
    "X-RateLimit-Limit": {
        "description": "the key's quota: requests (or tokens, with quota weights) per window "
        "(only for a key with a quota)",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Remaining": {
        "description": "requests (or tokens) left in the window after this one; on a 429, "
        "what is left before it",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Cost": {
        "description": "the tokens this request costs: the quota weights of the models that "
        "score it (only for a service with quota weights)",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Reset": {
        "description": "seconds until the window ends and the quota is whole again",
        "schema": {"type": "integer"},
    },
}
_QUOTA_EXCEEDED = {
    **_err(
        "the key has used its quota for the current window, or has less left than the request "
        "costs (code quota_exceeded); see GET /v1/usage"
    ),
    "headers": {
        "Retry-After": {
            "description": "seconds until the window ends",
            "schema": {"type": "integer"},
        },
        **_RATE_HEADERS,
    },
}


def _secured(operation: dict[str, Any], *, counted: bool, scoped: bool = True) -> dict[str, Any]:
    """``operation`` behind an API key: its security requirement, its 401, its 403 when it is
    ``scoped`` to the key's services and, when ``counted`` against the key's quota, its 429
    and rate headers."""
    responses = {**operation["responses"], **_ACCESS_ERRORS}
    if not scoped:
        del responses["403"]
    if counted:
        responses["429"] = _QUOTA_EXCEEDED
        for status in ("200", "202"):
            if status in responses:
                ok = responses[status]
                responses[status] = {**ok, "headers": {**ok.get("headers", {}), **_RATE_HEADERS}}
    unread = "this replica has not read its API keys yet (code keys_unavailable)"
    earlier = responses.get("503")
    responses["503"] = _err(f"{earlier['description']}; or {unread}" if earlier else unread)
    return {
        **operation,
        "security": [{SECURITY_SCHEME: []}],
        "responses": dict(sorted(responses.items())),
    }


def _service_paths(name: str, spec: ServiceSpec) -> dict[str, Any]:
    body = {"required": True, **_content(_ref(f"{name}_input"))}
    score = {
        "summary": f"score one request for {name} and wait for the answer (SLA {spec.sla_ms} ms)",
        "operationId": f"score_{name}",
        "parameters": [_RID_HEADER, _DEADLINE_PARAM],
        "requestBody": body,
        "responses": {
            "200": {**_ok("the answer", "Answer"), "headers": _DEADLINE_HEADERS},
            **_errors(_POST_ERRORS),
            **_errors(_SCORE_ERRORS),
        },
    }
    submit = {
        "summary": f"submit one request for {name}; poll its status URL",
        "operationId": f"submit_{name}",
        "parameters": [_RID_HEADER, _DEADLINE_PARAM],
        "requestBody": body,
        "responses": {
            "202": {**_ok("accepted", "Accepted"), "headers": _DEADLINE_HEADERS},
            **_errors(_POST_ERRORS),
        },
    }
    return {
        f"/v1/services/{name}/score": {"post": score},
        f"/v1/services/{name}/requests": {"post": submit},
    }


def openapi(config: Config, *, access: bool = False) -> dict[str, Any]:
    """An OpenAPI 3 document of the proxy, with one request body schema per service.

    ``access``: the proxy requires API keys (on every /v1/ operation)."""
    schemas = component_schemas()
    paths: dict[str, Any] = {}
    for name, spec in sorted(config.services.items()):
        schemas[f"{name}_input"] = input_schema(spec)
        paths.update(_service_paths(name, spec))
    paths["/v1/requests/{request_id}"] = {
        "get": {
            "summary": "the answer to a request, if known",
            "operationId": "get_request",
            "parameters": [_RID_PATH],
            "responses": {
                "200": _ok("the answer", "Answer"),
                "202": _ok("accepted here, no result yet", "Pending"),
                **_errors(_STATUS_ERRORS),
            },
        }
    }
    paths["/v1/requests/{request_id}/feedback"] = {
        "post": {
            "summary": "record the true outcome (label) of a past request, once",
            "description": "The label goes to the Kafka topic rdv.feedback (which bulk "
            "producers may write directly) and from there to the archive's feedback table; "
            "`rendezvous report` joins it to every model's scores by request ID. The answer "
            "waits for Kafka's acknowledgement.",
            "operationId": "post_feedback",
            "parameters": [_RID_PATH],
            "requestBody": {"required": True, **_content(_ref("FeedbackIn"))},
            "responses": {
                "202": _ok("the label is on the feedback topic", "FeedbackAccepted"),
                **_errors(_FEEDBACK_ERRORS),
            },
        }
    }
    paths["/healthz"] = {
        "get": {"summary": "liveness", "responses": {"200": {"description": "ok"}}}
    }
    paths["/readyz"] = {
        "get": {
            "summary": "readiness: Kafka reachable" + (" and the API keys read" if access else ""),
            "responses": {
                "200": {"description": "ready"},
                "503": _err(
                    "Kafka unavailable" + (", or the API keys not read yet" if access else "")
                ),
            },
        }
    }
    paths["/metrics"] = {
        "get": {
            "summary": "Prometheus metrics",
            "responses": {
                "200": {"description": "text exposition format", "content": {"text/plain": {}}}
            },
        }
    }
    components: dict[str, Any] = {"schemas": schemas}
    if access:
        for path, item in paths.items():
            if path.startswith("/v1/"):
                for method, operation in item.items():
                    item[method] = _secured(operation, counted=path.startswith("/v1/services/"))
        paths["/v1/usage"] = {
            "get": _secured(
                {
                    "summary": "the calling API key: its services and its quota in the current "
                    "window (not counted against it)",
                    "operationId": "get_usage",
                    "responses": {"200": _ok("the key and its usage", "KeyUsage")},
                },
                counted=False,
                scoped=False,
            )
        }
        components["securitySchemes"] = {
            SECURITY_SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "description": "an API key from `rendezvous keys create`, as "
                "'Authorization: Bearer <key>'",
            }
        }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Rendezvous proxy",
            "version": "1",
            "description": f"services from {config.source}: {', '.join(sorted(config.services))}",
        },
        "paths": paths,
        "components": components,
    }


# ---- Swagger UI ----------------------------------------------------------------------------
DOCS_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Rendezvous proxy API</title>
<link rel="stylesheet" href="{DOCS_ASSETS_URL}/swagger-ui.css">
<link rel="icon" type="image/png" href="{DOCS_ASSETS_URL}/favicon-32x32.png">
</head>
<body>
<noscript>Swagger UI needs JavaScript; the OpenAPI document is at
<a href="{OPENAPI_URL}">{OPENAPI_URL}</a>.</noscript>
<div id="swagger-ui"></div>
<script src="{DOCS_ASSETS_URL}/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{url: "{OPENAPI_URL}", dom_id: "#swagger-ui", deepLinking: true}});
</script>
</body>
</html>
""".encode()


async def _docs(request: Request) -> Response:
    return Response(DOCS_PAGE, 200, media_type="text/html; charset=utf-8")


def docs_routes() -> list[BaseRoute]:
    """``GET /docs`` (Swagger UI) and the assets it loads, from the swagger-ui-bundle package."""
    return [
        Route(DOCS_URL, _docs, methods=["GET"]),
        Mount(DOCS_ASSETS_URL, app=StaticFiles(directory=swagger_ui_path), name="docs-assets"),
    ]
