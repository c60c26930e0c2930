"""The guard's core: what a result says about the model asked first, the rolling rule, and
which policy comes back when the first choice is taken off."""

from __future__ import annotations

import json
import random
import re

import pytest
import yaml

from rendezvous import config, control, guard_loop
from rendezvous.errors import ConfigError, PolicyError, RendezvousError
from rendezvous.guard import GuardRule, Watch, first_asked, output_value

pytestmark = pytest.mark.unit

CONFIG = """
version: 6
services:
  credit:
    sla_ms: 200
    models:
      - {name: champ, role: champion, callable: "udfs.zoo:constant"}
      - {name: canary, role: canary, callable: "udfs.zoo:constant"}
      - {name: shadow, role: challenger, callable: "udfs.zoo:constant"}
      - {name: backstop, role: backstop, callable: "udfs.zoo:constant"}
    input:
      x: double
    guard: {error_rate: 0.2, late_rate: 0.3, window_s: 10, for_s: 5, min_requests: 10}
  lone:
    sla_ms: 50
    models:
      - {name: rules, role: champion, callable: "udfs.zoo:constant"}
      - {name: backstop, role: backstop, callable: "udfs.zoo:constant"}
    input:
      x: double
    guard: {late_rate: 0.5}
  free:
    sla_ms: 50
    models:
      - {name: rules, role: champion, callable: "udfs.zoo:constant"}
    input:
      x: double
"""
CFG = config.parse(yaml.safe_load(CONFIG))
RULE = CFG.service("credit").guard
T0 = 1_764_000_000_000


def result(reason: str, model: str | None = "champ", status: str = "ok", output="0.5") -> dict:
    return {"service": "credit", "status": status, "model": model, "reason": reason,
            "output": output}  # fmt: skip


@pytest.mark.parametrize(
    ("reason", "model", "status", "expected"),
    [
        ("preferred", "champ", "ok", ("champ", "ok")),
        ("fallback: champ failed", "canary", "ok", ("champ", "failed")),
        ("fallback: champ late, canary failed", "backstop", "ok", ("champ", "late")),
        ("backstop: my-model_2 late", "backstop", "ok", ("my-model_2", "late")),
        ("no_answer: champ failed, backstop late", None, "error", ("champ", "failed")),
        ("deadline_exceeded: the request reached enrichment after its deadline", None, "error",
         None),
        ("enrichment_failed: lookup: no row", None, "error", None),
        ("orphan: scores arrived but the request never did", None, "error", None),
    ],
)  # fmt: skip
def test_a_result_names_the_first_asked_models_outcome(reason, model, status, expected):
    assert first_asked(result(reason, model, status)) == expected


def test_numeric_outputs_are_read_and_others_are_not():
    assert output_value("0.25") == 0.25 and output_value('{"p": 3}') == 3.0
    for text in (None, '"yes"', "true", '{"a": 1, "b": 2}', "not json", "NaN"):
        assert output_value(text) is None


def feed(watch: Watch, reasons: list[str], start_ms: int, every_ms: int = 100) -> int:
    at = start_ms
    for reason in reasons:
        watch.add(result(reason, "champ" if reason == "preferred" else "canary"), at)
        at += every_ms
    return at


def test_a_rule_broken_at_every_check_for_its_time_is_a_breach_and_only_then():
    watch = Watch({"credit": RULE})
    watch.first_choice("credit", "champ", T0)
    at = feed(watch, ["preferred"] * 20, T0)
    assert watch.check("credit", at) is None
    # From here on 1 in 2 requests fails: above the 0.2 error rate once enough are in the window
    bad = ["fallback: champ failed", "preferred"] * 30
    at = feed(watch, bad[:20], at)
    first_broken = at
    assert watch.check("credit", at) is None  # broken, but not yet for 5 s
    at = feed(watch, bad[20:], at)  # 4 s later
    assert watch.check("credit", at) is None
    breach = watch.check("credit", first_broken + 5_000)
    assert breach is not None and breach.model == "champ"
    assert set(breach.broken) == {"error_rate"} and breach.since_ms == first_broken
    assert 0.2 < breach.figures.error_rate <= 0.5 and breach.figures.late_rate == 0
    assert "champ: error_rate 0." in breach.why(RULE) and "for 5 s" in breach.why(RULE)


def test_a_check_that_passes_starts_the_clock_again():
    watch = Watch({"credit": RULE})
    watch.first_choice("credit", "champ", T0)
    at = feed(watch, ["fallback: champ late"] * 20, T0)
    assert watch.check("credit", at) is None
    at = feed(watch, ["preferred"] * 80, at)  # 8 s of good answers: back under 0.3
    assert watch.check("credit", at) is None
    at = feed(watch, ["fallback: champ late"] * 60, at)
    assert watch.check("credit", at) is None  # broken again, the clock starts over
    assert watch.check("credit", at + 4_000) is None
    assert watch.check("credit", at + 5_000).broken.keys() == {"late_rate"}


def test_too_few_answers_or_answers_about_another_model_give_no_verdict():
    watch = Watch({"credit": RULE})
    watch.first_choice("credit", "champ", T0)
    at = feed(watch, ["fallback: champ failed"] * 9, T0)  # min_requests is 10
    assert watch.check("credit", at) is None
    assert watch.check("credit", at + 6_000) is None
    # requests whose arm asked the canary first say nothing about the champion
    for i in range(50):
        watch.add(result("fallback: canary failed", "champ"), at + i)
    assert watch.figures("credit", at + 50).answers == 9
    # answers older than the window drop out
    assert watch.figures("credit", at + 20_000).answers == 0


def test_a_new_first_choice_starts_with_a_clean_slate():
    watch = Watch({"credit": RULE})
    watch.first_choice("credit", "champ", T0)
    at = feed(watch, ["fallback: champ failed"] * 50, T0)
    assert watch.check("credit", at) is None
    watch.first_choice("credit", "canary", at)
    assert watch.figures("credit", at).answers == 0
    assert watch.check("credit", at + 10_000) is None


def test_outputs_that_drift_from_the_first_choices_own_first_answers_break_a_psi_rule():
    rule = GuardRule(psi=0.25, window_s=100, for_s=0, min_requests=10)
    watch = Watch({"credit": rule})
    watch.first_choice("credit", "champ", T0)
    rng = random.Random(7)
    at = T0
    for _ in range(400):  # the reference, then the same distribution
        watch.add(result("preferred", output=json.dumps(rng.gauss(0.3, 0.05))), at)
        at += 10
    assert watch.check("credit", at) is None
    assert watch.figures("credit", at).psi < 0.1
    for _ in range(400):
        watch.add(result("preferred", output=json.dumps(rng.gauss(0.6, 0.05))), at)
        at += 10
    breach = watch.check("credit", at)
    assert breach is not None and breach.broken["psi"][0] > 1


# ---- what comes back ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def issued(self) -> dict:
        self.ms += 1_000
        return {"issued_by": "ops@host", "issued_ms": self.ms}


def test_taking_the_first_choice_off_restores_the_latest_version_that_put_another_first():
    log, clock = control.MemoryControl(), Clock()
    control.promote(log, CFG, "credit", "shadow", **clock.issued())  # v1: shadow first
    control.promote(log, CFG, "credit", "canary", **clock.issued())  # v2: canary first
    control.split(log, CFG, "credit", [("canary", 1.0)], key="x", **clock.issued())  # v3
    how, policy = control.demote(log, CFG, "credit", "canary", issued_by="guard: why", issued_ms=9)
    assert how == "restored policy version 1" and policy.version == 4
    assert policy.preference[0] == "shadow"
    assert log.read()[-1]["issued_by"] == "guard: why"


def test_with_no_earlier_version_the_next_model_that_can_answer_first_is_promoted():
    log = control.MemoryControl()
    how, policy = control.demote(log, CFG, "credit", "champ", issued_by="g", issued_ms=1)
    assert how == "promoted canary"
    assert policy.preference == ("canary", "champ", "backstop") and policy.version == 1


def test_a_model_no_longer_first_or_a_service_with_only_a_backstop_behind_is_left_alone():
    log = control.MemoryControl()
    control.promote(log, CFG, "credit", "canary", issued_by="ops", issued_ms=1)
    with pytest.raises(PolicyError, match="champ is no longer the first choice"):
        control.demote(log, CFG, "credit", "champ", issued_by="g", issued_ms=2)
    with pytest.raises(PolicyError, match="no model but rules can answer first"):
        control.demote(log, CFG, "lone", "rules", issued_by="g", issued_ms=2)
    assert len(log.read()) == 1


# ---- the configuration ----------------------------------------------------------------------


def test_the_guard_section_is_read_with_its_defaults():
    assert GuardRule(error_rate=0.2, late_rate=0.3, window_s=10, for_s=5, min_requests=10) == RULE
    assert CFG.service("lone").guard == GuardRule(late_rate=0.5)
    assert CFG.service("free").guard is None
    assert guard_loop.guarded(CFG) == {"credit": RULE, "lone": GuardRule(late_rate=0.5)}
    assert guard_loop.guarded(CFG, ["lone"]) == {"lone": GuardRule(late_rate=0.5)}
    with pytest.raises(RendezvousError, match="no service nope"):
        guard_loop.guarded(CFG, ["nope"])
    with pytest.raises(RendezvousError, match="has a guard section"):
        guard_loop.guarded(CFG, ["free"])


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("{for_s: 3}", "services.s.guard: set at least one threshold"),
        ("{error_rate: 2}", "services.s.guard.error_rate: expected a share between 0"),
        ("{late_rate: 0.1, window_s: 0}", "services.s.guard.window_s: expected seconds"),
        (
            "{psi: 0.2, every: 3}",
            "services.s.guard.every: unknown key; the keys here are error_rate",
        ),
    ],
)
def test_a_bad_guard_section_names_the_field(section, message):
    text = f"""
services:
  s:
    sla_ms: 50
    models: [{{name: a, role: champion, callable: "udfs.zoo:constant"}}]
    input: {{x: double}}
    guard: {section}
"""
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.parse(yaml.safe_load(text))


def test_the_guard_section_needs_format_version_6():
    text = CONFIG.replace("version: 6", "version: 5")
    with pytest.raises(ConfigError, match="`guard` was introduced in format version 6"):
        config.parse(yaml.safe_load(text))
