"""Enrichment steps on realistic features, and model-input records from requests: expiry
before enrichment, failures as an error field plus a dead letter."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from rendezvous import config, serde
from rendezvous.enrich import Enricher, EnrichError, to_model_input
from rendezvous.policy import Policy

pytestmark = pytest.mark.unit

POLICY = Policy(preference=("m",), sla_ms=100, grace_ms=0, version=1)


def request(received: int = 1_000) -> dict:
    return {
        "request_id": "r",
        "service": "s",
        "received_ms": received,
        "deadline_ms": received + 100,
        "payload": serde.to_json({"x": 1.0}),
        "reply_to": "p",
    }


class Identity:
    spec = config.ServiceSpec(
        name="s",
        sla_ms=100,
        grace_ms=0,
        models=(config.ModelSpec("m", "champion", callable="udfs.zoo:constant"),),
        preference=("m",),
        input_fields=None,
        input_from_model=None,
        enrich=(),
    )

    def apply(self, features):
        return features


def test_a_request_in_time_is_enriched():
    record, dead = to_model_input(request(), POLICY, Identity(), now_ms=1_050)
    assert record["error"] is None and dead is None
    assert serde.from_json(record["features"]) == {"x": 1.0}


def test_a_request_past_its_deadline_is_not_scored_and_not_a_dead_letter():
    record, dead = to_model_input(request(), POLICY, Identity(), now_ms=1_140)
    assert record["error"].startswith("deadline_exceeded: ") and "40 ms" in record["error"]
    assert dead is None


def test_a_request_exactly_at_its_deadline_is_still_enriched():
    record, dead = to_model_input(request(), POLICY, Identity(), now_ms=1_100)
    assert record["error"] is None and dead is None


# ---- the steps -------------------------------------------------------------------------

REGIONS = """\
region,country,risk,avg_income
north,SE,0.12,41000
south,IT,0.31,28500
7,PT,0.25,19000
"""

CREDIT = """
services:
  credit:
    sla_ms: 100
    models:
      - {name: gbm, role: champion, callable: "udfs.zoo:constant"}
    input:
      amount: double
      region: string
      age: {type: long, required: false}
    enrich:
%s
"""


def enricher(tmp_path: Path, *steps: str) -> Enricher:
    """The ``credit`` service with ``steps`` (YAML flow mappings), as the enrich job builds it:
    parsed from the configuration file, lookup tables read from the file's folder."""
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "regions.csv").write_text(REGIONS)
    text = CREDIT % "\n".join(f"      - {s}" for s in steps)
    spec = config.parse(yaml.safe_load(text)).services["credit"]
    return Enricher(spec, tmp_path)


def test_rename_moves_a_field_and_ignores_a_request_without_it(tmp_path):
    e = enricher(tmp_path, "{op: rename, from: amt, to: amount}")
    assert e.apply({"amt": 250.0, "region": "north"}) == {"amount": 250.0, "region": "north"}
    assert e.apply({"amount": 9.0}) == {"amount": 9.0}


def test_default_fills_in_an_omitted_or_null_field_and_keeps_a_given_one(tmp_path):
    e = enricher(tmp_path, "{op: default, field: age, value: 40}")
    assert e.apply({"amount": 1.0}) == {"amount": 1.0, "age": 40}
    assert e.apply({"amount": 1.0, "age": None}) == {"amount": 1.0, "age": 40}
    assert e.apply({"amount": 1.0, "age": 0}) == {"amount": 1.0, "age": 0}  # 0 is a value


def test_a_default_of_null_is_kept_as_null(tmp_path):
    e = enricher(tmp_path, "{op: default, field: age, value: null}")
    assert e.apply({"amount": 1.0}) == {"amount": 1.0, "age": None}


def test_drop_removes_a_field_present_or_not(tmp_path):
    e = enricher(tmp_path, "{op: drop, field: region}")
    assert e.apply({"amount": 1.0, "region": "north"}) == {"amount": 1.0}
    assert e.apply({"amount": 1.0}) == {"amount": 1.0}


def test_log1p_writes_to_its_target_or_in_place(tmp_path):
    to = enricher(tmp_path, "{op: log1p, field: amount, to: log_amount}")
    assert to.apply({"amount": 99}) == {"amount": 99, "log_amount": math.log1p(99)}
    in_place = enricher(tmp_path, "{op: log1p, field: amount}")
    assert in_place.apply({"amount": 0.0}) == {"amount": 0.0}
    assert in_place.apply({"amount": -0.5}) == {"amount": math.log1p(-0.5)}


@pytest.mark.parametrize("value", [-1, -1.0, -7.5])
def test_log1p_of_minus_one_or_less_is_an_error_naming_the_step_and_value(tmp_path, value):
    e = enricher(tmp_path, "{op: rename, from: amt, to: amount}", "{op: log1p, field: amount}")
    with pytest.raises(EnrichError) as err:
        e.apply({"amount": value})
    assert str(err.value) == f"enrich[1] (log1p): log1p needs amount > -1, got {float(value)}"


def test_scale_multiplies_by_its_factor(tmp_path):
    e = enricher(tmp_path, "{op: scale, field: amount, factor: 0.001, to: amount_k}")
    assert e.apply({"amount": 2500}) == {"amount": 2500, "amount_k": pytest.approx(2.5)}
    in_place = enricher(tmp_path, "{op: scale, field: amount, factor: -2}")
    assert in_place.apply({"amount": 3}) == {"amount": -6.0}


@pytest.mark.parametrize(
    ("features", "got"),
    [
        ({}, "None"),
        ({"amount": None}, "None"),
        ({"amount": "12"}, "'12'"),
        ({"amount": True}, "True"),
    ],
)
@pytest.mark.parametrize("op", ["log1p", "scale"])
def test_arithmetic_on_a_missing_or_non_numeric_field_is_an_error(tmp_path, op, features, got):
    extra = ", factor: 2" if op == "scale" else ""
    e = enricher(tmp_path, f"{{op: {op}, field: amount{extra}}}")
    with pytest.raises(EnrichError) as err:
        e.apply(features)
    assert str(err.value) == f"enrich[0] ({op}): field 'amount' must be a number, got {got}"


def test_lookup_adds_the_rows_columns_with_their_types_and_prefix(tmp_path):
    e = enricher(tmp_path, "{op: lookup, key: region, table: data/regions.csv, prefix: region_}")
    assert e.apply({"amount": 1.0, "region": "south"}) == {
        "amount": 1.0,
        "region": "south",
        "region_country": "IT",  # text stays text
        "region_risk": 0.31,  # float
        "region_avg_income": 28500,  # int
    }


def test_lookup_matches_a_numeric_key_against_the_tables_text(tmp_path):
    e = enricher(tmp_path, "{op: lookup, key: region, table: data/regions.csv}")
    got = e.apply({"region": 7})
    assert got == {"region": 7, "country": "PT", "risk": 0.25, "avg_income": 19000}


def test_lookup_on_another_column_of_the_table(tmp_path):
    e = enricher(
        tmp_path,
        "{op: lookup, key: country, table: data/regions.csv, table_key: country, prefix: c_}",
    )
    got = e.apply({"country": "SE"})
    assert got == {"country": "SE", "c_region": "north", "c_risk": 0.12, "c_avg_income": 41000}


def test_a_lookup_with_no_row_uses_its_missing_columns(tmp_path):
    e = enricher(
        tmp_path,
        "{op: lookup, key: region, table: data/regions.csv, prefix: r_,"
        " missing: {country: '??', risk: 0.5}}",
    )
    got = e.apply({"region": "east"})
    assert got == {"region": "east", "r_country": "??", "r_risk": 0.5}


def test_a_lookup_with_no_row_and_no_missing_columns_is_an_error_naming_key_and_table(tmp_path):
    e = enricher(
        tmp_path,
        "{op: default, field: age, value: 40}",
        "{op: lookup, key: region, table: data/regions.csv}",
    )
    with pytest.raises(EnrichError) as err:
        e.apply({"region": "east"})
    assert str(err.value) == "enrich[1] (lookup): no row for region='east' in data/regions.csv"
    with pytest.raises(EnrichError, match=r"no row for region=None in data/regions.csv"):
        e.apply({"amount": 1.0})


def test_lookup_tables_are_read_once_when_the_enricher_is_built(tmp_path):
    e = enricher(tmp_path, "{op: lookup, key: region, table: data/regions.csv}")
    (tmp_path / "data" / "regions.csv").unlink()
    assert e.apply({"region": "north"})["country"] == "SE"


def test_a_missing_lookup_table_fails_when_the_enricher_is_built(tmp_path):
    spec = config.parse(
        yaml.safe_load(CREDIT % "      - {op: lookup, key: region, table: data/nowhere.csv}")
    ).services["credit"]
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        Enricher(spec, tmp_path)


def test_steps_apply_in_order_each_seeing_what_the_ones_before_wrote(tmp_path):
    e = enricher(
        tmp_path,
        "{op: rename, from: amt, to: amount}",
        "{op: default, field: amount, value: 0}",
        "{op: log1p, field: amount, to: log_amount}",
        "{op: scale, field: log_amount, factor: 2, to: twice}",
        "{op: lookup, key: region, table: data/regions.csv, prefix: region_}",
        "{op: drop, field: region}",
    )
    features = {"amt": math.e - 1, "region": "north"}
    got = e.apply(features)
    assert got == {
        "amount": math.e - 1,
        "log_amount": pytest.approx(1.0),
        "twice": pytest.approx(2.0),
        "region_country": "SE",
        "region_risk": 0.12,
        "region_avg_income": 41000,
    }
    assert features == {"amt": math.e - 1, "region": "north"}  # the input is left as it was
    assert e.apply({"region": "south"})["log_amount"] == 0.0  # the default, then log1p


def test_a_service_with_no_steps_passes_the_features_through(tmp_path):
    spec = config.parse(yaml.safe_load(CREDIT.replace("    enrich:\n%s\n", ""))).services["credit"]
    assert Enricher(spec, tmp_path).apply({"amount": 3.5}) == {"amount": 3.5}


# ---- model-input records and dead letters ----------------------------------------------


def test_the_model_input_record_carries_the_request_the_features_and_the_policy(tmp_path):
    e = enricher(tmp_path, "{op: log1p, field: amount, to: log_amount}")
    req = {**request(), "payload": serde.to_json({"amount": 0.0, "region": "north"})}
    record, dead = to_model_input(req, POLICY, e, now_ms=1_020)
    assert dead is None
    assert record == {
        "request_id": "r",
        "service": "s",
        "received_ms": 1_000,
        "deadline_ms": 1_100,
        "features": serde.to_json({"amount": 0.0, "region": "north", "log_amount": 0.0}),
        "payload": req["payload"],
        "enriched_ms": 1_020,
        "reply_to": "p",
        "policy": {"preference": ["m"], "sla_ms": 100, "grace_ms": 0, "version": 1},
        "error": None,
        "arm": None,
        "unsampled": [],
    }
    assert serde.decode_as(serde.Kind.MODEL_INPUT, serde.encode(serde.Kind.MODEL_INPUT, record))


def test_a_request_without_reply_to_gets_an_empty_one():
    req = request()
    del req["reply_to"]
    record, _ = to_model_input(req, POLICY, Identity(), now_ms=1_000)
    assert record["reply_to"] == ""


def assert_dead_letter(dead: dict, req: dict, error: str, at_ms: int) -> None:
    assert dead == {
        "request_id": req["request_id"],
        "service": req["service"],
        "stage": "enrich",
        "error": error,
        "record": serde.encode(serde.Kind.REQUEST, req),
        "at_ms": at_ms,
    }
    assert serde.decode_as(serde.Kind.REQUEST, dead["record"]) == req  # the request as it came
    decoded = serde.decode_as(serde.Kind.DEAD_LETTER, serde.encode(serde.Kind.DEAD_LETTER, dead))
    assert decoded == dead


def test_a_failed_step_answers_with_its_error_and_writes_a_dead_letter(tmp_path):
    e = enricher(tmp_path, "{op: lookup, key: region, table: data/regions.csv}")
    req = {**request(), "payload": serde.to_json({"amount": 5.0, "region": "atlantis"})}
    record, dead = to_model_input(req, POLICY, e, now_ms=1_010)
    error = "enrich[0] (lookup): no row for region='atlantis' in data/regions.csv"
    assert record["error"] == error
    assert record["features"] == req["payload"]  # unenriched: the request as received
    assert record["policy"] == POLICY.to_record() and record["enriched_ms"] == 1_010
    assert_dead_letter(dead, req, error, at_ms=1_010)


def test_a_service_the_job_has_no_enricher_for_is_an_error_and_a_dead_letter():
    req = request()
    record, dead = to_model_input(req, POLICY, None, now_ms=1_001)
    assert record["error"] == (
        "service 's' is not defined on this cluster; submit the configuration file that "
        "defines it (`rendezvous submit --config FILE`)"
    )
    assert_dead_letter(dead, req, record["error"], at_ms=1_001)


def test_an_expired_request_of_an_unknown_service_is_only_expired():
    record, dead = to_model_input(request(), POLICY, None, now_ms=1_101)
    assert record["error"].startswith("deadline_exceeded: ") and "1 ms" in record["error"]
    assert dead is None


@pytest.mark.parametrize(
    "payload",
    ['{"amount": 1.0', "[1, 2]", '"text"', "null"],
    ids=["truncated JSON", "a list", "a string", "null"],
)
def test_a_payload_that_is_not_a_json_object_is_an_error_and_a_dead_letter(tmp_path, payload):
    e = enricher(tmp_path, "{op: default, field: age, value: 40}")
    req = {**request(), "payload": payload}
    record, dead = to_model_input(req, POLICY, e, now_ms=1_000)
    assert record["error"] and record["features"] == payload
    assert_dead_letter(dead, req, record["error"], at_ms=1_000)
