"""``POST /v1/requests/{id}/feedback`` through an ASGI client over the in-memory transport, with
requests known from this replica's results or from a small archive written in the test."""

from __future__ import annotations

from typing import Any

import pytest

from rendezvous import serde, topics
from rendezvous.archive.layout import write_rows
from rendezvous.proxy import InMemoryTransport
from tests.unit.archive_data import decision, out
from tests.unit.test_proxy_app import (
    T0,
    FakeClock,
    _samples,
    answering,
    error_of,
    proxy,
    run,
)

pytestmark = pytest.mark.unit


def labels_sent(t: InMemoryTransport) -> list[dict[str, Any]]:
    sent = [r for r in t.records if r.topic == topics.FEEDBACK]
    for r in sent:
        kind, batch_id, items = serde.decode_items(r.value)
        assert kind is serde.Kind.FEEDBACK and r.key == batch_id.encode() and len(items) == 1
    return [serde.items_as(serde.Kind.FEEDBACK, r.value)[0] for r in sent]


async def scored(client, rid: str) -> None:
    r = await client.post(
        "/v1/services/credit/score", json={"amount": 1}, headers={"x-request-id": rid}
    )
    assert r.status_code == 200, r.text


def test_a_label_for_an_answered_request_goes_to_the_feedback_topic_once() -> None:
    clock = FakeClock()
    hook = answering(clock, output={"label": 1, "probability": 0.8})

    async def go() -> None:
        async with proxy(InMemoryTransport(on_produce=hook), clock) as (client, t, _):
            await scored(client, "q1")
            clock.now += 60_000
            r = await client.post(
                "/v1/requests/q1/feedback",
                json={"label": 0, "observed_ms": T0 + 5, "source": "review"},
            )
            assert r.status_code == 202, r.text
            assert r.headers["x-request-id"] == "q1"
            assert r.json() == {
                "request_id": "q1",
                "service": "credit",
                "label": 0,
                "labelled_ms": T0 + 60_000,
                "status": "accepted",
            }
            assert labels_sent(t) == [
                {
                    "request_id": "q1",
                    "service": "credit",
                    "label": "0",
                    "labelled_ms": T0 + 60_000,
                    "observed_ms": T0 + 5,
                    "source": "review",
                }
            ]
            again = await client.post("/v1/requests/q1/feedback", json={"label": 1})
            assert again.status_code == 409
            err = error_of(again)
            assert (err["code"], err["request_id"]) == ("already_labelled", "q1")
            assert "first label counts" in err["message"]
            assert len(labels_sent(t)) == 1

    run(go())


def test_an_integral_number_is_stored_as_the_integer_class() -> None:
    hook = answering(output={"label": 1, "probability": 0.8})

    async def go() -> None:
        async with proxy(InMemoryTransport(on_produce=hook)) as (client, t, _):
            await scored(client, "q1")
            r = await client.post("/v1/requests/q1/feedback", json={"label": 1.0})
            assert r.status_code == 202 and r.json()["label"] == 1
            assert labels_sent(t)[0]["label"] == "1"

    run(go())


def test_a_label_of_the_wrong_type_is_422_naming_the_field_and_nothing_is_sent() -> None:
    hook = answering(output={"label": 1, "probability": 0.8})

    async def go() -> None:
        async with proxy(InMemoryTransport(on_produce=hook)) as (client, t, _):
            await scored(client, "q1")
            r = await client.post("/v1/requests/q1/feedback", json={"label": "1"})
            assert r.status_code == 422
            err = error_of(r)
            assert (err["code"], err["field"], err["request_id"]) == ("label_type", "label", "q1")
            assert "must be an integer" in err["message"] and "send " in err["message"]
            r = await client.post("/v1/requests/q1/feedback", json={"labl": 1})
            assert r.status_code == 422 and error_of(r)["field"] == "labl"
            r = await client.post("/v1/requests/q1/feedback", content=b"{")
            assert r.status_code == 400 and error_of(r)["code"] == "bad_json"
            assert labels_sent(t) == []
            # the refused labels leave the request open to a good one
            r = await client.post("/v1/requests/q1/feedback", json={"label": 1})
            assert r.status_code == 202

    run(go())


def test_an_unknown_request_is_404_and_says_what_was_searched() -> None:
    async def go() -> None:
        async with proxy() as (client, t, _):
            r = await client.post("/v1/requests/nope/feedback", json={"label": 1})
            assert r.status_code == 404
            err = error_of(r)
            assert (err["code"], err["request_id"]) == ("unknown_request", "nope")
            assert "RDV_PROXY_ARCHIVE" in err["message"]
            r = await client.post("/v1/requests/bad%20id/feedback", json={"label": 1})
            assert r.status_code == 400 and error_of(r)["code"] == "bad_request_id"
            assert labels_sent(t) == []

    run(go())


def test_requests_of_the_archive_are_known_and_its_labels_count(tmp_path) -> None:
    at = T0 - 3 * 86_400_000
    write_rows(
        tmp_path,
        "decisions",
        [
            decision("old1", "gbm", "preferred", at=at, output=out("ham", 0.9)),
            decision("old2", "gbm", "preferred", at=at, output=out("ham", 0.9)),
        ],
        service="mail",
    )
    write_rows(
        tmp_path,
        "feedback",
        [{"request_id": "old2", "label": '"spam"', "labelled_ms": at + 1}],
        service="mail",
    )

    async def go() -> None:
        async with proxy(clock=FakeClock(), archive=tmp_path) as (client, t, _):
            r = await client.post("/v1/requests/old1/feedback", json={"label": 3})
            assert r.status_code == 422 and "must be a string" in error_of(r)["message"]
            r = await client.post("/v1/requests/old1/feedback", json={"label": "spam"})
            assert r.status_code == 202, r.text
            assert r.json()["service"] == "mail"
            r = await client.post("/v1/requests/old2/feedback", json={"label": "ham"})
            assert r.status_code == 409 and "the archive holds" in error_of(r)["message"]
            r = await client.post("/v1/requests/new/feedback", json={"label": "ham"})
            assert r.status_code == 404 and "retry later" in error_of(r)["message"]
            assert [x["request_id"] for x in labels_sent(t)] == ["old1"]

    run(go())


def test_an_unreadable_archive_is_503_and_takes_nothing(tmp_path) -> None:
    (path,) = write_rows(tmp_path, "decisions", [decision("r", "gbm", "x")], service="mail")
    path.write_bytes(b"garbage")

    async def go() -> None:
        async with proxy(clock=FakeClock(), archive=tmp_path) as (client, t, _):
            r = await client.post("/v1/requests/r/feedback", json={"label": 1})
            assert r.status_code == 503 and error_of(r)["code"] == "archive_unavailable"
            assert labels_sent(t) == []

    run(go())


def test_a_label_kafka_did_not_take_is_503_and_may_be_sent_again() -> None:
    hook = answering(output=0.5)

    async def go() -> None:
        async with proxy(InMemoryTransport(on_produce=hook), delivery_timeout_ms=1) as (
            client,
            t,
            _,
        ):
            await scored(client, "q1")
            t.fail_delivery = "broker said no"
            r = await client.post("/v1/requests/q1/feedback", json={"label": 0.7})
            assert r.status_code == 503 and "broker said no" in error_of(r)["message"]
            t.fail_delivery = None
            t.hold_delivery = True  # never acknowledged
            r = await client.post("/v1/requests/q1/feedback", json={"label": 0.7})
            assert r.status_code == 503 and "no acknowledgement" in error_of(r)["message"]
            t.hold_delivery = False
            t.set_ready(False)
            r = await client.post("/v1/requests/q1/feedback", json={"label": 0.7})
            assert r.status_code == 503 and "not ready" in error_of(r)["message"]
            t.set_ready(True)
            r = await client.post("/v1/requests/q1/feedback", json={"label": 1})
            assert r.status_code == 202 and r.json()["label"] == 1.0

    run(go())


def test_feedback_is_counted_by_service_and_status() -> None:
    hook = answering(output={"label": 1, "probability": 0.8})

    async def go() -> None:
        async with proxy(InMemoryTransport(on_produce=hook)) as (client, _, _p):
            await scored(client, "q1")
            await client.post("/v1/requests/q1/feedback", json={"label": 1})
            await client.post("/v1/requests/zz/feedback", json={"label": 1})
            samples = _samples((await client.get("/metrics")).text)
            name = "rdv_proxy_requests_total"
            labels = {"service": "credit", "endpoint": "feedback", "code": "202"}
            assert samples[(name, frozenset(labels.items()))] == 1
            labels = {"service": "", "endpoint": "feedback", "code": "404"}
            assert samples[(name, frozenset(labels.items()))] == 1

    run(go())


def test_a_request_this_replica_never_saw_is_answered_from_the_archive(tmp_path) -> None:
    """GET /v1/requests/{id} of a request answered on another replica, or before this one
    started: the archived decision, as the answer the client would have had."""
    at = T0 - 60_000
    write_rows(
        tmp_path,
        "decisions",
        [
            decision("done", "gbm", "preferred", at=at, output=out("ham", 0.9), latency_ms=42),
            decision("failed", None, "no_answer: gbm late", at=at),
        ],
        service="mail",
    )

    async def go() -> None:
        async with proxy(clock=FakeClock(), archive=tmp_path) as (client, _, _p):
            r = await client.get("/v1/requests/done")
            assert r.status_code == 200, r.text
            body = r.json()
            assert (body["request_id"], body["service"], body["model"]) == ("done", "mail", "gbm")
            assert (body["reason"], body["latency_ms"], body["model_version"]) == (
                "preferred",
                42,
                "1",
            )
            assert body["output"] == {"label": "ham", "probability": 0.9}
            r = await client.get("/v1/requests/failed")
            assert r.status_code == 502 and error_of(r)["code"] == "no_answer", r.text
            r = await client.get("/v1/requests/never")
            assert r.status_code == 404 and "nor to the archive" in error_of(r)["message"]

    run(go())


def test_an_unreadable_archive_makes_an_unknown_request_503(tmp_path) -> None:
    (path,) = write_rows(tmp_path, "decisions", [decision("r", "gbm", "x")], service="mail")
    path.write_bytes(b"garbage")

    async def go() -> None:
        async with proxy(clock=FakeClock(), archive=tmp_path) as (client, _, _p):
            r = await client.get("/v1/requests/r")
            assert r.status_code == 503 and error_of(r)["code"] == "archive_unavailable"

    run(go())
