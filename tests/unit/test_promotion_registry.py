"""The registry follows the policy: where ``@champion`` goes after each change of first
choice, decided by how the new first choice names its model."""

from __future__ import annotations

import pytest

from rendezvous.models import promotion
from rendezvous.models.promotion import Target, plan

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


def promote(registry, frm: str, to: str, version: int):
    return promotion.record(
        "http://mlflow",
        service="svc",
        from_model=frm,
        to_model=to,
        to_uri=URIS[to],
        policy_version=version,
        issued_by="ops@host",
        at_ms=1,
    )


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
