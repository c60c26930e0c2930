"""The registry follows the policy: where ``@champion`` goes after each change of first
choice, decided by how the new first choice names its model."""

from __future__ import annotations

import io
import threading
import time
from types import SimpleNamespace

import fastavro
import pytest
import yaml

from rendezvous import cli, config, control, serde
from rendezvous.errors import RendezvousError
from rendezvous.models import promotion
from rendezvous.models.promotion import Target, plan
from rendezvous.policy import Policy

pytestmark = pytest.mark.unit

URIS = {
    "champ": "models:/credit@champion",
    "challenger": "models:/credit@challenger",
    "pinned": "models:/credit/7",
    "rules": None,  # a callable
    "logged": "runs:/0a1b/model",
}


@pytest.mark.parametrize(
    ("model", "target"),
    [
        ("champ", Target("credit", restore_from="champ")),
        ("challenger", Target("credit", alias="challenger")),
        ("pinned", Target("credit", version="7")),
        ("rules", None),
        ("logged", None),
    ],
)
def test_what_a_first_choice_asks_of_the_registry(model, target):
    assert plan(URIS[model], model) == target
    assert plan("models:/credit/latest", "x") is None


SPEC = SimpleNamespace(name="svc", model=lambda name: SimpleNamespace(uri=URIS[name]))


def first(model: str, version: int) -> Policy:
    return Policy(preference=(model, "backstop"), sla_ms=100, grace_ms=5, version=version)


def promote(registry, frm: str, to: str, version: int):
    follower = promotion.Follower("http://mlflow", SPEC)
    before, after = first(frm, version - 1), first(to, version)
    carried = follower.move(before, after)
    run_id = follower.finish(issued_by="ops@host", at_ms=1)
    move = follower.result
    assert carried == (None if move is None else move.to_record())
    if move is not None:
        assert promotion.Move.from_record(carried) == move
    return move, run_id


def test_champion_follows_each_first_choice_and_comes_back_with_its_own_version(registry):
    registry.aliases = {("credit", "champion"): "1", ("credit", "challenger"): "2"}
    move, run_id = promote(registry, "champ", "challenger", 1)
    assert (move.version, move.previous, move.moved) == ("2", "1", True)
    assert move.line() == "MLflow: models:/credit@champion -> version 2 (was version 1)"
    assert registry.aliases[("credit", "champion")] == "2" and run_id == "run1"
    move, _ = promote(registry, "challenger", "pinned", 2)
    assert registry.aliases[("credit", "champion")] == "7" and move.previous == "2"
    # Back to the model that follows @champion itself: the version it had when it was taken
    # off first place (1), not the last one the alias pointed at (2).
    move, _ = promote(registry, "pinned", "champ", 3)
    assert (move.version, move.previous, move.moved) == ("1", "7", True)
    assert registry.aliases[("credit", "champion")] == "1"
    params = registry.runs[-1]["params"]
    assert (params["from_model"], params["to_model"], params["alias_moved"]) == (
        "pinned",
        "champ",
        "true",
    )


def test_nothing_moves_for_a_callable_or_without_a_recorded_version(registry):
    registry.aliases = {("credit", "champion"): "1"}
    move, _ = promote(registry, "champ", "rules", 1)
    assert move is None and registry.aliases == {("credit", "champion"): "1"}
    assert "registered_model" not in registry.runs[-1]["params"]
    # champ was taken off for a callable: no version recorded, the alias stays
    move, _ = promote(registry, "rules", "champ", 2)
    assert (move.moved, move.version, move.previous) == (False, None, "1")
    assert move.line().endswith("left at version 1 (no earlier version recorded)")
    registry.aliases[("credit", "challenger")] = "1"
    move, _ = promote(registry, "champ", "challenger", 3)
    assert not move.moved and move.line() == "MLflow: models:/credit@champion is version 1 already"


# ---- the control record carries the move ------------------------------------------------

REGISTERED = config.parse(
    yaml.safe_load(
        """
services:
  credit:
    sla_ms: 100
    models:
      - {name: champ, role: champion, uri: "models:/credit@champion"}
      - {name: challenger, role: challenger, uri: "models:/credit@challenger"}
      - {name: backstop, role: backstop, callable: "udfs.zoo:constant"}
    input:
      x: double
"""
    )
)


def carried(log: control.MemoryControl) -> list:
    """The ``registry`` field of each control record, as a reader of the topic decodes it."""
    out = []
    for record in log.read():
        kind, decoded = serde.decode(serde.encode(serde.Kind.CONTROL, record))
        assert kind is serde.Kind.CONTROL
        out.append(decoded["registry"])
    return out


def test_promote_undo_and_demote_write_the_alias_move_on_the_control_topic(registry):
    registry.aliases = {("credit", "champion"): "1", ("credit", "challenger"): "2"}
    log = control.MemoryControl()
    spec = REGISTERED.service("credit")
    issued = {"issued_by": "ops@host", "issued_ms": 5}
    follower = promotion.Follower("http://mlflow", spec)
    control.promote(log, REGISTERED, "credit", "challenger", **issued, registry=follower)
    assert follower.finish(issued_by="ops@host", at_ms=5) == "run1"
    follower = promotion.Follower("http://mlflow", spec)
    control.demote(log, REGISTERED, "credit", "challenger", **issued, registry=follower)
    follower.finish(issued_by="guard", at_ms=6)
    assert carried(log) == [
        {
            "registered_model": "credit",
            "alias": "champion",
            "version": "2",
            "previous": "1",
            "moved": True,
        },
        {
            "registered_model": "credit",
            "alias": "champion",
            "version": "1",
            "previous": "2",
            "moved": True,
        },
    ]
    history = control.history(log, REGISTERED, "credit")
    assert [c.registry and c.registry["version"] for c in history.changes] == [None, "2", "1"]
    line = cli.history_lines(history)[1]
    assert line.endswith("grace 2000 ms, @champion -> credit v2"), line
    # An undo of a change of first choice to the backstop-only rest: nothing to move.
    follower = promotion.Follower("http://mlflow", spec)
    control.undo(log, REGISTERED, "credit", **issued, registry=follower)
    assert carried(log)[-1]["version"] == "2"  # the undo brought challenger back first


class Refusing(control.MemoryControl):
    def append(self, kind, record):
        raise RendezvousError("Kafka is down")


def test_a_change_that_cannot_be_written_puts_the_alias_back(registry):
    registry.aliases = {("credit", "champion"): "1", ("credit", "challenger"): "2"}
    follower = promotion.Follower("http://mlflow", REGISTERED.service("credit"))
    with pytest.raises(RendezvousError):
        control.promote(
            Refusing(),
            REGISTERED,
            "credit",
            "challenger",
            issued_by="o",
            issued_ms=1,
            registry=follower,
        )
    assert registry.aliases[("credit", "champion")] == "1" and registry.runs == []


def test_an_unreachable_registry_leaves_the_policy_change_without_a_move(registry, monkeypatch):
    def unreachable(uri):
        raise RendezvousError(f"MLflow at {uri} does not answer")

    log = control.MemoryControl()
    follower = promotion.Follower(
        "http://nowhere", REGISTERED.service("credit"), registry_factory=unreachable
    )
    policy = control.promote(
        log, REGISTERED, "credit", "challenger", issued_by="o", issued_ms=1, registry=follower
    )
    assert policy.preference[0] == "challenger" and carried(log) == [None]
    assert "does not answer" in str(follower.error)


@pytest.mark.parametrize("missing", [("registry",), ("split", "registry")])
def test_control_records_written_before_later_fields_read_with_their_defaults(missing):
    raw = serde.RAW_SCHEMAS["control"]
    earlier = {**raw, "fields": [f for f in raw["fields"] if f["name"] not in missing]}
    named: dict = {}
    fastavro.parse_schema(serde.RAW_SCHEMAS["policy"], named_schemas=named)
    old = {
        "service": "credit",
        "policy": {"preference": ["gbm"], "sla_ms": 100, "grace_ms": 5, "version": 2},
        "issued_ms": 9,
        "issued_by": "ops",
    }
    if "split" not in missing:
        old["split"] = {"key": "k", "arms": [{"model": "gbm", "weight": 1.0}]}
    buf = io.BytesIO()
    buf.write(bytes((serde.Kind.CONTROL,)))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(earlier, named_schemas=named), old)
    kind, record = serde.decode(buf.getvalue())
    assert kind is serde.Kind.CONTROL
    assert record == {"split": None, **old, "registry": None}
    policy = Policy.from_control(record)
    assert policy.preference == ("gbm",) and (policy.split is None) == ("split" in missing)
    with pytest.raises(serde.SerdeError):
        serde.decode(buf.getvalue()[:-1])


class Hanging:
    """A registry that answers its reads only after ``release`` is set."""

    def __init__(self, memory) -> None:
        self.memory = memory
        self.release = threading.Event()

    def __call__(self, uri):
        return self

    def alias_version(self, name, alias):
        self.release.wait(10)
        return self.memory.alias_version(name, alias)

    def __getattr__(self, name):
        return getattr(self.memory, name)


def test_a_registry_that_hangs_does_not_hold_the_change_back_nor_move_the_alias_later(registry):
    registry.aliases = {("credit", "champion"): "1", ("credit", "challenger"): "2"}
    hanging = Hanging(registry)
    log = control.MemoryControl()
    follower = promotion.Follower(
        "http://mlflow", REGISTERED.service("credit"), registry_factory=hanging, timeout_s=0.2
    )
    t0 = time.monotonic()
    policy = control.promote(
        log, REGISTERED, "credit", "challenger", issued_by="o", issued_ms=1, registry=follower
    )
    assert time.monotonic() - t0 < 2 and policy.preference[0] == "challenger"
    assert carried(log) == [None] and "did not answer within 0.2 s" in str(follower.error)
    hanging.release.set()  # the registry answers after all: the alias stays where it was
    late = [t for t in threading.enumerate() if t.name.startswith("registry")]
    assert late
    for thread in late:
        thread.join(10)
        assert not thread.is_alive()
    assert registry.aliases[("credit", "champion")] == "1"
