"""Policies: the record, the configuration's version 0, promotion, and the history of versions."""

from __future__ import annotations

import pytest
import yaml

from rendezvous import config, policy, serde
from rendezvous.errors import ConfigError, RendezvousError
from rendezvous.policy import Change, Policy, PolicyBook

pytestmark = pytest.mark.unit

CONFIG = """
services:
  credit:
    sla_ms: 200
    grace_ms: 500
    models:
      - {name: champ, role: champion, callable: "udfs.zoo:constant"}
      - {name: shadow, role: challenger, callable: "udfs.zoo:constant"}
      - {name: backstop, role: backstop, callable: "udfs.zoo:constant"}
      - {name: decoy, role: decoy}
    input:
      x: double
  fraud:
    sla_ms: 50
    models:
      - {name: rules, role: champion, callable: "udfs.zoo:constant"}
    input:
      x: double
"""
CFG = config.parse(yaml.safe_load(CONFIG))
V0 = Policy(preference=("champ", "backstop"), sla_ms=200, grace_ms=500, version=0)


def rules(p: Policy) -> tuple:
    """What a policy decides with: everything but its version."""
    return p.preference, p.sla_ms, p.grace_ms


def record(service: str, version: int, preference=("champ",), issued_ms: int = 1) -> dict:
    return Change(Policy(tuple(preference), 200, 500, version), issued_ms, "t").to_control(service)


# ---- the policy record -------------------------------------------------------------------


def test_the_initial_policy_is_the_configurations_as_version_0():
    assert policy.initial(CFG.service("credit")) == V0  # the challenger is a shadow


def test_a_control_record_round_trips_through_avro():
    change = Change(V0, 1_764_000_000_000, "ops@host")
    kind, decoded = serde.decode(serde.encode(serde.Kind.CONTROL, change.to_control("credit")))
    assert kind == serde.Kind.CONTROL and decoded["service"] == "credit"
    assert Change.from_control(decoded) == change


def test_promote_puts_the_model_first_keeps_the_rest_in_order_and_bumps_the_version():
    spec = CFG.service("credit")
    assert policy.promote(spec, V0, "backstop") == Policy(("backstop", "champ"), 200, 500, 1)
    assert policy.promote(spec, V0, "shadow", sla_ms=300) == Policy(
        ("shadow", "champ", "backstop"), 300, 500, 1
    )


def test_a_decoy_or_an_unknown_model_cannot_be_promoted():
    spec = CFG.service("credit")
    with pytest.raises(RendezvousError, match="decoy is the decoy of credit; a decoy cannot"):
        policy.promote(spec, V0, "decoy")
    with pytest.raises(ConfigError, match="service 'credit' has no model 'nn'"):
        policy.promote(spec, V0, "nn")


def test_the_policy_book_takes_only_newer_versions():
    book = PolicyBook(CFG)
    assert book.get("credit") == V0 and book.get("nope") is None
    assert book.apply(record("credit", 2)) is True
    assert book.apply(record("credit", 2, preference=("backstop",))) is False
    assert book.apply(record("credit", 1)) is False
    assert book.get("credit").preference == ("champ",)
    assert book.apply(record("other", 0)) is True  # a service it was not configured with


# ---- the history -------------------------------------------------------------------------


def test_the_history_is_version_0_then_the_records_that_took_effect_in_topic_order():
    records = [
        record("credit", 1, issued_ms=10),
        record("fraud", 1, issued_ms=11),
        record("credit", 3, issued_ms=12),
        record("credit", 2, issued_ms=13),  # stale: the jobs ignore it, so does the history
        record("credit", 3, preference=("backstop",), issued_ms=14),  # a clash: the first wins
        record("gone", 5, issued_ms=15),  # not configured
        record("credit", 4, issued_ms=16),
    ]
    credit = policy.histories(CFG, records)["credit"]
    assert credit.versions == (0, 1, 3, 4)
    assert [c.issued_ms for c in credit.changes] == [None, 10, 12, 16]
    assert credit.changes[0].issued_by == policy.FROM_CONFIGURATION
    assert credit.current.policy.version == 4
    assert policy.histories(CFG, records)["fraud"].versions == (0, 1)
    assert set(policy.histories(CFG, records)) == {"credit", "fraud"}


def test_the_history_agrees_with_the_policy_book():
    records = [record("credit", v, preference=(f"m{v}",)) for v in (1, 5, 2, 6, 6, 3)]
    book = PolicyBook(CFG)
    for r in records:
        book.apply(r)
    assert policy.histories(CFG, records)["credit"].current.policy == book.get("credit")
