"""API keys at the proxy: 401, 403 and 503 before the keys are read, over a key log in memory."""

from __future__ import annotations

import asyncio

import pytest

from rendezvous import serde, topics
from rendezvous.access import keys
from rendezvous.access.log import MemoryKeyLog, MemoryUsageLog
from rendezvous.proxy import InMemoryTransport
from rendezvous.proxy.access import Gate
from rendezvous.proxy.errors import KeysUnavailable, Unauthorized
from tests.proxy_harness import T0, FakeClock, answering, error_of, proxy, run

pytestmark = pytest.mark.unit


def make_key(services=("credit",), name="ci") -> tuple[str, dict]:
    return keys.new_key(name, services, created_by="t@h", created_ms=T0)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_access_is_off_by_default_and_then_no_key_is_asked_for() -> None:
    async def go() -> None:
        async with proxy(InMemoryTransport(on_produce=answering(output=1))) as (client, _, p):
            assert p.gate is None
            r = await client.post("/v1/services/credit/score", json={"amount": 1})
            assert r.status_code == 200, r.text

    run(go())


def test_a_valid_key_scores_and_submits_for_its_services() -> None:
    key, record = make_key(("credit",))
    log = MemoryKeyLog([record])

    async def go() -> None:
        hook = answering(output=1)
        async with proxy(
            InMemoryTransport(on_produce=hook), keys=log, require_api_keys=True, batch_interval_ms=0
        ) as (client, t, _):
            r = await client.post(
                "/v1/services/credit/score", json={"amount": 1}, headers=bearer(key)
            )
            assert r.status_code == 200, r.text
            r = await client.post(
                "/v1/services/credit/requests", json={"amount": 2}, headers=bearer(key)
            )
            assert r.status_code == 202, r.text
            await asyncio.sleep(0)  # the batch leaves once the loop is done with the request
            assert len(t.produced(serde.Kind.REQUEST)) == 2
            # the scheme is case-insensitive
            r = await client.post(
                "/v1/services/credit/score",
                json={"amount": 3},
                headers={"authorization": f"bearer {key}"},
            )
            assert r.status_code == 200, r.text

    run(go())


@pytest.mark.parametrize(
    ("headers", "error", "mentions"),
    [
        ({}, None, "no API key"),
        ({"Authorization": "Basic dXNlcjpwdw=="}, "invalid_token", "not 'Bearer <key>'"),
        ({"Authorization": "Bearer"}, "invalid_token", "not 'Bearer <key>'"),
        ({"Authorization": "Bearer " + "x" * 300}, "invalid_token", "not 'Bearer <key>'"),
        ({"Authorization": "Bearer rdv_0123456789ab_" + "y" * 43}, "invalid_token", "not known"),
    ],
)
def test_no_key_or_an_unknown_one_is_401_with_www_authenticate(headers, error, mentions) -> None:
    _, record = make_key()

    async def go() -> None:
        async with proxy(keys=MemoryKeyLog([record]), require_api_keys=True) as (client, t, _):
            for path in ("score", "requests"):
                r = await client.post(
                    f"/v1/services/credit/{path}", json={"amount": 1}, headers=headers
                )
                assert r.status_code == 401, r.text
                err = error_of(r)
                assert err["code"] == "unauthorized" and mentions in err["message"]
                challenge = r.headers["www-authenticate"]
                assert challenge.startswith('Bearer realm="rendezvous"')
                assert (f'error="{error}"' in challenge) if error else ("error=" not in challenge)
            r = await client.get("/v1/requests/abc", headers=headers)
            assert r.status_code == 401
            assert t.produced(serde.Kind.REQUEST) == []

    run(go())


def test_a_revoked_key_is_refused_as_soon_as_the_revocation_is_read() -> None:
    key, record = make_key()
    log = MemoryKeyLog([record])

    async def go() -> None:
        hook = answering(output=1)
        transport = InMemoryTransport(on_produce=hook)
        async with proxy(transport, keys=log, require_api_keys=True) as (client, _, _p):
            r = await client.post(
                "/v1/services/credit/score", json={"amount": 1}, headers=bearer(key)
            )
            assert r.status_code == 200
            log.publish(keys.revoked(record, revoked_by="t@h", revoked_ms=T0 + 1))
            r = await client.post(
                "/v1/services/credit/score", json={"amount": 1}, headers=bearer(key)
            )
            assert r.status_code == 401
            assert (
                "was revoked" in error_of(r)["message"]
                and record["key_id"] in error_of(r)["message"]
            )
            assert 'error="invalid_token"' in r.headers["www-authenticate"]
            # a key made after the replica started is taken at once
            fresh, fresh_record = make_key()
            log.publish(fresh_record)
            r = await client.post(
                "/v1/services/credit/score", json={"amount": 1}, headers=bearer(fresh)
            )
            assert r.status_code == 200

    run(go())


def test_a_service_outside_the_keys_scope_is_403_and_names_the_scope() -> None:
    key, record = make_key(("fast",), name="fast-only")

    async def go() -> None:
        async with proxy(keys=MemoryKeyLog([record]), require_api_keys=True) as (client, t, _):
            for service in ("credit", "no-such-service"):
                r = await client.post(
                    f"/v1/services/{service}/score", json={"amount": 1}, headers=bearer(key)
                )
                assert r.status_code == 403, r.text  # a scoped key does not learn what exists
                err = error_of(r)
                assert err["code"] == "forbidden"
                assert "may call fast, not" in err["message"] and "fast-only" in err["message"]
                assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
            assert t.produced(serde.Kind.REQUEST) == []

    run(go())


def test_the_status_of_a_request_needs_a_key_for_its_service() -> None:
    credit, credit_record = make_key(("credit",))
    fast, fast_record = make_key(("fast",))

    async def go() -> None:
        log = MemoryKeyLog([credit_record, fast_record])
        async with proxy(keys=log, require_api_keys=True) as (client, t, _):
            r = await client.post(
                "/v1/services/credit/requests", json={"amount": 1}, headers=bearer(credit)
            )
            rid = r.json()["request_id"]
            assert (
                await client.get(f"/v1/requests/{rid}", headers=bearer(credit))
            ).status_code == 202
            r = await client.get(f"/v1/requests/{rid}", headers=bearer(fast))
            assert r.status_code == 403 and error_of(r)["code"] == "forbidden"
            await asyncio.sleep(0)
            [req] = t.produced(serde.Kind.REQUEST)
            t.inject_result(t.result_for(req, output=1))
            await asyncio.sleep(0)
            assert (
                await client.get(f"/v1/requests/{rid}", headers=bearer(credit))
            ).status_code == 200
            assert (
                await client.get(f"/v1/requests/{rid}", headers=bearer(fast))
            ).status_code == 403
            # an id not known here: nothing to check but the key
            r = await client.get("/v1/requests/unknown-1", headers=bearer(fast))
            assert r.status_code == 404

    run(go())


def test_health_metrics_and_docs_stay_open() -> None:
    _, record = make_key()

    async def go() -> None:
        async with proxy(keys=MemoryKeyLog([record]), require_api_keys=True) as (client, _, _p):
            for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
                r = await client.get(path)
                assert r.status_code == 200, (path, r.text)
            doc = (await client.get("/openapi.json")).json()
            assert "apiKey" in doc["components"]["securitySchemes"]

    run(go())


class SilentLog(MemoryKeyLog):
    """A key log that is never caught up with (a broker that does not answer)."""

    def follow(self, on_record, on_caught_up, on_problem):
        on_problem("topic rdv.api-keys not found on 127.0.0.1:9092")
        return super().follow(on_record, lambda: None, on_problem)


def test_before_the_keys_are_read_the_replica_is_not_ready_and_answers_503() -> None:
    key, record = make_key()

    async def go() -> None:
        async with proxy(keys=SilentLog([record]), require_api_keys=True) as (client, t, _):
            r = await client.get("/readyz")
            assert r.status_code == 503 and error_of(r)["code"] == "keys_unavailable"
            assert "rdv.api-keys not found" in error_of(r)["message"]
            r = await client.post(
                "/v1/services/credit/score", json={"amount": 1}, headers=bearer(key)
            )
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert error_of(r)["code"] == "keys_unavailable"
            assert (await client.get("/healthz")).status_code == 200
            assert t.produced(serde.Kind.REQUEST) == []

    run(go())


def test_the_gate_hashes_a_key_once_and_looks_it_up_by_digest(monkeypatch) -> None:
    key, record = make_key()
    gate = Gate(replica_id="r1", key_log=MemoryKeyLog([record]), usage_log=MemoryUsageLog())
    with pytest.raises(KeysUnavailable):
        gate.authenticate(f"Bearer {key}")
    gate.ring.apply(record["key_id"], record)
    gate._read(gate.key_topic)
    with pytest.raises(KeysUnavailable):  # the usage is not read yet either
        gate.authenticate(f"Bearer {key}")
    gate._read(gate.usage_topic)
    hashed = []
    real = keys.digest
    monkeypatch.setattr(keys, "digest", lambda k: hashed.append(k) or real(k))
    for _ in range(3):
        assert gate.check(f"Bearer {key}", "credit", T0) is None  # no quota
    assert hashed == [key]
    with pytest.raises(Unauthorized):
        gate.check("Bearer " + key[:-1] + ("A" if key[-1] != "A" else "B"), "credit", T0)


def test_a_label_needs_a_key_for_the_requests_service() -> None:
    credit, credit_record = make_key(("credit",))
    fast, fast_record = make_key(("fast",), name="fast-only")
    clock = FakeClock()

    async def go() -> None:
        log = MemoryKeyLog([credit_record, fast_record])
        transport = InMemoryTransport(on_produce=answering(clock, output={"label": 1}))
        async with proxy(transport, clock, keys=log, require_api_keys=True) as (client, t, _):
            r = await client.post(
                "/v1/services/credit/score",
                json={"amount": 1},
                headers={**bearer(credit), "x-request-id": "q1"},
            )
            assert r.status_code == 200, r.text
            url = "/v1/requests/q1/feedback"
            assert (await client.post(url, json={"label": 0})).status_code == 401
            wrong = await client.post(url, json={"label": 0}, headers=bearer(fast))
            assert wrong.status_code == 403 and "may call fast, not 'credit'" in wrong.text
            assert [r for r in t.records if r.topic == topics.FEEDBACK] == []
            right = await client.post(url, json={"label": 0}, headers=bearer(credit))
            assert right.status_code == 202, right.text
            assert len([r for r in t.records if r.topic == topics.FEEDBACK]) == 1

    run(go())
