"""What a request costs from its API key's quota: 1 without quota weights, else the weights of
the models that score it (the decoy and the sampled shadows that skip it cost nothing); the
configuration errors of a weight; a budget charged in tokens."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from rendezvous import config
from rendezvous.access import keys
from rendezvous.access.cost import REQUESTS, TOKENS, Cost, costs, unit
from rendezvous.access.quota import QuotaBook
from rendezvous.enrich import assign
from rendezvous.errors import ConfigError
from rendezvous.policy import initial

pytestmark = pytest.mark.unit

HOUR = 3_600_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR


def service(*models: dict[str, Any], version: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "services": {
            "credit": {
                "sla_ms": 100,
                "models": list(models),
                "input": {"amount": "double", "customer": {"type": "string", "required": False}},
            }
        }
    }
    if version is not None:
        data["version"] = version
    return data


def model(name: str, role: str = "challenger", **extra: Any) -> dict[str, Any]:
    out = {"name": name, "role": role, **extra}
    if role != "decoy":
        out["callable"] = "udfs.rules:approve"
    return out


def spec_of(*models: dict[str, Any]) -> config.ServiceSpec:
    return config.parse(service(*models)).services["credit"]


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        config.parse(data, source="f.yaml")
    assert str(err.value).startswith("f.yaml: ")  # the error names the file, then the field
    return [str(p) for p in err.value.problems]


# ---- the cost of a request --------------------------------------------------------------------
def test_without_any_weight_a_request_costs_one_whatever_its_models() -> None:
    spec = spec_of(
        model("gbm", "champion"),
        model("lr", "canary"),
        model("shadow", sample=0.5),
        model("seen", "decoy"),
    )
    cost = Cost.of(spec)
    assert not cost.weighted and cost.most == 1 and cost.describe() == "1 per request"
    assert {cost.of_request(f"r{i}", {"amount": 1.0}) for i in range(50)} == {1}


def test_a_request_costs_the_weights_of_its_scoring_models_and_one_for_each_without() -> None:
    spec = spec_of(
        model("gbm", "champion", quota_weight=5),
        model("lr", "canary"),  # no weight: 1
        model("rules", "backstop", quota_weight=2),
        model("seen", "decoy"),  # scores nothing: free
    )
    cost = Cost.of(spec)
    assert cost.weighted and cost.most == 8
    assert cost.of_request("any", {"amount": 1.0}) == 8
    assert cost.describe() == "gbm 5 + lr 1 + rules 2"


def test_a_sampled_shadow_costs_its_weight_only_for_the_requests_it_samples() -> None:
    spec = spec_of(
        model("gbm", "champion", quota_weight=2),
        model("big", quota_weight=10, sample=0.3),
    )
    cost = Cost.of(spec)
    assert cost.most == 12 and cost.describe() == "gbm 2 + big 10 (sampled)"
    policy = initial(spec)
    seen = set()
    for i in range(400):
        rid = f"req-{i}"
        # the enrich job's own decision: the models that will not score the request
        _, skipped = assign(spec, policy, rid, {"amount": 1.0})
        expected = 2 + (0 if "big" in skipped else 10)
        assert cost.of_request(rid, {"amount": 1.0}) == expected
        seen.add(expected)
    assert seen == {2, 12}  # both happen: some requests sampled, some not


def test_a_sample_keyed_by_a_field_is_decided_by_the_body_and_missing_means_not_sampled() -> None:
    spec = spec_of(
        model("gbm", "champion", quota_weight=1),
        model("big", quota_weight=4, sample=0.5, sample_key="customer"),
    )
    cost, policy = Cost.of(spec), initial(spec)
    assert cost.of_request("r1", {"amount": 1.0}) == 1  # no customer: not sampled
    prices = set()
    for i in range(100):
        body = {"amount": 1.0, "customer": f"c{i}"}
        _, skipped = assign(spec, policy, "same-id", body)
        price = cost.of_request("same-id", body)
        assert price == (1 if "big" in skipped else 5)
        # the same customer always costs the same, whatever the request ID
        assert cost.of_request(f"other-{i}", body) == price
        prices.add(price)
    assert prices == {1, 5}


def test_costs_of_a_configuration_by_service() -> None:
    data = service(model("gbm", "champion", quota_weight=3))
    data["services"]["plain"] = copy.deepcopy(data["services"]["credit"])
    del data["services"]["plain"]["models"][0]["quota_weight"]
    by_name = costs(config.parse(data).services.values())
    assert {n: (c.weighted, c.most) for n, c in by_name.items()} == {
        "credit": (True, 3),
        "plain": (False, 1),
    }


def test_the_unit_is_tokens_when_a_service_of_the_scope_has_weights() -> None:
    assert unit(["credit"], []) == REQUESTS
    assert unit(["credit"], ["fraud"]) == REQUESTS
    assert unit(["credit", "fraud"], ["fraud"]) == TOKENS
    assert unit([keys.ALL_SERVICES], ["fraud"]) == TOKENS
    _, record = keys.new_key(
        "ci", ["fraud"], created_by="t", created_ms=T0, quota=keys.quota(100, HOUR)
    )
    assert keys.quota_text(record, TOKENS) == "100 tokens per 1h"
    assert keys.quota_text(record) == "100 requests per 1h"


# ---- configuration errors ---------------------------------------------------------------------
@pytest.mark.parametrize("weight", [0, -3, "5", 2.5, True, "heavy"])
def test_a_weight_that_is_not_a_whole_number_of_tokens_names_its_field(weight: Any) -> None:
    data = service(model("gbm", "champion", quota_weight=weight))
    assert problems(data) == [
        "services.credit.models[0].quota_weight: expected a whole number of tokens "
        f">= 1, got {weight!r}"
    ]


def test_a_weight_on_the_decoy_is_an_error() -> None:
    data = service(model("gbm", "champion"), model("seen", "decoy", quota_weight=2))
    assert problems(data) == [
        "services.credit.models[1].quota_weight: a decoy scores nothing, so no request "
        "is charged for it; remove quota_weight"
    ]


def test_a_misspelt_weight_is_an_unknown_key_with_the_nearest_one() -> None:
    data = service(model("gbm", "champion", quota_weigth=2))
    assert problems(data) == [
        "services.credit.models[0].quota_weigth: unknown key; did you mean `quota_weight`?"
    ]


def test_a_weight_needs_format_version_5() -> None:
    data = service(model("gbm", "champion", quota_weight=2), version=4)
    assert problems(data) == [
        "services.credit.models[0].quota_weight: `quota_weight` was introduced in "
        "format version 5; this file declares version: 4; set version: 5 or remove the key"
    ]
    assert config.parse({**data, "version": 5}).services["credit"].models[0].quota_weight == 2


# ---- a budget in tokens -----------------------------------------------------------------------
def test_a_request_costing_more_than_is_left_is_refused_and_not_counted() -> None:
    book = QuotaBook("r1")
    _, record = keys.new_key(
        "ci", ["credit"], created_by="t", created_ms=T0, quota=keys.quota(10, HOUR)
    )
    first = book.take(record, T0, 6, say_cost=True)
    assert first is not None and (first.allowed, first.remaining) == (True, 4)
    assert first.headers(T0)["x-ratelimit-cost"] == "6"
    refused = book.take(record, T0 + 1, 6, say_cost=True)
    assert refused is not None and (refused.allowed, refused.remaining) == (False, 4)
    assert refused.headers(T0 + 1)["retry-after"] == "3600"
    assert book.used(record, T0 + 2) == (6, T0, T0 + HOUR)  # nothing counted for it
    # a cheaper request still fits, and uses the budget up exactly
    last = book.take(record, T0 + 3, 4)
    assert last is not None and (last.allowed, last.remaining) == (True, 0)
    assert "x-ratelimit-cost" not in last.headers(T0 + 3)
    assert not book.take(record, T0 + 4, 1).allowed
    [usage] = book.report(T0 + 5)
    assert usage["count"] == 10
