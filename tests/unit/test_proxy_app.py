"""The proxy's HTTP behaviour, driven through an ASGI client over the in-memory transport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rendezvous import serde, topics
from rendezvous.proxy import InMemoryTransport
from rendezvous.proxy.transport import Record
from tests.proxy_harness import T0, FakeClock, answering, error_of, proxy, run

pytestmark = pytest.mark.unit


# ---- sync ----------------------------------------------------------------------------------
def test_sync_happy_path_produces_request_and_returns_answer() -> None:
    clock = FakeClock()
    hook = answering(clock, 7, output={"approve": True, "p": 0.9}, model="gbm", version="3")

    async def go() -> None:
        async with proxy(InMemoryTransport(on_produce=hook), clock) as (client, t, _):
            r = await client.post("/v1/services/credit/score", json={"amount": 250})
            assert r.status_code == 200, r.text
            body = r.json()
            rid = body["request_id"]
            assert len(rid) == 32 and r.headers["x-request-id"] == rid
            assert body == {
                "request_id": rid,
                "service": "credit",
                "model": "gbm",
                "model_version": "3",
                "role": "champion",
                "output": {"approve": True, "p": 0.9},
                "reason": "champion",
                "latency_ms": 7,
                "arm": None,
            }
            [record] = [x for x in t.records if x.topic == topics.REQUESTS]
            kind, batch_id, [req] = serde.decode_items(record.value)
            assert record.key == batch_id.encode() and kind is serde.Kind.REQUEST
            assert record.value[0] == serde.Kind.REQUEST_BATCH
            assert record.timestamp_ms == T0
            assert req == {
                "request_id": rid,
                "service": "credit",
                "received_ms": T0,
                "deadline_ms": T0 + 100 - 15,  # the pipeline decides 15 ms before the SLA
                "payload": '{"amount":250.0,"age":40,"region":null}',
                "reply_to": "r1",
            }

    run(go())


def test_a_request_kafka_never_acknowledged_is_503_not_504_at_its_deadline() -> None:
    async def go() -> None:
        async with proxy(result_grace_ms=10) as (client, t, p):
            t.hold_delivery = True  # the broker took the connection but never answered
            r = await client.post("/v1/services/fast/score", json={"x": 1})
            assert r.status_code == 503
            err = error_of(r)
            assert err["code"] == "kafka_unavailable"
            assert "had not acknowledged" in err["message"]
            assert err["request_id"] == r.headers["x-request-id"]
            t.hold_delivery = False
            r = await client.post("/v1/services/fast/score", json={"x": 1})
            assert r.status_code == 504  # acknowledged, then no answer: the pipeline is late
            assert p.unconfirmed == set()  # both judged: nothing is kept for them

    run(go())


def test_sync_timeout_is_504_after_deadline_plus_grace() -> None:
    async def go() -> None:
        async with proxy(result_grace_ms=10) as (client, t, p):
            r = await client.post("/v1/services/fast/score", json={"x": 1})
            assert r.status_code == 504
            err = error_of(r)
            assert err["code"] == "deadline_exceeded"
            assert "Kafka took the request, so it is still decided and archived" in err["message"]
            assert err["request_id"] == r.headers["x-request-id"]
            assert len(t.produced(serde.Kind.REQUEST)) == 1
            assert p.pending == {}

    run(go())


def test_error_result_is_502_no_answer_with_reason() -> None:
    hook = answering(status="error", model=None, role=None, reason="deadline", error="gbm: boom")

    async def go() -> None:
        async with proxy(InMemoryTransport(on_produce=hook)) as (client, _, _p):
            r = await client.post("/v1/services/credit/score", json={"amount": 1.5})
            assert r.status_code == 502
            err = error_of(r)
            assert err["code"] == "no_answer"
            assert "deadline" in err["message"] and "gbm: boom" in err["message"]

    run(go())


def test_x_request_id_is_honoured() -> None:
    hook = answering(output=1)

    async def go() -> None:
        async with proxy(InMemoryTransport(on_produce=hook)) as (client, t, _):
            r = await client.post(
                "/v1/services/credit/score",
                json={"amount": 1},
                headers={"X-Request-ID": "order-42.a_b"},
            )
            assert r.status_code == 200
            assert r.json()["request_id"] == "order-42.a_b"
            assert r.headers["x-request-id"] == "order-42.a_b"
            assert [r["request_id"] for r in t.produced(serde.Kind.REQUEST)] == ["order-42.a_b"]

    run(go())


@pytest.mark.parametrize("bad", ["%C3%A9t%C3%A9", "%00", "a%0Db", "%FF%FE", "x" * 129, "%E2%80%AE"])
def test_a_status_url_with_a_bad_id_is_400_json_without_echoing_it_in_a_header(bad: str) -> None:
    async def go() -> None:
        async with proxy() as (client, _t, _):
            r = await client.get(f"/v1/requests/{bad}")
            assert r.status_code == 400
            assert r.headers["content-type"].startswith("application/json")
            assert "x-request-id" not in r.headers
            err = error_of(r)
            assert err["code"] == "bad_request_id"
            assert err["request_id"] is None
            assert "not a request id" in err["message"]

    run(go())


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "slash/no", "é"])
def test_invalid_x_request_id_is_400(bad: str) -> None:
    async def go() -> None:
        async with proxy() as (client, t, _):
            r = await client.post(
                "/v1/services/credit/score",
                json={"amount": 1},
                headers={"X-Request-ID": bad.encode()},
            )
            assert r.status_code == 400
            err = error_of(r)
            assert err["code"] == "bad_request_id"
            assert err["request_id"] is None
            assert t.records == []

    run(go())


def test_request_id_already_in_flight_is_409() -> None:
    async def go() -> None:
        async with proxy() as (client, _, _p):
            headers = {"X-Request-ID": "dup-1"}
            r = await client.post(
                "/v1/services/credit/requests", json={"amount": 1}, headers=headers
            )
            assert r.status_code == 202
            r = await client.post("/v1/services/credit/score", json={"amount": 1}, headers=headers)
            assert r.status_code == 409
            assert error_of(r)["code"] == "duplicate_request_id"

    run(go())


def test_retry_of_an_answered_request_id_returns_the_cached_answer() -> None:
    async def go() -> None:
        async with proxy(InMemoryTransport(on_produce=answering(output=5))) as (client, t, _):
            headers = {"X-Request-ID": "again"}
            first = await client.post(
                "/v1/services/credit/score", json={"amount": 1}, headers=headers
            )
            second = await client.post(
                "/v1/services/credit/score", json={"amount": 1}, headers=headers
            )
            assert first.status_code == second.status_code == 200
            assert second.json()["output"] == 5
            assert len(t.produced(serde.Kind.REQUEST)) == 1

    run(go())


def test_an_answered_request_id_sent_with_another_body_is_409_conflict() -> None:
    async def go() -> None:
        async with proxy(InMemoryTransport(on_produce=answering(output=5))) as (client, t, _):
            headers = {"X-Request-ID": "used-1"}
            first = await client.post(
                "/v1/services/credit/score", json={"amount": 1}, headers=headers
            )
            assert first.status_code == 200
            for path in ("/v1/services/credit/score", "/v1/services/credit/requests"):
                r = await client.post(path, json={"amount": 2}, headers=headers)
                assert r.status_code == 409
                err = error_of(r)
                assert err["code"] == "request_id_conflict"
                assert err["request_id"] == "used-1"
                assert "already used for another body" in err["message"]
                assert "new X-Request-ID" in err["message"]
                assert r.headers["x-request-id"] == "used-1"
            again = await client.post(
                "/v1/services/credit/score", json={"amount": 1}, headers=headers
            )
            assert again.status_code == 200 and again.json()["output"] == 5  # the first answer
            assert len(t.produced(serde.Kind.REQUEST)) == 1

    run(go())


def test_an_in_flight_request_id_sent_with_another_body_is_409_conflict() -> None:
    async def go() -> None:
        async with proxy() as (client, t, _p):
            headers = {"X-Request-ID": "busy-1"}
            r = await client.post(
                "/v1/services/credit/requests", json={"amount": 1}, headers=headers
            )
            assert r.status_code == 202
            same = await client.post(
                "/v1/services/credit/requests", json={"amount": 1}, headers=headers
            )
            assert same.status_code == 409
            assert error_of(same)["code"] == "duplicate_request_id"
            other = await client.post(
                "/v1/services/credit/requests", content=b'{"amount": 1.0}', headers=headers
            )
            assert other.status_code == 409
            assert error_of(other)["code"] == "request_id_conflict"
            await asyncio.sleep(0)  # the batch leaves once the loop is done with the request
            assert len(t.produced(serde.Kind.REQUEST)) == 1

    run(go())


def test_an_answered_async_request_resubmitted_with_its_body_is_accepted_again() -> None:
    async def go() -> None:
        async with proxy(InMemoryTransport(on_produce=answering(output=7))) as (client, t, _):
            headers = {"X-Request-ID": "poll-1"}
            r = await client.post(
                "/v1/services/credit/requests", json={"amount": 1}, headers=headers
            )
            assert r.status_code == 202
            for _ in range(100):  # the batch leaves, and is answered, once the loop is free
                if (await client.get("/v1/requests/poll-1")).status_code == 200:
                    break
                await asyncio.sleep(0)
            r = await client.post(
                "/v1/services/credit/requests", json={"amount": 1}, headers=headers
            )
            assert r.status_code == 202  # answered: accepted again, not sent again
            assert r.json()["status_url"] == "/v1/requests/poll-1"
            r = await client.post(
                "/v1/services/credit/requests", json={"amount": 9}, headers=headers
            )
            assert r.status_code == 409 and error_of(r)["code"] == "request_id_conflict"
            assert (await client.get("/v1/requests/poll-1")).json()["output"] == 7
            assert len(t.produced(serde.Kind.REQUEST)) == 1

    run(go())


# ---- async ---------------------------------------------------------------------------------
def test_async_submit_then_poll() -> None:
    clock = FakeClock()

    async def go() -> None:
        async with proxy(clock=clock) as (client, t, _):
            r = await client.post("/v1/services/credit/requests", json={"amount": 3, "age": 30})
            assert r.status_code == 202
            body = r.json()
            rid = body["request_id"]
            assert body == {"request_id": rid, "status_url": f"/v1/requests/{rid}"}

            r = await client.get(body["status_url"])
            assert r.status_code == 202
            assert r.json() == {"request_id": rid, "status": "pending"}

            await asyncio.sleep(0)  # the batch leaves once the loop is done with the request
            [req] = t.produced(serde.Kind.REQUEST)
            assert req["payload"] == '{"amount":3.0,"age":30,"region":null}'
            clock.now += 12
            t.inject_result(t.result_for(req, output={"p": 0.1}, model="gbm"))
            await asyncio.sleep(0)

            r = await client.get(body["status_url"])
            assert r.status_code == 200
            answer = r.json()
            assert answer["request_id"] == rid
            assert answer["output"] == {"p": 0.1}
            assert answer["model"] == "gbm"
            assert answer["latency_ms"] == 12

    run(go())


def test_async_request_without_result_turns_504_after_deadline() -> None:
    clock = FakeClock()

    async def go() -> None:
        async with proxy(clock=clock, result_grace_ms=50) as (client, _, p):
            r = await client.post("/v1/services/credit/requests", json={"amount": 3})
            url = r.json()["status_url"]
            for _ in range(10):  # the batch leaves, then Kafka acknowledges it: a loop turn each
                await asyncio.sleep(0)
            assert p.unconfirmed == set()
            clock.now += 150
            assert (await client.get(url)).status_code == 202
            clock.now += 1
            r = await client.get(url)
            assert r.status_code == 504
            assert error_of(r)["code"] == "deadline_exceeded"
            assert "Kafka took the request" in error_of(r)["message"]

    run(go())


def test_the_pipeline_decides_before_the_sla_and_the_proxy_waits_for_the_sla() -> None:
    """A fallback is decided at the pipeline's deadline; it must still find the client waiting."""
    clock = FakeClock()

    async def go() -> None:
        # One request per batch: it is produced before the POST returns.
        async with proxy(clock=clock, result_grace_ms=15, batch_max_requests=1) as (client, t, _p):
            r = await client.post("/v1/services/credit/requests", json={"amount": 3})
            url = r.json()["status_url"]
            [req] = t.produced(serde.Kind.REQUEST)
            assert req["deadline_ms"] == T0 + 100 - 15
            clock.now += 110  # past the pipeline's deadline plus grace, not the SLA's
            assert (await client.get(url)).status_code == 202
            t.inject_result(t.result_for(req, reason="fallback: champion late"))
            await asyncio.sleep(0)
            r = await client.get(url)
            assert r.status_code == 200 and r.json()["reason"] == "fallback: champion late"

    run(go())


def test_a_short_sla_gives_at_most_a_quarter_of_it_to_the_decision_lead() -> None:
    async def go() -> None:
        async with proxy(batch_max_requests=1) as (client, t, _p):
            await client.post("/v1/services/fast/requests", json={"x": 1})
            [req] = t.produced(serde.Kind.REQUEST)
            assert req["deadline_ms"] - req["received_ms"] == 20 - 5  # SLA 20 ms

    run(go())


def test_get_unknown_request_is_404() -> None:
    async def go() -> None:
        async with proxy() as (client, _, _p):
            r = await client.get("/v1/requests/nope123")
            assert r.status_code == 404
            err = error_of(r)
            assert err["code"] == "unknown_request"
            assert err["request_id"] == "nope123"

    run(go())


def test_result_for_another_replica_is_cached_and_served() -> None:
    async def go() -> None:
        async with proxy() as (client, t, p):
            other = {
                "request_id": "held-by-r2",
                "service": "credit",
                "received_ms": T0,
                "deadline_ms": T0 + 100,
                "reply_to": "r2",
            }
            t.inject_result(t.result_for(other, output=[1, 2], reason="champion"))
            await asyncio.sleep(0)
            assert "held-by-r2" in p.cache
            r = await client.get("/v1/requests/held-by-r2")
            assert r.status_code == 200
            assert r.json()["output"] == [1, 2]

    run(go())


def test_result_cache_is_bounded() -> None:
    async def go() -> None:
        async with proxy(cache_size=3) as (_client, t, p):
            for i in range(5):
                req = {
                    "request_id": f"r{i}",
                    "service": "credit",
                    "received_ms": T0,
                    "deadline_ms": T0 + 1,
                }
                t.inject_result(t.result_for(req))
            await asyncio.sleep(0)
            assert list(p.cache) == ["r2", "r3", "r4"]

    run(go())


# ---- input errors --------------------------------------------------------------------------
def test_unknown_service_is_404_listing_services() -> None:
    async def go() -> None:
        async with proxy() as (client, t, _):
            r = await client.post("/v1/services/nope/score", json={"amount": 1})
            assert r.status_code == 404
            err = error_of(r)
            assert err["code"] == "unknown_service"
            assert "credit, fast" in err["message"]
            r = await client.post("/v1/services/nope/requests", json={"amount": 1})
            assert r.status_code == 404
            assert t.records == []

    run(go())


def test_malformed_json_is_400_with_line_and_column() -> None:
    async def go() -> None:
        async with proxy() as (client, _, _p):
            r = await client.post(
                "/v1/services/credit/score",
                content=b'{\n  "amount": 1,,\n}',
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 400
            err = error_of(r)
            assert err["code"] == "bad_json"
            assert "line 2" in err["message"] and "column" in err["message"]
            r = await client.post("/v1/services/credit/score", content=b"")
            assert r.status_code == 400

    run(go())


def test_body_too_large_is_413_by_content_length_and_by_stream() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"amount": 1, "pad": "'
        for _ in range(10):
            yield b"x" * 100
        yield b'"}'

    async def go() -> None:
        async with proxy(max_body_bytes=512) as (client, _, _p):
            r = await client.post(
                "/v1/services/credit/score", content=b'{"amount": 1}' + b" " * 600
            )
            assert r.status_code == 413
            assert error_of(r)["code"] == "body_too_large"
            assert "RDV_PROXY_MAX_BODY_BYTES" in error_of(r)["message"]
            r = await client.post("/v1/services/credit/requests", content=chunks())
            assert "content-length" not in r.request.headers
            assert r.status_code == 413

    run(go())


def test_a_body_that_stops_arriving_is_408_and_closes_the_connection() -> None:
    async def stalls() -> AsyncIterator[bytes]:
        yield b'{"amount": '
        await asyncio.sleep(30)
        yield b"1}"

    async def go() -> None:
        async with proxy(body_timeout_ms=50) as (client, t, _p):
            for path in ("/v1/services/credit/score", "/v1/services/credit/requests"):
                loop = asyncio.get_running_loop()
                started = loop.time()
                r = await client.post(path, content=stalls(), headers={"X-Request-ID": "slow-1"})
                assert loop.time() - started < 5
                assert r.status_code == 408
                err = error_of(r)
                assert err["code"] == "request_timeout"
                assert err["request_id"] == "slow-1"
                assert "50 ms" in err["message"] and "11 bytes" in err["message"]
                assert "RDV_PROXY_BODY_TIMEOUT_MS" in err["message"]
                assert r.headers["connection"] == "close"
                assert r.headers["x-request-id"] == "slow-1"
            assert t.records == []

    run(go())


def test_a_body_in_pieces_within_the_timeout_is_read_whole() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for part in (b'{"amount"', b": 1", b"}"):
            await asyncio.sleep(0.01)
            yield part

    async def go() -> None:
        transport = InMemoryTransport(on_produce=answering(output=3))
        async with proxy(transport, body_timeout_ms=2000) as (client, _t, _p):
            r = await client.post("/v1/services/credit/score", content=pieces())
            assert r.status_code == 200
            assert r.json()["output"] == 3
            assert "connection" not in r.headers

    run(go())


def test_missing_field_is_422_naming_it() -> None:
    async def go() -> None:
        async with proxy() as (client, t, _):
            r = await client.post("/v1/services/credit/score", json={"age": 3})
            assert r.status_code == 422
            err = error_of(r)
            assert (err["code"], err["field"]) == ("schema", "amount")
            assert "'amount'" in err["message"] and "required" in err["message"]
            assert t.records == []

    run(go())


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"amount": "12"}, ["'amount'", "double", 'string "12"']),
        ({"amount": True}, ["'amount'", "double", "boolean"]),
        ({"amount": 1, "age": 2.5}, ["'age'", "long", "2.5"]),
        ({"amount": 1, "colour": "red"}, ["'colour'", "remove"]),
        ([1, 2], ["JSON object", "array"]),
    ],
)
def test_wrong_type_is_422(body: Any, words: list[str]) -> None:
    async def go() -> None:
        async with proxy() as (client, _, _p):
            r = await client.post("/v1/services/credit/score", json=body)
            assert r.status_code == 422
            message = error_of(r)["message"]
            for w in words:
                assert w in message

    run(go())


# ---- Kafka trouble -------------------------------------------------------------------------
def test_not_ready_is_503_on_readyz_and_on_post() -> None:
    async def go() -> None:
        async with proxy(InMemoryTransport(ready=False)) as (client, t, _):
            r = await client.get("/readyz")
            assert r.status_code == 503
            assert error_of(r)["code"] == "kafka_unavailable"
            r = await client.post("/v1/services/credit/score", json={"amount": 1})
            assert r.status_code == 503
            assert t.records == []
            t.set_ready(True)
            assert (await client.get("/readyz")).status_code == 200

    run(go())


def test_produce_failure_is_503() -> None:
    async def go() -> None:
        transport = InMemoryTransport()
        transport.fail_produce = "queue full"
        async with proxy(transport) as (client, _, p):
            r = await client.post("/v1/services/credit/score", json={"amount": 1})
            assert r.status_code == 503
            assert "queue full" in error_of(r)["message"]
            assert p.pending == {}

    run(go())


def test_delivery_failure_of_a_pending_sync_request_is_503() -> None:
    async def go() -> None:
        transport = InMemoryTransport()
        transport.fail_delivery = "broker said no"
        async with proxy(transport, result_grace_ms=5000) as (client, _, _p):
            r = await client.post("/v1/services/credit/score", json={"amount": 1})
            assert r.status_code == 503
            assert "broker said no" in error_of(r)["message"]
            r = await client.post("/v1/services/credit/requests", json={"amount": 1})
            assert r.status_code == 202
            # The batch leaves within the batch interval; its failure is reported after that.
            await asyncio.sleep(0.05)
            r = await client.get(r.json()["status_url"])
            assert r.status_code == 503

    run(go())


# ---- heartbeats, probes, metrics, docs -----------------------------------------------------
def test_heartbeats_go_to_every_topic_the_join_reads() -> None:
    async def go() -> None:
        async with proxy(tick_interval_ms=2, idle_tick_interval_ms=2) as (_client, t, _p):
            for _ in range(200):
                await asyncio.sleep(0.005)
                if len(t.records) >= 6:
                    break
            ticks = [r for r in t.records if r.topic in topics.HEARTBEAT]
            assert len(ticks) >= 6
            assert {r.topic for r in ticks} == set(topics.HEARTBEAT)
            for r in ticks:
                # an empty batch of the kind the topic holds, with no ID
                kind, batch_id, items = serde.decode_items(r.value)
                assert (kind, batch_id, items) == (topics.ITEM_KIND[r.topic], "", [])
                assert serde.is_heartbeat(r.value)
        assert t.closed

    run(go())


def test_heartbeats_slow_down_when_no_request_is_waiting() -> None:
    async def go() -> None:
        async with proxy(tick_interval_ms=2, idle_tick_interval_ms=200) as (client, t, _p):
            await asyncio.sleep(0.1)
            idle = len(t.records)
            # one tick at start, then the slow cadence: at most one more in 100 ms
            assert 1 <= idle // len(topics.HEARTBEAT) <= 2
            r = await client.post("/v1/services/credit/requests", json={"amount": 1})
            assert r.status_code == 202
            before = sum(1 for r in t.records if r.topic in topics.HEARTBEAT)
            await asyncio.sleep(0.25)  # the first slow sleep ends, then fast ticks follow
            after = sum(1 for r in t.records if r.topic in topics.HEARTBEAT)
            assert (after - before) // len(topics.HEARTBEAT) >= 10

    run(go())


def test_a_heartbeat_follows_each_deadline_at_once() -> None:
    """With the periodic heartbeat slow, a lone request's deadline still gets its own tick,
    stamped just past the deadline and never ahead of the clock."""

    async def go() -> None:
        async with proxy(tick_interval_ms=1000, idle_tick_interval_ms=1000) as (client, t, p):
            await asyncio.sleep(0.05)
            start = len(t.records)
            r = await client.post("/v1/services/credit/requests", json={"amount": 1})
            assert r.status_code == 202
            await asyncio.sleep(0)  # the batch leaves once the loop is done with the request
            request = t.produced(serde.Kind.REQUEST)[-1]
            deadline = request["deadline_ms"]
            await asyncio.sleep((deadline - p.clock()) / 1000 + 0.1)
            ticks = [r for r in t.records[start:] if r.topic in topics.HEARTBEAT]
            assert {r.topic for r in ticks} == set(topics.HEARTBEAT)
            assert len(ticks) == len(topics.HEARTBEAT)
            for r in ticks:
                assert serde.is_heartbeat(r.value)
                assert deadline + 1 <= r.timestamp_ms <= deadline + 60

    run(go())


def test_lifespan_starts_and_closes_the_transport() -> None:
    async def go() -> None:
        async with proxy() as (_client, t, _p):
            assert t.started and not t.closed
        assert t.closed

    run(go())


def test_healthz_openapi_and_docs() -> None:
    async def go() -> None:
        async with proxy() as (client, _, _p):
            r = await client.get("/healthz")
            assert r.status_code == 200 and r.json()["status"] == "ok"
            doc = (await client.get("/openapi.json")).json()
            assert doc["openapi"].startswith("3.")
            assert "/v1/services/credit/score" in doc["paths"]
            assert "/v1/services/fast/requests" in doc["paths"]
            assert "/v1/requests/{request_id}" in doc["paths"]
            schema = doc["components"]["schemas"]["credit_input"]
            assert schema["required"] == ["amount"]
            age = schema["properties"]["age"]
            # an integral number: 30 and 30.0 are both taken, 30.5 is not
            assert (age["type"], age["multipleOf"], age["default"], age["nullable"]) == (
                "number",
                1,
                40,
                True,
            )
            r = await client.get("/docs")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert 'id="swagger-ui"' in r.text and 'url: "/openapi.json"' in r.text
            # Swagger UI's own files come from the proxy, not from the Internet
            page = r.text
            for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
                assert f'"/docs/static/{asset}"' in page
                r = await client.get(f"/docs/static/{asset}")
                assert r.status_code == 200 and len(r.content) > 10_000, asset
            r = await client.get("/docs/static/nothing.js")
            assert r.status_code == 404 and error_of(r)["code"] == "not_found"
            r = await client.get("/v1/nothing")
            assert r.status_code == 404 and error_of(r)["code"] == "not_found"
            r = await client.get("/v1/services/credit/score")
            assert r.status_code == 405 and error_of(r)["code"] == "method_not_allowed"

    run(go())


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_has_request_counters_latency_and_pending() -> None:
    async def go() -> None:
        async with proxy(InMemoryTransport(on_produce=answering(output=1))) as (client, _, _p):
            await client.post("/v1/services/credit/score", json={"amount": 1})
            await client.post("/v1/services/credit/score", json={"amount": "x"})
            await client.post("/v1/services/zzz/score", json={})
            r = await client.get("/metrics")
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain")
            text = r.text
            assert "# TYPE rdv_proxy_requests_total counter" in text
            assert "# TYPE rdv_proxy_request_duration_seconds histogram" in text
            assert "# TYPE rdv_proxy_pending_requests gauge" in text
            samples = _samples(text)

            def value(name: str, **labels: str) -> float:
                return samples[(name, frozenset(labels.items()))]

            requests = "rdv_proxy_requests_total"
            assert value(requests, service="credit", endpoint="score", code="200") == 1
            assert value(requests, service="credit", endpoint="score", code="422") == 1
            assert value(requests, service="_unknown", endpoint="score", code="404") == 1
            duration = "rdv_proxy_request_duration_seconds"
            assert value(f"{duration}_bucket", service="credit", le="+Inf") == 1
            assert value(f"{duration}_bucket", service="credit", le="0.005") == 1
            assert value(f"{duration}_count", service="credit") == 1
            assert value("rdv_proxy_pending_requests") == 0
            assert value("rdv_proxy_cached_results") == 1
            assert value("rdv_proxy_ready") == 1
            assert value("rdv_proxy_results_total") == 1
            assert value("rdv_proxy_results_matched_total") == 1

    run(go())


def test_each_replica_has_its_own_metrics() -> None:
    async def go() -> None:
        async with proxy() as (one, _t1, _p1), proxy() as (two, _t2, _p2):
            await one.post("/v1/services/zzz/score", json={})
            first = _samples((await one.get("/metrics")).text)
            second = _samples((await two.get("/metrics")).text)
            key = (
                "rdv_proxy_requests_total",
                frozenset({"service": "_unknown", "endpoint": "score", "code": "404"}.items()),
            )
            assert first[key] == 1 and key not in second

    run(go())


def test_many_concurrent_sync_requests_each_get_their_own_answer() -> None:
    def hook(t: InMemoryTransport, record: Record) -> None:
        for req in serde.decode_items(record.value)[2]:
            t.inject_result(t.result_for(req, output=serde.from_json(req["payload"])["amount"]))

    async def go() -> None:
        async with proxy(InMemoryTransport(on_produce=hook)) as (client, _, p):
            responses = await asyncio.gather(
                *(client.post("/v1/services/credit/score", json={"amount": i}) for i in range(50))
            )
            assert [r.json()["output"] for r in responses] == [float(i) for i in range(50)]
            assert p.pending == {}

    run(go())


def test_past_the_admission_limit_requests_get_503_with_retry_after_at_once() -> None:
    async def go() -> None:
        async with proxy(admission_initial=2, result_grace_ms=5000) as (client, t, p):
            waiting = [
                asyncio.create_task(client.post("/v1/services/credit/score", json={"amount": i}))
                for i in range(2)
            ]
            await asyncio.sleep(0.05)
            r = await client.post("/v1/services/credit/score", json={"amount": 9})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            err = error_of(r)
            assert err["code"] == "overloaded" and "limit of 2" in err["message"]
            await asyncio.sleep(0.05)
            for req in t.produced(serde.Kind.REQUEST):  # answer the two admitted ones
                t.inject_result(t.result_for(req, output=1))
            assert [w.status_code for w in await asyncio.gather(*waiting)] == [200, 200]
            assert p.admission.in_flight == 0
            assert [r["payload"] for r in t.produced(serde.Kind.REQUEST)] == [
                '{"amount":0.0,"age":40,"region":null}',
                '{"amount":1.0,"age":40,"region":null}',
            ]

    run(go())


def test_a_body_that_is_not_sent_as_json_is_415_naming_the_header() -> None:
    async def go() -> None:
        async with proxy() as (client, t, _p):
            body = b'{"x": 1}'
            r = await client.post(
                "/v1/services/fast/score", content=body, headers={"content-type": "image/png"}
            )
            assert r.status_code == 415
            err = error_of(r)
            assert err["code"] == "unsupported_media_type"
            assert "'image/png' is not JSON" in err["message"]
            assert "Content-Type: application/json" in err["message"]
            r = await client.post(
                "/v1/services/fast/requests",
                content=body,
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            assert r.status_code == 415
            assert t.produced(serde.Kind.REQUEST) == []  # nothing reached the pipeline
            for kind in ("application/json; charset=utf-8", "application/merge-patch+json"):
                r = await client.post(
                    "/v1/services/fast/requests", content=body, headers={"content-type": kind}
                )
                assert r.status_code == 202, (kind, r.text)

    run(go())


def test_a_trailing_slash_is_a_json_404_not_a_redirect() -> None:
    async def go() -> None:
        async with proxy() as (client, _t, _p):
            r = await client.post("/v1/services/fast/score/", json={"x": 1})
            assert r.status_code == 404
            assert error_of(r)["code"] == "not_found"
            assert "POST /v1/services/fast/score/" in error_of(r)["message"]

    run(go())
