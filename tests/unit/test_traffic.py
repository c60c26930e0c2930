"""Sticky A/B arms and sampled shadows: the hash, the weights, the configuration's checks, the
selection with arms and the accounting of requests a model did not sample."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys

import pandas as pd
import pytest

from rendezvous import config, control, core, serde, traffic
from rendezvous import policy as policy_mod
from rendezvous.archive import arms as arms_mod
from rendezvous.archive import metrics
from rendezvous.enrich import Enricher, to_model_input
from rendezvous.errors import PolicyError, RendezvousError
from rendezvous.models import load_scorer
from rendezvous.scoring import score_records
from rendezvous.traffic import Sample, Split

pytestmark = pytest.mark.unit

KEYS = [f"customer-{i}" for i in range(10_000)]
# Five standard deviations of a share measured over 10,000 keys is at most 0.025 (p = 0.5);
# the assertions allow 0.02, about four at p = 0.5 and seven at p = 0.1.
TOLERANCE = 0.02


# ---- the hash and the arms ------------------------------------------------------------------


@pytest.mark.parametrize("weights", [{"gbm": 90, "lr": 10}, {"a": 1, "b": 1, "c": 2}])
def test_observed_shares_over_10000_keys_are_the_weights(weights):
    split = Split.of("customer_id", weights)
    picked = [split.arm_of(k) for k in KEYS]
    total = sum(weights.values())
    for model, weight in weights.items():
        assert abs(picked.count(model) / len(KEYS) - weight / total) < TOLERANCE, model


def test_each_key_always_gets_the_same_arm():
    first = [Split.of("k", {"gbm": 90, "lr": 10}).arm_of(k) for k in KEYS]
    again = [Split.of("k", {"gbm": 90, "lr": 10}).arm_of(k) for k in reversed(KEYS)]
    assert first == list(reversed(again))


def test_arms_do_not_depend_on_the_process_hash_seed():
    """Python's hash() of a string changes with PYTHONHASHSEED; the arms must not."""
    code = (
        "from rendezvous.traffic import Split\n"
        "s = Split.of('k', {'gbm': 50, 'lr': 50})\n"
        "print(''.join('g' if s.arm_of(f'customer-{i}') == 'gbm' else 'l' for i in range(300)))"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(runs) == 1
    here = Split.of("k", {"gbm": 50, "lr": 50})
    expected = "".join("g" if here.arm_of(f"customer-{i}") == "gbm" else "l" for i in range(300))
    assert runs == {expected + "\n"}


def test_a_weight_change_moves_only_keys_toward_the_arm_that_grew():
    before = Split.of("k", {"gbm": 90, "lr": 10})
    after = Split.of("k", {"gbm": 50, "lr": 50})
    moved = [(before.arm_of(k), after.arm_of(k)) for k in KEYS]
    assert all(b == a or (b, a) == ("gbm", "lr") for b, a in moved)
    assert abs(sum(b != a for b, a in moved) / len(KEYS) - 0.4) < TOLERANCE


def test_weights_are_relative_and_key_values_hash_by_their_text():
    a, b = Split.of("k", {"x": 9, "y": 1}), Split.of("k", {"x": 0.9, "y": 0.1})
    assert [a.arm_of(k) for k in KEYS[:2000]] == [b.arm_of(k) for k in KEYS[:2000]]
    assert a.arm_of(7) == a.arm_of(7.0) == a.arm_of("7")
    assert a.arm_of(None) is None and a.arm_for({"other": 1}) is None


def test_a_request_without_the_key_keeps_the_policys_preference():
    assert traffic.preference_for(["champ", "canary", "backstop"], None) == [
        "champ",
        "canary",
        "backstop",
    ]
    assert traffic.preference_for(["champ", "backstop"], "lr") == ["lr", "champ", "backstop"]
    assert traffic.preference_for(["champ", "canary", "backstop"], "canary", ["champ"]) == [
        "canary",
        "backstop",
    ]


def test_arms_on_the_command_line():
    assert traffic.parse_arms("gbm=50, lr=50") == [("gbm", 50.0), ("lr", 50.0)]
    for bad, says in [
        ("gbm", "expected MODEL=WEIGHT"),
        ("gbm=0", "positive number"),
        ("gbm=-1", "positive number"),
        ("gbm=x", "positive number"),
        ("gbm=nan", "positive number"),
        ("gbm=1,gbm=2", "named twice"),
    ]:
        with pytest.raises(traffic.TrafficError, match=says):
            traffic.parse_arms(bad)


# ---- samples ----------------------------------------------------------------------------------


def test_a_sample_takes_its_share_of_request_ids_and_always_the_same_ones():
    sample = Sample("heavy", 0.1)
    taken = [sample.takes(f"req-{i}", {}) for i in range(10_000)]
    assert abs(sum(taken) / 10_000 - 0.1) < TOLERANCE
    assert taken == [Sample("heavy", 0.1).takes(f"req-{i}", {}) for i in range(10_000)]
    # a larger rate keeps every request the smaller one took
    wider = [Sample("heavy", 0.3).takes(f"req-{i}", {}) for i in range(10_000)]
    assert all(w for t, w in zip(taken, wider, strict=True) if t)


def test_two_sampled_models_sample_independently():
    a = [Sample("a", 0.5).takes(f"req-{i}", {}) for i in range(10_000)]
    b = [Sample("b", 0.5).takes(f"req-{i}", {}) for i in range(10_000)]
    both = sum(x and y for x, y in zip(a, b, strict=True)) / 10_000
    assert abs(both - 0.25) < TOLERANCE


def test_a_sample_by_field_follows_the_field_not_the_request():
    sample = Sample("heavy", 0.5, "customer_id")
    for k in KEYS[:200]:
        assert len({sample.takes(f"req-{i}", {"customer_id": k}) for i in range(5)}) == 1
    assert sample.takes("req", {}) is False  # no field: not sampled


# ---- the configuration ------------------------------------------------------------------------


def service(**over):
    svc = {
        "sla_ms": 100,
        "input": {"customer_id": "string", "amount": "double"},
        "models": [
            {"name": "gbm", "role": "champion", "callable": "udfs.zoo:constant"},
            {"name": "lr", "role": "challenger", "callable": "udfs.zoo:constant"},
            {"name": "heavy", "role": "challenger", "callable": "udfs.zoo:constant"},
            {"name": "rules", "role": "backstop", "callable": "udfs.zoo:constant"},
            {"name": "decoy", "role": "decoy"},
        ],
        "split": {"key": "customer_id", "arms": {"gbm": 90, "lr": 10}},
    }
    svc.update(over)
    return {"services": {"credit": svc}}


def problems(data):
    cfg, found = config.check(data)
    assert (cfg is None) == bool(found)
    return [str(p) for p in found]


def test_a_split_and_a_sample_load():
    data = service()
    data["services"]["credit"]["models"][2]["sample"] = 0.25
    spec = config.parse(data).service("credit")
    assert spec.split == Split("customer_id", (("gbm", 90.0), ("lr", 10.0)))
    assert spec.samples == (Sample("heavy", 0.25, "request_id"),)
    assert policy_mod.initial(spec).split == spec.split


@pytest.mark.parametrize(
    ("split", "expected"),
    [
        (
            {"key": "customer_id", "arms": {"gbm": 1}, "weights": {}},
            "services.credit.split.weights: unknown key; the keys here are key, arms",
        ),
        (
            {"key": "customer_id", "arms": {"gbm": 1, "xgb": 1}},
            "services.credit.split.arms.xgb: 'xgb' is not one of the models (gbm, lr, heavy, rules, decoy)",
        ),
        (
            {"key": "customer_id", "arms": {"decoy": 1}},
            "services.credit.split.arms.decoy: 'decoy' is the decoy; a decoy only archives and cannot answer",
        ),
        (
            {"key": "customer_id", "arms": {"gbm": 0}},
            "services.credit.split.arms.gbm: expected a positive number, got 0",
        ),
        (
            {"key": "customer_id", "arms": {"gbm": -5}},
            "services.credit.split.arms.gbm: expected a positive number, got -5",
        ),
        (
            {"key": "customer_id", "arms": {"gbm": "90%"}},
            "services.credit.split.arms.gbm: expected a positive number, got '90%'",
        ),
        (
            {"key": "customer_id", "arms": {"gbm": True}},
            "services.credit.split.arms.gbm: expected a positive number, got True",
        ),
        (
            {"key": "customer_id", "arms": {}},
            "services.credit.split.arms: expected a mapping of model name to a positive weight, got {}",
        ),
        (
            {"key": "customer", "arms": {"gbm": 1}},
            "services.credit.split.key: 'customer' is not one of the input fields (amount, "
            "customer_id); the key must be a field every request can carry",
        ),
        (
            {"arms": {"gbm": 1}},
            "services.credit.split.key: required: expected an input field name",
        ),
    ],
)
def test_a_bad_split_is_one_problem_naming_its_field(split, expected):
    assert problems(service(split=split)) == [expected]


def test_a_sampled_model_cannot_be_an_arm_or_answer_first():
    data = service()
    data["services"]["credit"]["models"][1]["sample"] = 0.5  # lr, an arm
    assert problems(data) == [
        "services.credit.split.arms.lr: 'lr' samples requests; an arm's model must score every "
        "request of its arm: remove its `sample`, or take it out of the split"
    ]
    data = service(preference=["heavy", "gbm"])
    data["services"]["credit"]["models"][2]["sample"] = 0.5
    assert problems(data) == [
        "services.credit.preference[0]: 'heavy' samples requests but answers first; the first "
        "choice must score every request: remove its `sample`, or put another model first"
    ]
    data = service(split=None)
    del data["services"]["credit"]["split"]
    data["services"]["credit"]["models"][0]["sample"] = 0.5  # the champion, first by default
    assert problems(data) == [
        "services.credit.models: 'gbm' samples requests but answers first; the first choice "
        "must score every request: remove its `sample`, or put another model first"
    ]


def test_bad_samples_name_their_field():
    data = service()
    models = data["services"]["credit"]["models"]
    models[2].update(sample=1.5)
    models[3].update(sample=0.5, sample_key="region")
    models[4].update(sample_key="customer_id")
    assert problems(data) == [
        "services.credit.models[2].sample: expected a share greater than 0 and at most 1, got 1.5",
        "services.credit.models[3].sample_key: 'region' is not one of the input fields "
        "(amount, customer_id)",
        "services.credit.models[4].sample_key: set `sample` too, or remove sample_key",
    ]


def test_a_file_for_format_version_3_cannot_use_a_split():
    data = {**service(), "version": 3}
    assert problems(data) == [
        "services.credit.split: `split` was introduced in format version 4; this file declares "
        "version: 3; set version: 4 or remove the key"
    ]


# ---- the policy and the control topic ----------------------------------------------------------


def spec_of(**over):
    return config.parse(service(**over)).service("credit")


def test_a_weight_change_is_the_next_policy_version_and_undo_brings_the_old_weights_back():
    spec = spec_of()
    cfg = config.Config(services={"credit": spec})
    log = control.MemoryControl()
    new = control.split(log, cfg, "credit", [("gbm", 50), ("lr", 50)], issued_by="t", issued_ms=1)
    assert new.version == 1 and new.split == Split("customer_id", (("gbm", 50.0), ("lr", 50.0)))
    assert new.preference == spec.preference
    # the record goes through the wire format and back
    (record,) = log.read()
    assert serde.decode(serde.encode(serde.Kind.CONTROL, record))[1] == record
    book = policy_mod.PolicyBook(cfg)
    assert book.apply(record) and book.get("credit") == new
    promoted = control.promote(log, cfg, "credit", "rules", issued_by="t", issued_ms=2)
    assert promoted.split == new.split  # a promotion keeps the split
    _, undone = control.undo(log, cfg, "credit", issued_by="t", issued_ms=3)
    assert undone.split == new.split and undone.preference == spec.preference
    off = control.split(log, cfg, "credit", None, issued_by="t", issued_ms=4)
    assert off.split is None and off.version == 4


def test_a_split_change_refuses_sampled_and_unknown_models_and_needs_a_key():
    data = service()
    del data["services"]["credit"]["split"]
    data["services"]["credit"]["models"][2]["sample"] = 0.5
    spec = config.parse(data).service("credit")
    v0 = policy_mod.initial(spec)
    with pytest.raises(PolicyError, match="--key FIELD"):
        policy_mod.with_split(spec, v0, [("gbm", 1)])
    with pytest.raises(PolicyError, match="--key region: not one of the input fields"):
        policy_mod.with_split(spec, v0, [("gbm", 1)], key="region")
    with pytest.raises(RendezvousError, match="an arm's model must score every request"):
        policy_mod.with_split(spec, v0, [("heavy", 1)], key="customer_id")
    with pytest.raises(RendezvousError, match="has no model 'xgb'"):
        policy_mod.with_split(spec, v0, [("xgb", 1)], key="customer_id")
    with pytest.raises(RendezvousError, match="the first choice must score every request"):
        policy_mod.promote(spec, v0, "heavy")
    with pytest.raises(PolicyError, match="no split to remove"):
        policy_mod.with_split(spec, v0, None)


def request(rid="r1", **body):
    return {
        "request_id": rid,
        "service": "credit",
        "received_ms": 1_000,
        "deadline_ms": 1_100,
        "payload": serde.to_json(body),
        "reply_to": "p",
    }


def test_the_enrich_job_stamps_the_arm_and_the_unsampled_models():
    data = service()
    data["services"]["credit"]["models"][2]["sample"] = 0.3
    spec = config.parse(data).service("credit")
    policy = policy_mod.initial(spec)
    enricher = Enricher(spec)
    arms, skipped = [], 0
    for i in range(2_000):
        body = {"customer_id": f"c{i % 500}", "amount": 1.0}
        record, dead = to_model_input(request(f"r{i}", **body), policy, enricher, now_ms=1_010)
        assert dead is None
        assert record["arm"] == spec.split.arm_for(body)
        assert record["unsampled"] in ([], ["heavy"])
        arms.append((body["customer_id"], record["arm"]))
        skipped += record["unsampled"] == ["heavy"]
        assert serde.decode_as(serde.Kind.MODEL_INPUT, serde.encode(serde.Kind.MODEL_INPUT, record))
    assert len(set(arms)) == 500  # each customer always got one arm
    assert abs(skipped / 2_000 - 0.7) < 0.04
    record, _ = to_model_input(request("nokey", amount=1.0), policy, enricher, now_ms=1_010)
    assert record["arm"] is None


def test_a_model_does_not_score_the_requests_it_did_not_sample():
    scorer = load_scorer(
        config.ModelSpec("heavy", "challenger", callable="udfs.zoo:constant"), tracking_uri=None
    )
    base = {"service": "svc", "received_ms": 1, "deadline_ms": 9, "features": "{}"}
    recs = [
        {**base, "request_id": "a", "unsampled": []},
        {**base, "request_id": "b", "unsampled": ["heavy"]},
        {**base, "request_id": "c", "unsampled": ["other"]},
        {**base, "request_id": "d"},  # written before samples: scored
    ]
    ticks = itertools.count(2)
    scores = score_records(scorer, "svc", recs, lambda: next(ticks))
    assert [s["request_id"] for s in scores] == ["a", "c", "d"]


POLICY = {
    "preference": ["champ", "canary", "backstop"],
    "sla_ms": 100,
    "grace_ms": 500,
    "version": 1,
}
ROLES = {"champ": "champion", "canary": "canary", "backstop": "backstop", "lr": "challenger"}


def model_input(**over):
    rec = {
        "request_id": "r1",
        "service": "svc",
        "received_ms": 1_000,
        "deadline_ms": 1_100,
        "features": "{}",
        "payload": "{}",
        "enriched_ms": 1_001,
        "reply_to": "p1",
        "policy": POLICY,
        "error": None,
        "arm": None,
        "unsampled": [],
    }
    rec.update(over)
    return rec


def score(model, latency, status="ok"):
    return {
        "request_id": "r1",
        "service": "svc",
        "model": model,
        "version": "1",
        "role": ROLES[model],
        "status": status,
        "output": '{"p": 0.5}' if status == "ok" else None,
        "error": None if status == "ok" else "boom",
        "received_ms": 1_000,
        "deadline_ms": 1_100,
        "started_ms": 1_001,
        "scored_ms": 1_000 + latency,
    }


def play(request, scores, until=2_000):
    """Request, then scores in order, then every timer up to ``until``: results and decisions."""
    state, results, decisions, timers = core.Pending(), [], [], []

    def take(out):
        results.extend(out.results)
        decisions.extend(out.decisions)
        timers.extend(out.timers)

    take(core.on_request(state, request))
    for s in scores:
        take(core.on_score(state, s))
    for t in sorted(t for t in timers if t <= until):
        take(core.on_timer(state, t))
    return results, decisions


def test_the_arms_model_answers_first_even_before_the_champion():
    results, decisions = play(model_input(arm="lr"), [score("champ", 5), score("lr", 20)])
    assert [(r["model"], r["reason"], r["arm"]) for r in results] == [("lr", "preferred", "lr")]
    assert results[0]["decided_ms"] == 1_020  # as soon as the arm's model answered
    (decision,) = decisions
    assert decision["arm"] == "lr" and {s["model"] for s in decision["scores"]} == {"champ", "lr"}


def test_a_late_arm_model_falls_back_to_the_preference():
    results, decisions = play(model_input(arm="lr"), [score("champ", 5), score("lr", 150)])
    assert [(r["model"], r["reason"]) for r in results] == [("champ", "fallback: lr late")]
    lr = next(s for s in decisions[0]["scores"] if s["model"] == "lr")
    assert lr["late"] is True and decisions[0]["arm"] == "lr"


def test_without_an_arm_the_policy_decides_and_the_arm_is_null():
    results, decisions = play(model_input(), [score("lr", 5), score("champ", 20)])
    assert [(r["model"], r["arm"]) for r in results] == [("champ", None)]
    assert decisions[0]["arm"] is None


def test_nothing_waits_for_a_model_that_did_not_sample_the_request():
    # canary did not sample; champ failed: the backstop answers at once, not at the deadline
    results, decisions = play(
        model_input(unsampled=["canary"]), [score("champ", 5, "error"), score("backstop", 8)]
    )
    assert [(r["model"], r["reason"], r["decided_ms"]) for r in results] == [
        ("backstop", "backstop: champ failed", 1_008)
    ]
    (decision,) = decisions
    assert decision["unsampled"] == ["canary"]
    assert "canary" not in {s["model"] for s in decision["scores"]}
    assert "late" not in decision["reason"]


def test_the_decision_goes_through_the_wire_format_with_its_arm():
    _, (decision,) = play(model_input(arm="lr", unsampled=["canary"]), [score("lr", 3)])
    assert serde.decode_as(serde.Kind.DECISION, serde.encode(serde.Kind.DECISION, decision)) == (
        decision
    )


# ---- the report ------------------------------------------------------------------------------------


def test_not_sampled_requests_are_not_late_and_are_counted_apart():
    # heavy sampled 2 of 4 requests and was in time for both; lr was late once
    decisions = pd.DataFrame(
        {
            "request_id": ["a", "b", "c", "d"],
            "model": ["gbm", "gbm", "lr", "gbm"],
            "reason": ["preferred"] * 4,
            "unsampled": [[], ["heavy"], ["heavy"], []],
        }
    )
    rows = []
    for rid in "abcd":
        rows.append((rid, "gbm", "champion", False))
        rows.append((rid, "lr", "challenger", rid == "d"))
    rows += [("a", "heavy", "challenger", False), ("d", "heavy", "challenger", False)]
    scores = pd.DataFrame(
        [
            {
                "request_id": r,
                "model": m,
                "role": role,
                "status": "ok",
                "output": "1",
                "latency_ms": 5,
                "late": late,
            }
            for r, m, role, late in rows
        ]
    )
    table = metrics.model_table(metrics.read_scores(scores, metrics.OutputFields()), decisions)
    late = dict(zip(table["model"], table["late_rate"], strict=True))
    assert late == {"gbm": 0.0, "lr": 0.25, "heavy": 0.0}
    sampled = arms_mod.sample_table(decisions)
    assert sampled.to_dict("records") == [
        {"model": "heavy", "not_sampled": 2, "sampled_share": 0.5}
    ]


def test_the_arms_table_compares_arms():
    decisions = pd.DataFrame(
        {
            "request_id": ["a", "b", "c", "d", "e"],
            "arm": ["gbm", "gbm", "lr", "lr", None],
            "model": ["gbm", "gbm", "lr", "gbm", "gbm"],
            "status": ["ok"] * 5,
            "latency_ms": [10, 20, 30, 40, 50],
            "output": ["1", "0", "1", "1", "0"],
        }
    )
    truth = pd.Series({"a": 1, "b": 1, "c": 1, "d": 0}, dtype=object)
    table = arms_mod.arm_table(
        decisions, truth, read_outputs=lambda o: metrics.read_outputs(o, metrics.OutputFields())
    ).set_index("arm")
    assert list(table.index) == ["gbm", "lr", "(none)"]
    assert table.loc["gbm", "requests"] == 2 and table.loc["gbm", "share"] == 0.4
    assert table.loc["gbm", "answered_by_arm"] == 1.0 and table.loc["lr", "answered_by_arm"] == 0.5
    assert table.loc["lr", "latency_p50"] == 35.0
    assert table.loc["gbm", "accuracy"] == 0.5 and table.loc["lr", "accuracy"] == 0.5
    assert table.loc["gbm", "labelled"] == 2
    assert math.isnan(table.loc["(none)", "answered_by_arm"])
    assert table.loc["(none)", "labelled"] == 0
    assert arms_mod.arm_table(decisions.assign(arm=None)).empty


def test_the_report_over_an_archive_prints_the_arms_and_the_samples(tmp_path, capsys):
    from rendezvous import cli
    from rendezvous.archive.layout import write_rows
    from tests.unit.archive_data import decision, score

    scores, decisions = [], []
    for i in range(6):
        rid, arm = f"r{i}", "gbm" if i < 4 else "lr"
        answered = "gbm" if i in (0, 1, 2, 3, 5) else "lr"  # r5: lr's arm, answered by gbm
        scores += [score(rid, "gbm", "champion", "1", 5), score(rid, "lr", "challenger", "0", 5)]
        if i % 2 == 0:  # heavy sampled r0, r2 and r4
            scores.append(score(rid, "heavy", "challenger", "1", 7))
        row = decision(rid, answered, "preferred")
        decisions.append(
            {**row, "arm": arm, "unsampled": [] if i % 2 == 0 else ["heavy"], "latency_ms": 5}
        )
    write_rows(tmp_path, "scores", scores, service="credit")
    write_rows(tmp_path, "decisions", decisions, service="credit")
    assert cli.main(["report", "--archive", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    arms = lines.index("  A/B arms (by the split's key; answered = by the arm's own model):")
    assert lines[arms + 2].split()[:4] == ["gbm", "4", "66.7%", "100.0%"]
    assert lines[arms + 3].split()[:4] == ["lr", "2", "33.3%", "50.0%"]
    sampled = lines.index("  sampled models (requests not sampled are neither late nor errors):")
    assert lines[sampled + 2].split() == ["heavy", "3", "50.0%"]
    heavy = next(x for x in lines if x.strip().startswith("heavy") and "challenger" in x)
    assert heavy.split()[2:5] == ["3", "0.0%", "0.0%"]  # 3 scores, no errors, none late
