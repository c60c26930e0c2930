"""Quotas at the proxy: 429 with Retry-After and rate headers, GET /v1/usage, and the counts
this replica publishes and the other replicas' it reads."""

from __future__ import annotations

import asyncio

import pytest

from rendezvous import config, serde, topics
from rendezvous.access import keys
from rendezvous.access.log import MemoryKeyLog, MemoryUsageLog
from rendezvous.proxy import InMemoryTransport
from tests.proxy_harness import FakeClock, answering, error_of, proxy, run

pytestmark = pytest.mark.unit

HOUR = 3_600_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR  # on the hour


def make_key(requests: int | None = 3) -> tuple[str, dict]:
    budget = None if requests is None else keys.quota(requests, HOUR)
    return keys.new_key("ci", ["credit"], created_by="t@h", created_ms=T0, quota=budget)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_key_past_its_quota_gets_429_with_retry_after_until_the_window_ends() -> None:
    key, record = make_key(3)
    clock = FakeClock(T0 + HOUR - 90_500)  # 90.5 s before the window ends

    async def go() -> None:
        transport = InMemoryTransport(on_produce=answering(output=1))
        async with proxy(transport, clock, keys=MemoryKeyLog([record]), require_api_keys=True) as (
            client,
            t,
            _,
        ):
            remaining = []
            for path in ("score", "requests", "score"):
                r = await client.post(
                    f"/v1/services/credit/{path}", json={"amount": 1}, headers=bearer(key)
                )
                assert r.status_code in (200, 202), r.text
                assert r.headers["x-ratelimit-limit"] == "3"
                assert r.headers["x-ratelimit-reset"] == "91"
                remaining.append(r.headers["x-ratelimit-remaining"])
            assert remaining == ["2", "1", "0"]
            r = await client.post(
                "/v1/services/credit/score", json={"amount": 1}, headers=bearer(key)
            )
            assert r.status_code == 429
            err = error_of(r)
            assert err["code"] == "quota_exceeded" and "3 requests per 1h" in err["message"]
            assert r.headers["retry-after"] == "91" and r.headers["x-ratelimit-remaining"] == "0"
            await asyncio.sleep(0)
            assert len(t.produced(serde.Kind.REQUEST)) == 3  # the refused one was not sent
            # GET /v1/usage is not counted
            body = (await client.get("/v1/usage", headers=bearer(key))).json()
            assert body["quota"] == {
                "requests": 3,
                "period_ms": HOUR,
                "window_start_ms": T0,
                "window_end_ms": T0 + HOUR,
                "used": 3,
                "remaining": 0,
                "unit": "requests",
            }
            assert body["costs"] == {"credit": 1}
            assert body["key_id"] == record["key_id"] and body["services"] == ["credit"]
            clock.now = T0 + HOUR  # the next window
            r = await client.post(
                "/v1/services/credit/score", json={"amount": 1}, headers=bearer(key)
            )
            assert r.status_code == 200 and r.headers["x-ratelimit-remaining"] == "2"

    run(go())


def test_a_key_without_a_quota_has_no_rate_headers() -> None:
    key, record = make_key(None)

    async def go() -> None:
        transport = InMemoryTransport(on_produce=answering(output=1))
        async with proxy(transport, keys=MemoryKeyLog([record]), require_api_keys=True) as (
            client,
            _,
            _p,
        ):
            r = await client.post(
                "/v1/services/credit/score", json={"amount": 1}, headers=bearer(key)
            )
            assert r.status_code == 200 and "x-ratelimit-limit" not in r.headers
            body = (await client.get("/v1/usage", headers=bearer(key))).json()
            assert body["quota"] is None

    run(go())


def test_usage_needs_a_key_and_is_not_found_without_access_control() -> None:
    async def go() -> None:
        async with proxy() as (client, _, _p):
            r = await client.get("/v1/usage")
            assert r.status_code == 404 and error_of(r)["code"] == "not_found"
            assert "RDV_PROXY_REQUIRE_API_KEYS" in error_of(r)["message"]
        _, record = make_key()
        async with proxy(keys=MemoryKeyLog([record]), require_api_keys=True) as (client, _, _p):
            r = await client.get("/v1/usage")
            assert r.status_code == 401 and "www-authenticate" in r.headers

    run(go())


def test_counts_are_published_and_the_other_replicas_counts_are_summed_in() -> None:
    key, record = make_key(5)
    clock = FakeClock(T0 + 1000)
    usage = MemoryUsageLog()

    async def go() -> None:
        transport = InMemoryTransport(on_produce=answering(output=1))
        async with proxy(
            transport,
            clock,
            keys=MemoryKeyLog([record]),
            usage=usage,
            require_api_keys=True,
            usage_interval_ms=10,
        ) as (client, t, p):
            for _ in range(2):
                r = await client.post(
                    "/v1/services/credit/score", json={"amount": 1}, headers=bearer(key)
                )
                assert r.status_code == 200
            for _ in range(100):  # the reporter runs every 10 ms of the loop's time
                published = [
                    serde.decode_as(serde.Kind.USAGE, x.value)
                    for x in t.records
                    if x.topic == topics.USAGE
                ]
                if published:
                    break
                await asyncio.sleep(0.01)
            assert published[-1] == {
                "key_id": record["key_id"],
                "replica_id": "r1",
                "window_start_ms": T0,
                "window_end_ms": T0 + HOUR,
                "count": 2,
                "at_ms": T0 + 1000,
            }
            assert [x.key for x in t.records if x.topic == topics.USAGE][-1] == (
                f"{record['key_id']}/r1".encode()
            )
            # another replica admitted 2 of the key's requests in this window
            usage.publish({**published[-1], "replica_id": "r2", "count": 2})
            r = await client.get("/v1/usage", headers=bearer(key))
            assert r.json()["quota"]["used"] == 4
            r = await client.post(
                "/v1/services/credit/score", json={"amount": 1}, headers=bearer(key)
            )
            assert r.status_code == 200 and r.headers["x-ratelimit-remaining"] == "0"
            r = await client.post(
                "/v1/services/credit/score", json={"amount": 1}, headers=bearer(key)
            )
            assert r.status_code == 429
            assert p.gate.quota.sums == {(record["key_id"], T0): 2}

    run(go())


def test_a_replica_is_not_ready_before_it_has_read_the_usage() -> None:
    key, record = make_key()

    class Silent(MemoryUsageLog):
        def follow(self, on_record, on_caught_up, on_problem):
            return super().follow(on_record, lambda: None, on_problem)

    async def go() -> None:
        async with proxy(keys=MemoryKeyLog([record]), usage=Silent(), require_api_keys=True) as (
            client,
            _,
            _p,
        ):
            assert (await client.get("/readyz")).status_code == 503
            r = await client.post(
                "/v1/services/credit/score", json={"amount": 1}, headers=bearer(key)
            )
            assert r.status_code == 503 and error_of(r)["code"] == "keys_unavailable"

    run(go())


WEIGHTED = config.parse(
    {
        "services": {
            "heavy": {
                "sla_ms": 100,
                "models": [
                    {
                        "name": "gbm",
                        "role": "champion",
                        "callable": "udfs.rules:approve",
                        "quota_weight": 5,
                    },
                    {"name": "rules", "role": "backstop", "callable": "udfs.rules:approve"},
                    {
                        "name": "big",
                        "role": "challenger",
                        "callable": "udfs.rules:approve",
                        "quota_weight": 20,
                        "sample": 0.5,
                        "sample_key": "customer",
                    },
                    {"name": "seen", "role": "decoy"},
                ],
                "input": {"amount": "double", "customer": {"type": "string", "required": False}},
            },
            "light": {
                "sla_ms": 100,
                "models": [{"name": "m", "role": "champion", "callable": "udfs.rules:approve"}],
                "input": {"amount": "double"},
            },
        }
    }
)


def customers() -> tuple[str, str]:
    """A customer the sampled model ``big`` scores, and one it skips."""
    big = WEIGHTED.services["heavy"].model("big").sampling
    names = [f"c{i}" for i in range(100)]
    taken = next(c for c in names if big.takes("any", {"customer": c}))
    skipped = next(c for c in names if not big.takes("any", {"customer": c}))
    return taken, skipped


def test_a_weighted_service_charges_its_models_weights_and_refuses_what_does_not_fit() -> None:
    key, record = keys.new_key(
        "ci", ["heavy", "light"], created_by="t@h", created_ms=T0, quota=keys.quota(40, HOUR)
    )
    taken, skipped = customers()
    clock = FakeClock(T0 + 1000)

    async def go() -> None:
        transport = InMemoryTransport(on_produce=answering(output=1))
        async with proxy(
            transport, clock, keys=MemoryKeyLog([record]), require_api_keys=True, services=WEIGHTED
        ) as (client, t, _p):

            async def post(service: str, body: dict) -> object:
                return await client.post(
                    f"/v1/services/{service}/score", json=body, headers=bearer(key)
                )

            # gbm 5 + rules 1, and big 20 for a customer it samples; the decoy is free
            r = await post("heavy", {"amount": 1, "customer": taken})
            assert r.status_code == 200, r.text
            assert r.headers["x-ratelimit-cost"] == "26"
            assert (r.headers["x-ratelimit-limit"], r.headers["x-ratelimit-remaining"]) == (
                "40",
                "14",
            )
            r = await post("heavy", {"amount": 1, "customer": skipped})
            assert r.status_code == 200 and r.headers["x-ratelimit-cost"] == "6"
            assert r.headers["x-ratelimit-remaining"] == "8"
            # a service without weights costs 1, and says nothing of a cost
            r = await post("light", {"amount": 1})
            assert r.status_code == 200 and r.headers["x-ratelimit-remaining"] == "7"
            assert "x-ratelimit-cost" not in r.headers
            # 26 does not fit in 7: refused, nothing counted, what is left in the headers
            r = await post("heavy", {"amount": 1, "customer": taken})
            assert r.status_code == 429 and r.headers["x-ratelimit-remaining"] == "7"
            assert r.headers["x-ratelimit-cost"] == "26" and "retry-after" in r.headers
            message = error_of(r)["message"]
            assert "costs 26 tokens" in message and "has 7 left" in message
            assert "40 tokens per 1h" in message
            # a bad body is charged 1, as any request refused before its cost is known
            r = await post("heavy", {"amount": "a lot"})
            assert r.status_code == 422 and r.headers["x-ratelimit-remaining"] == "6"
            # 6 fits exactly
            r = await post("heavy", {"amount": 1})
            assert r.status_code == 200 and r.headers["x-ratelimit-remaining"] == "0"
            r = await post("light", {"amount": 1})
            assert (
                r.status_code == 429
                and "has used its quota of 40 tokens" in (error_of(r)["message"])
            )
            await asyncio.sleep(0)
            assert len(t.produced(serde.Kind.REQUEST)) == 4  # the refused ones were not sent
            body = (await client.get("/v1/usage", headers=bearer(key))).json()
            assert body["quota"]["used"] == 40 and body["quota"]["unit"] == "tokens"
            assert body["costs"] == {"heavy": 26, "light": 1}

    run(go())


def test_a_request_costing_more_than_the_whole_quota_says_so() -> None:
    key, record = keys.new_key(
        "ci", ["heavy"], created_by="t@h", created_ms=T0, quota=keys.quota(5, HOUR)
    )

    async def go() -> None:
        async with proxy(keys=MemoryKeyLog([record]), require_api_keys=True, services=WEIGHTED) as (
            client,
            t,
            p,
        ):
            r = await client.post(
                "/v1/services/heavy/requests", json={"amount": 1}, headers=bearer(key)
            )
            assert r.status_code == 429 and r.headers["x-ratelimit-remaining"] == "5"
            assert "more than the whole quota" in error_of(r)["message"]
            assert p.gate.quota.used(record, p.clock())[0] == 0

    run(go())
