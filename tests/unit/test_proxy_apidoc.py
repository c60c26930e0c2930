"""The proxy's OpenAPI document: built from the configuration and the response models."""

from __future__ import annotations

import orjson
import pytest

from rendezvous import config
from rendezvous.proxy import apidoc, errors

pytestmark = pytest.mark.unit

CONFIG = config.parse(
    {
        "services": {
            "credit": {
                "sla_ms": 100,
                "models": [{"name": "m", "role": "champion", "callable": "udfs.rules:approve"}],
                "input": {"amount": "double", "region": {"type": "string", "required": False}},
            }
        }
    }
)


def _resolve(doc: dict, schema: dict) -> dict:
    ref = schema.get("$ref")
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def test_the_document_has_every_operation_and_is_json() -> None:
    doc = apidoc.openapi(CONFIG)
    orjson.dumps(doc)
    assert doc["openapi"] == "3.0.3"
    assert set(doc["paths"]) == {
        "/v1/services/credit/score",
        "/v1/services/credit/requests",
        "/v1/requests/{request_id}",
        "/v1/requests/{request_id}/feedback",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    score = doc["paths"]["/v1/services/credit/score"]["post"]
    assert set(score["responses"]) == {
        "200",
        "400",
        "404",
        "408",
        "409",
        "413",
        "415",
        "422",
        "502",
        "503",
        "504",
    }
    submit = doc["paths"]["/v1/services/credit/requests"]["post"]
    assert set(submit["responses"]) == {
        "202",
        "400",
        "404",
        "408",
        "409",
        "413",
        "415",
        "422",
        "503",
    }
    status = doc["paths"]["/v1/requests/{request_id}"]["get"]
    assert set(status["responses"]) == {"200", "202", "400", "404", "502", "503", "504"}


def test_every_status_an_error_carries_is_documented() -> None:
    doc = apidoc.openapi(CONFIG, access=True)
    documented = {
        int(status)
        for item in doc["paths"].values()
        for op in item.values()
        for status in op["responses"]
    }
    carried = {
        cls.status
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.ProxyError)
    }
    assert carried - {500} <= documented


def test_response_schemas_come_from_the_models_in_the_openapi_3_0_dialect() -> None:
    doc = apidoc.openapi(CONFIG)
    schemas = doc["components"]["schemas"]
    answer = schemas["Answer"]
    assert set(answer["properties"]) == set(apidoc.Answer.model_fields)
    assert answer["properties"]["model"] == {"type": "string", "nullable": True}
    assert answer["properties"]["latency_ms"] == {"type": "integer"}
    assert schemas["Pending"]["properties"]["status"] == {"type": "string", "enum": ["pending"]}
    error = _resolve(doc, schemas["Error"]["properties"]["error"])
    assert set(error["required"]) == {"code", "message", "request_id"}
    assert error["properties"]["request_id"] == {"type": "string", "nullable": True}
    text = orjson.dumps(doc).decode()
    assert '"null"' not in text and '"const"' not in text and '"$defs"' not in text
    for item in doc["paths"].values():
        for op in item.values():
            for status, response in op["responses"].items():
                if status[0] in "45":
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"
                    }


def test_a_real_answer_body_fits_its_model() -> None:
    body = {
        "request_id": "r1",
        "service": "credit",
        "model": None,
        "model_version": None,
        "role": None,
        "output": {"p": 1},
        "reason": "champion",
        "latency_ms": 3,
        "arm": "gbm",
    }
    assert apidoc.Answer.model_validate(body).model_dump() == body
    error = {"error": {"code": "schema", "message": "m", "request_id": None, "field": "x"}}
    assert apidoc.Error.model_validate(error).model_dump() == error


def test_a_service_input_schema_follows_its_fields() -> None:
    schema = apidoc.openapi(CONFIG)["components"]["schemas"]["credit_input"]
    assert schema["required"] == ["amount"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["region"] == {"type": "string", "nullable": True}
    assert schema["example"] == {"amount": 1.5, "region": "text"}


def test_without_access_control_no_operation_asks_for_a_key() -> None:
    doc = apidoc.openapi(CONFIG)
    assert "securitySchemes" not in doc["components"]
    for item in doc["paths"].values():
        for op in item.values():
            assert "security" not in op and "401" not in op["responses"]


def test_with_access_control_every_v1_operation_needs_a_bearer_key() -> None:
    doc = apidoc.openapi(CONFIG, access=True)
    assert doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    for path, item in doc["paths"].items():
        for op in item.values():
            if path.startswith("/v1/"):
                assert op["security"] == [{"apiKey": []}]
                assert "401" in op["responses"]
                assert ("403" in op["responses"]) == (path != "/v1/usage")
                assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
                assert "keys_unavailable" in op["responses"]["503"]["description"]
            else:  # health, readiness and metrics stay open
                assert "security" not in op and "401" not in op["responses"]
    score = doc["paths"]["/v1/services/credit/score"]["post"]
    assert "kafka_unavailable" in score["responses"]["503"]["description"]
    assert "Retry-After" in score["responses"]["429"]["headers"]
    assert "X-RateLimit-Remaining" in score["responses"]["200"]["headers"]
    assert "X-Deadline-Ms" in score["responses"]["200"]["headers"]
    status = doc["paths"]["/v1/requests/{request_id}"]["get"]
    assert "429" not in status["responses"] and "403" in status["responses"]
    usage = doc["paths"]["/v1/usage"]["get"]
    assert set(usage["responses"]) == {"200", "401", "503"}
    schema = doc["components"]["schemas"]["KeyUsage"]
    assert schema["properties"]["quota"]["nullable"] is True
    assert [p["name"] for p in score["parameters"]] == ["X-Request-ID", "X-Deadline-Ms"]


def test_the_feedback_operation_documents_its_body_and_every_error() -> None:
    doc = apidoc.openapi(CONFIG)
    op = doc["paths"]["/v1/requests/{request_id}/feedback"]["post"]
    assert set(op["responses"]) == {"202", "400", "404", "408", "409", "413", "415", "422", "503"}
    assert "already_labelled" in op["responses"]["409"]["description"]
    assert "label_type" in op["responses"]["422"]["description"]
    assert "retry later" in op["responses"]["404"]["description"]
    schemas = doc["components"]["schemas"]
    body = _resolve(doc, op["requestBody"]["content"]["application/json"]["schema"])
    assert body["required"] == ["label"] and body["additionalProperties"] is False
    assert set(body["properties"]) == {"label", "observed_ms", "source"}
    assert schemas["FeedbackAccepted"]["properties"]["status"]["enum"] == ["accepted"]
    error = _resolve(doc, schemas["Error"]["properties"]["error"])
    assert error["properties"]["field"]["nullable"] is True
