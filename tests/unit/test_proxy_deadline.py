"""Per-request deadlines: ``X-Deadline-Ms`` tightens the SLA into the request record, the
proxy's own cut-off and the answer's headers; a looser one is capped, a bad one refused."""

from __future__ import annotations

import asyncio
import time

import pytest

from rendezvous import serde
from rendezvous.proxy import InMemoryTransport
from rendezvous.proxy.errors import BadDeadline
from rendezvous.proxy.parsing import MAX_DEADLINE_MS, Deadline, deadline
from tests.proxy_harness import T0, FakeClock, answering, error_of, proxy, run

pytestmark = pytest.mark.unit

CREDIT_SLA = 100  # the credit service of the harness's configuration
LEAD = 15  # ProxySettings.decision_lead_ms


def test_deadline_takes_a_tighter_value_and_caps_a_looser_one() -> None:
    assert deadline(None, 100) == Deadline(100) and Deadline(100).headers() is None
    assert deadline("40", 100) == Deadline(40, 40)
    assert deadline(" 40 ", 100).ms == 40
    assert deadline("100", 100).headers() == {"x-deadline-ms": "100"}
    capped = deadline("250", 100)
    assert (capped.ms, capped.requested, capped.capped) == (100, 250, True)
    assert capped.headers() == {"x-deadline-ms": "100", "x-deadline-capped": "true"}
    assert deadline(str(MAX_DEADLINE_MS), 100).ms == 100


@pytest.mark.parametrize(
    "value", ["", "0", "-5", "1.5", "abc", "1e3", "٣", "+7", str(MAX_DEADLINE_MS + 1), "9" * 5000]
)
def test_deadline_refuses_what_is_not_a_whole_number_of_at_least_one_ms(value: str) -> None:
    with pytest.raises(BadDeadline) as caught:
        deadline(value, 100)
    assert "X-Deadline-Ms" in caught.value.message and "from 1 to 100" in caught.value.message
    assert caught.value.status == 400 and caught.value.code == "bad_deadline"


def test_a_tighter_deadline_goes_into_the_request_record_and_the_answer_says_so() -> None:
    clock = FakeClock()
    hook = answering(clock, 3, output=1)

    async def go() -> None:
        async with proxy(InMemoryTransport(on_produce=hook), clock) as (client, t, _):
            r = await client.post(
                "/v1/services/credit/score", json={"amount": 1}, headers={"X-Deadline-Ms": "40"}
            )
            assert r.status_code == 200, r.text
            assert r.headers["x-deadline-ms"] == "40" and "x-deadline-capped" not in r.headers
            [req] = t.produced(serde.Kind.REQUEST)
            # decision_lead_ms is at most a quarter of the request's own deadline
            assert req["deadline_ms"] == T0 + 40 - 10
            r = await client.post(
                "/v1/services/credit/score", json={"amount": 2}, headers={"X-Deadline-Ms": "80"}
            )
            assert t.produced(serde.Kind.REQUEST)[1]["deadline_ms"] == clock.now - 3 + 80 - LEAD

    run(go())


def test_a_looser_deadline_is_capped_at_the_sla_and_the_answer_says_so() -> None:
    clock = FakeClock()

    async def go() -> None:
        hook = answering(clock, 3, output=1)
        async with proxy(InMemoryTransport(on_produce=hook), clock) as (client, t, _):
            r = await client.post(
                "/v1/services/credit/score", json={"amount": 1}, headers={"X-Deadline-Ms": "5000"}
            )
            assert r.status_code == 200, r.text
            assert r.headers["x-deadline-ms"] == str(CREDIT_SLA)
            assert r.headers["x-deadline-capped"] == "true"
            [req] = t.produced(serde.Kind.REQUEST)
            assert req["deadline_ms"] == T0 + CREDIT_SLA - LEAD
            # without the header: the SLA, and no deadline headers
            r = await client.post("/v1/services/credit/score", json={"amount": 2})
            assert r.status_code == 200 and "x-deadline-ms" not in r.headers
            assert t.produced(serde.Kind.REQUEST)[1]["deadline_ms"] == T0 + 3 + CREDIT_SLA - LEAD

    run(go())


@pytest.mark.parametrize("path", ["score", "requests"])
def test_a_bad_deadline_is_400_naming_the_header_and_its_range_before_anything_is_sent(
    path: str,
) -> None:
    async def go() -> None:
        async with proxy() as (client, t, _):
            r = await client.post(
                f"/v1/services/credit/{path}", json={"amount": 1}, headers={"X-Deadline-Ms": "soon"}
            )
            assert r.status_code == 400
            err = error_of(r)
            assert err["code"] == "bad_deadline"
            assert "X-Deadline-Ms 'soon'" in err["message"] and "from 1 to 100" in err["message"]
            assert err["request_id"] == r.headers["x-request-id"]
            assert t.produced(serde.Kind.REQUEST) == []

    run(go())


def test_the_proxy_gives_up_by_the_tighter_deadline_not_the_sla() -> None:
    async def go() -> None:
        async with proxy(result_grace_ms=10) as (client, _t, p):
            limit = p.admission.limit
            t0 = time.monotonic()
            r = await client.post(
                "/v1/services/credit/score", json={"amount": 1}, headers={"X-Deadline-Ms": "5"}
            )
            elapsed = time.monotonic() - t0
            assert r.status_code == 504
            assert error_of(r)["code"] == "deadline_exceeded"
            assert "5 ms from X-Deadline-Ms, SLA 100 ms" in error_of(r)["message"]
            assert r.headers["x-deadline-ms"] == "5"
            # 5 ms + 10 ms grace; the SLA would have been 110 ms
            assert elapsed < (CREDIT_SLA + 10) / 1000, elapsed
            # a client's own tight deadline missed does not cut everyone's admission limit
            assert p.admission.limit == limit and p.admission.in_flight == 0
            r = await client.post("/v1/services/fast/score", json={"x": 1})
            assert r.status_code == 504 and p.admission.limit < limit  # an SLA missed does

    run(go())


def test_an_async_request_expires_by_its_tighter_deadline() -> None:
    clock = FakeClock()

    async def go() -> None:
        async with proxy(clock=clock, result_grace_ms=10) as (client, t, p):
            r = await client.post(
                "/v1/services/credit/requests", json={"amount": 1}, headers={"X-Deadline-Ms": "30"}
            )
            assert r.status_code == 202 and r.headers["x-deadline-ms"] == "30"
            rid = r.json()["request_id"]
            await asyncio.sleep(0)  # the batch leaves once the loop is done with the request
            [req] = t.produced(serde.Kind.REQUEST)
            assert req["deadline_ms"] == T0 + 30 - 7
            await asyncio.sleep(0)  # and Kafka's acknowledgement of it
            assert p.unconfirmed == set()
            assert p.accepted[rid].expires_ms == T0 + 30 + 10
            clock.now = T0 + 40
            assert (await client.get(f"/v1/requests/{rid}")).status_code == 202
            clock.now = T0 + 41
            r = await client.get(f"/v1/requests/{rid}")
            assert r.status_code == 504 and error_of(r)["code"] == "deadline_exceeded"

    run(go())


def _policy(version: int, sla_ms: int, grace_ms: int = 500) -> dict:
    return {
        "service": "credit",
        "policy": {"preference": ["a"], "sla_ms": sla_ms, "grace_ms": grace_ms, "version": version},
        "issued_ms": T0,
        "issued_by": "test",
        "split": None,
    }


def test_the_sla_of_the_policy_in_force_sets_the_deadline() -> None:
    """A promotion with another SLA (a control record of a higher version) changes the
    deadline of the requests accepted after it; an older version read later changes nothing."""
    from rendezvous.proxy.policies import MemoryPolicyLog

    clock = FakeClock()
    policies = MemoryPolicyLog([_policy(1, 60)])

    async def go() -> None:
        transport = InMemoryTransport(on_produce=answering(clock, 3, output=1))
        async with proxy(transport, clock, policies=policies) as (client, t, p):
            assert (await client.get("/readyz")).status_code == 200
            r = await client.post("/v1/services/credit/score", json={"amount": 1})
            assert r.status_code == 200, r.text
            policies.publish(_policy(3, 200))
            policies.publish(_policy(2, 30))  # older than the one in force: ignored
            r = await client.post("/v1/services/credit/score", json={"amount": 2})
            assert r.status_code == 200, r.text
            first, second = t.produced(serde.Kind.REQUEST)
            assert first["deadline_ms"] == T0 + 60 - LEAD
            assert second["deadline_ms"] == T0 + 3 + 200 - LEAD
            assert p.policies.version("credit") == 3
            assert p.policies.spec("credit").grace_ms == 500

    run(go())


def test_a_replica_that_has_not_read_the_policies_is_not_ready() -> None:
    from rendezvous.proxy.policies import MemoryPolicyLog

    class Unread(MemoryPolicyLog):
        def follow(self, on_record, on_caught_up, on_problem):
            return super().follow(on_record, lambda: None, on_problem)

    async def go() -> None:
        async with proxy(InMemoryTransport(), FakeClock(), policies=Unread()) as (client, _, p):
            r = await client.get("/readyz")
            assert r.status_code == 503 and "rdv.control" in r.text, r.text
            assert not p.ready()
            p.policies.on_caught_up()
            assert (await client.get("/readyz")).status_code == 200

    run(go())


def test_without_a_policy_record_the_configuration_sla_holds() -> None:
    from rendezvous.proxy.policies import MemoryPolicyLog

    clock = FakeClock()

    async def go() -> None:
        transport = InMemoryTransport(on_produce=answering(clock, 3, output=1))
        async with proxy(transport, clock, policies=MemoryPolicyLog()) as (client, t, p):
            r = await client.post("/v1/services/credit/score", json={"amount": 1})
            assert r.status_code == 200, r.text
            [req] = t.produced(serde.Kind.REQUEST)
            assert req["deadline_ms"] == T0 + CREDIT_SLA - LEAD
            assert p.policies.version("credit") is None

    run(go())
