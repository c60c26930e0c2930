"""Policies and their history: promotion, undo and restore, on an in-memory control log."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from rendezvous import cli, config, control, policy, serde
from rendezvous.errors import ConfigError, PolicyError, RendezvousError
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


class Clock:
    """Issue times for successive changes, one second apart."""

    def __init__(self) -> None:
        self.ms = 1_764_000_000_000

    def issued(self) -> dict:
        self.ms += 1_000
        return {"issued_by": "ops@host", "issued_ms": self.ms}


@pytest.fixture
def log() -> control.MemoryControl:
    return control.MemoryControl()


@pytest.fixture
def clock() -> Clock:
    return Clock()


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


def test_the_control_topic_keeps_every_version():
    from rendezvous import topics
    from rendezvous.stack.kafka import _topic_config

    assert _topic_config(topics.CONTROL)["retention.ms"] == "-1"


def test_the_history_agrees_with_the_policy_book():
    records = [record("credit", v, preference=(f"m{v}",)) for v in (1, 5, 2, 6, 6, 3)]
    book = PolicyBook(CFG)
    for r in records:
        book.apply(r)
    assert policy.histories(CFG, records)["credit"].current.policy == book.get("credit")


# ---- promote, undo, restore --------------------------------------------------------------


def test_promote_then_undo_restores_the_exact_policy_under_a_new_version(log, clock):
    promoted = control.promote(log, CFG, "credit", "shadow", sla_ms=150, **clock.issued())
    assert promoted == Policy(("shadow", "champ", "backstop"), 150, 500, 1)
    earlier, undone = control.undo(log, CFG, "credit", **clock.issued())
    assert earlier == 0
    assert undone == Policy(V0.preference, V0.sla_ms, V0.grace_ms, version=2)
    assert control.current_policy(log, CFG, "credit") == undone
    assert [r["policy"]["version"] for r in log.read()] == [1, 2]
    assert log.read()[-1]["issued_by"] == "ops@host"


def test_promoting_the_champion_back_leaves_the_challenger_in_the_order_undo_does_not(log, clock):
    control.promote(log, CFG, "credit", "shadow", **clock.issued())
    back = control.promote(log, CFG, "credit", "champ", **clock.issued())
    assert back.preference == ("champ", "shadow", "backstop")  # no longer a shadow

    fresh = control.MemoryControl()
    control.promote(fresh, CFG, "credit", "shadow", **clock.issued())
    _, undone = control.undo(fresh, CFG, "credit", **clock.issued())
    assert "shadow" not in undone.preference
    assert rules(undone) == rules(V0)


def test_undo_twice_brings_back_what_the_first_undo_replaced(log, clock):
    promoted = control.promote(log, CFG, "credit", "shadow", **clock.issued())
    control.undo(log, CFG, "credit", **clock.issued())
    earlier, again = control.undo(log, CFG, "credit", **clock.issued())
    assert earlier == 1 and again.version == 3
    assert rules(again) == rules(promoted)


def test_to_version_restores_that_versions_policy_under_a_new_version(log, clock):
    v1 = control.promote(log, CFG, "credit", "shadow", **clock.issued())
    control.promote(log, CFG, "credit", "backstop", sla_ms=80, **clock.issued())
    control.promote(log, CFG, "credit", "champ", **clock.issued())
    restored = control.restore(log, CFG, "credit", 1, **clock.issued())
    assert restored.version == 4 and rules(restored) == rules(v1)
    restored = control.restore(log, CFG, "credit", 0, **clock.issued())
    assert restored.version == 5 and rules(restored) == rules(V0)
    assert control.history(log, CFG, "credit").versions == (0, 1, 2, 3, 4, 5)


def test_to_the_current_version_publishes_nothing(log, clock):
    current = control.promote(log, CFG, "credit", "shadow", **clock.issued())
    assert control.restore(log, CFG, "credit", 1, **clock.issued()) == current
    assert len(log.read()) == 1


def test_undo_with_no_earlier_version_is_an_error_naming_the_service(log, clock):
    with pytest.raises(PolicyError, match="^credit: nothing to undo;"):
        control.undo(log, CFG, "credit", **clock.issued())
    assert log.read() == []


def test_an_unknown_version_is_an_error_listing_the_known_ones(log, clock):
    control.promote(log, CFG, "credit", "shadow", **clock.issued())
    with pytest.raises(PolicyError, match="credit has no policy version 7; its versions are 0, 1"):
        control.restore(log, CFG, "credit", 7, **clock.issued())


def test_changes_of_one_service_leave_the_others_alone(log, clock):
    control.promote(log, CFG, "credit", "shadow", **clock.issued())
    with pytest.raises(PolicyError, match="fraud: nothing to undo"):
        control.undo(log, CFG, "fraud", **clock.issued())
    with pytest.raises(ConfigError, match="unknown service 'debit'"):
        control.undo(log, CFG, "debit", **clock.issued())


def test_a_decoy_is_refused_before_anything_is_read():
    class Unreadable(control.MemoryControl):
        def read(self):
            raise AssertionError("read the control log")

    with pytest.raises(RendezvousError, match="a decoy cannot answer requests"):
        control.promote(Unreadable(), CFG, "credit", "decoy", issued_by="t", issued_ms=1)


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("promote"), st.sampled_from(["champ", "shadow", "backstop"])),
        st.tuples(st.just("undo"), st.none()),
        st.tuples(st.just("restore"), st.integers(0, 12)),
    ),
    max_size=12,
)


@given(OPS)
def test_any_sequence_of_changes_keeps_versions_increasing_and_undo_exact(ops):
    log, clock = control.MemoryControl(), Clock()
    for op, arg in ops:
        before = control.history(log, CFG, "credit")
        try:
            if op == "promote":
                control.promote(log, CFG, "credit", arg, **clock.issued())
            elif op == "undo":
                _, new = control.undo(log, CFG, "credit", **clock.issued())
                assert rules(new) == rules(before.changes[-2].policy)
            else:
                new = control.restore(log, CFG, "credit", arg, **clock.issued())
                assert rules(new) == rules(before.version(arg).policy)
        except PolicyError:
            assert op != "promote"
        after = control.history(log, CFG, "credit")
        assert after.changes[: len(before.changes)] == before.changes
        assert len(after.changes) - len(before.changes) in (0, 1)
    versions = control.history(log, CFG, "credit").versions
    assert list(versions) == list(range(len(versions)))


# ---- the command line --------------------------------------------------------------------


@pytest.fixture
def run(tmp_path, monkeypatch, log, capsys):
    """``run(*argv)``: the CLI on the configuration above and an in-memory control log;
    returns the exit code, stdout and stderr."""
    path = tmp_path / "services.yaml"
    path.write_text(CONFIG)
    monkeypatch.setenv("RDV_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(control, "KafkaControl", lambda bootstrap: log)
    monkeypatch.setattr(cli, "_issuer", lambda: "ops@host")

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main([*argv, "--config", str(path)])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_cli_promote_undo_and_to_version(run, log, registry):
    code, out, _ = run("promote", "credit", "shadow")
    assert code == 0
    assert out == (
        "credit: preference shadow > champ > backstop, SLA 200 ms (policy version 1); "
        "applies to requests accepted from now on\n"
        "MLflow: promotion run run1 in experiment rendezvous-promotions\n"
    )
    code, out, _ = run("promote", "--undo", "credit")
    assert code == 0
    assert out.startswith(
        "credit: preference champ > backstop, SLA 200 ms (restored policy version 0 as version 2)"
    )
    code, out, _ = run("promote", "--to-version", "1", "credit")
    assert code == 0 and "(restored policy version 1 as version 3)" in out
    code, out, _ = run("promote", "--to-version", "3", "credit")
    assert code == 0 and "policy version 3 is the current one" in out and "nothing" in out
    assert [r["policy"]["version"] for r in log.read()] == [1, 2, 3]
    assert {r["issued_by"] for r in log.read()} == {"ops@host"}
    # one promotion run per change; callables have no registry alias to move
    assert [(r["params"]["from_model"], r["params"]["to_model"]) for r in registry.runs] == [
        ("champ", "shadow"),
        ("shadow", "champ"),
        ("champ", "shadow"),
    ]
    assert registry.aliases == {} and "alias_moved" not in registry.runs[0]["params"]
    assert run("promote", "credit", "champ", "--no-mlflow")[0] == 0
    assert len(registry.runs) == 3


def test_cli_undo_with_nothing_to_undo_exits_1_naming_the_service(run, log):
    code, out, err = run("promote", "--undo", "fraud")
    assert (code, out) == (1, "")
    assert err.startswith("error: fraud: nothing to undo;")
    code, _, err = run("promote", "--to-version", "4", "fraud")
    assert code == 1 and "fraud has no policy version 4; its versions are 0" in err
    assert log.read() == []


def test_cli_promote_keeps_its_errors(run, log):
    code, _, err = run("promote", "credit", "decoy")
    assert code == 2 and "decoy is the decoy of credit" in err
    code, _, err = run("promote", "debit", "champ")
    assert code == 2 and "unknown service 'debit'" in err


@pytest.mark.parametrize(
    "argv",
    [
        ("promote", "credit"),
        ("promote", "credit", "shadow", "--undo"),
        ("promote", "--undo", "--to-version", "0", "credit"),
        ("promote", "--undo", "credit", "--sla-ms", "100"),
    ],
)
def test_cli_promote_needs_a_model_or_a_way_back_not_both(run, log, argv):
    with pytest.raises(SystemExit) as raised:
        run(*argv)
    assert raised.value.code == 2 and log.read() == []


def test_cli_models_shows_each_services_history_oldest_first_with_the_current_marked(run, log):
    promoted = Policy(("shadow", "champ", "backstop"), 200, 500, 1)
    log.publish(Change(promoted, 1_764_590_400_000, "alice@box").to_control("credit"))
    undone = Policy(V0.preference, 200, 500, 2)
    log.publish(Change(undone, 1_764_594_000_000, "bob@laptop").to_control("credit"))
    code, out, _ = run("models")
    assert code == 0
    lines = out.splitlines()
    start = lines.index("  policy history (UTC):")
    assert lines[start + 1 : start + 4] == [
        "    v0    -                    configuration  "
        "preference champ > backstop, SLA 200 ms, grace 500 ms",
        "    v1    2025-12-01 12:00:00  alice@box      "
        "preference shadow > champ > backstop, SLA 200 ms, grace 500 ms",
        "    v2    2025-12-01 13:00:00  bob@laptop     "
        "preference champ > backstop, SLA 200 ms, grace 500 ms  (current)",
    ]
    assert lines[0] == "credit: SLA 200 ms, preference champ > backstop (v2)"
    assert "  shadow           challenger  rank -   udfs.zoo:constant" in lines
    assert lines[-4:] == [
        "fraud: SLA 50 ms, preference rules (v0)",
        "  rules            champion    rank 1   udfs.zoo:constant",
        "  policy history (UTC):",
        "    v0    -                    configuration  "
        "preference rules, SLA 50 ms, grace 2000 ms  (current)",
    ]


def test_cli_split_sets_weights_as_a_policy_version_and_undo_takes_them_back(run, log):
    code, out, _ = run("split", "credit", "champ=90,shadow=10", "--key", "x")
    assert code == 0
    assert out == (
        "credit: preference champ > backstop, SLA 200 ms, split by x: champ=90, shadow=10 "
        "(policy version 1); applies to requests accepted from now on\n"
    )
    code, out, _ = run("split", "credit", "champ=50,shadow=50")  # the key stays
    assert code == 0 and "split by x: champ=50, shadow=50 (policy version 2)" in out
    [first, second] = log.read()
    assert second["split"] == {
        "key": "x",
        "arms": [{"model": "champ", "weight": 50.0}, {"model": "shadow", "weight": 50.0}],
    }
    assert second["policy"]["preference"] == first["policy"]["preference"] == ["champ", "backstop"]
    code, out, _ = run("promote", "--undo", "credit")
    assert code == 0 and "split by x: champ=90, shadow=10" in out
    code, out, _ = run("split", "--off", "credit")
    assert code == 0 and "split" not in out.split("(")[0] and "(policy version 4)" in out
    code, out, _ = run("models")
    assert code == 0 and "v1" in out and "champ=90, shadow=10" in out


def test_cli_split_errors_name_the_fix(run, log):
    code, _, err = run("split", "credit", "champ=1")
    assert code == 1 and "has no split yet; name the request field" in err and "--key" in err
    code, _, err = run("split", "credit", "champ=1", "--key", "amount")
    assert code == 1 and "--key amount: not one of the input fields of credit (x)" in err
    code, _, err = run("split", "credit", "decoy=1", "--key", "x")
    assert code == 2 and "decoy is the decoy of credit" in err
    code, _, err = run("split", "credit", "nope=1", "--key", "x")
    assert code == 2 and "has no model 'nope'" in err
    code, _, err = run("split", "--off", "credit")
    assert code == 1 and "credit has no split to remove" in err
    assert log.read() == []


@pytest.mark.parametrize(
    "argv",
    [
        ("split", "credit"),
        ("split", "credit", "champ=1", "--off"),
        ("split", "credit", "champ=0", "--key", "x"),
        ("split", "credit", "champ", "--key", "x"),
        ("split", "--off", "credit", "--key", "x"),
    ],
)
def test_cli_split_needs_arms_or_off_and_positive_weights(run, log, argv):
    with pytest.raises(SystemExit) as raised:
        run(*argv)
    assert raised.value.code == 2 and log.read() == []
