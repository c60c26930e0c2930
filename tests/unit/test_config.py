"""The service configuration: loading, defaults, and errors that name the field path."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from rendezvous import config
from rendezvous.config import FieldSpec
from rendezvous.errors import ConfigError

VALID_YAML = """\
services:
  credit:
    sla_ms: 100
    models:
      - {name: gbm,   role: champion,   uri: "models:/credit@champion"}
      - {name: lr,    role: canary,     uri: "models:/credit@canary"}
      - {name: rules, role: backstop,   callable: "udfs.rules:approve_small_amounts"}
    preference: [gbm, lr, rules]
    input:
      amount: double
      age: {type: long, required: false, default: 40}
    enrich:
      - {op: log1p, field: amount, to: log_amount}
      - {op: lookup, key: region, table: data/regions.csv, prefix: region_}
"""


def valid() -> dict[str, Any]:
    return yaml.safe_load(VALID_YAML)


def check_credit(cfg: config.Config) -> None:
    svc = cfg.service("credit")
    assert svc.sla_ms == 100
    assert svc.grace_ms == config.DEFAULT_GRACE_MS
    assert [m.name for m in svc.models] == ["gbm", "lr", "rules"]
    assert svc.model("lr").uri == "models:/credit@canary"
    assert svc.model("rules").source == "python:udfs.rules:approve_small_amounts"
    assert svc.preference == ("gbm", "lr", "rules")
    assert svc.input_fields == (
        FieldSpec("amount", "double", required=True),
        FieldSpec("age", "long", required=False, default=40),
    )
    assert svc.input_from_model is None
    assert [step["op"] for step in svc.enrich] == ["log1p", "lookup"]


def test_a_valid_yaml_file_loads(tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text(VALID_YAML)
    cfg = config.load(path)
    assert cfg.source == str(path)
    check_credit(cfg)


def test_a_valid_json_file_loads(tmp_path):
    path = tmp_path / "services.json"
    path.write_text(json.dumps(valid()))
    check_credit(config.load(path))


def test_default_preference_is_champion_canaries_backstop_without_shadows():
    data = valid()
    svc = data["services"]["credit"]
    del svc["preference"]
    svc["models"] = [
        {"name": "rules", "role": "backstop", "callable": "udfs.rules:approve"},
        {"name": "shadow", "role": "challenger", "uri": "models:/credit@shadow"},
        {"name": "lr", "role": "canary", "uri": "models:/credit@canary"},
        {"name": "decoy", "role": "decoy"},
        {"name": "gbm", "role": "champion", "uri": "models:/credit@champion"},
    ]
    spec = config.parse(data).service("credit")
    assert spec.preference == ("gbm", "lr", "rules")
    # The challenger scores (a shadow); the decoy only archives.
    assert [m.name for m in spec.scoring_models] == ["rules", "shadow", "lr", "gbm"]


def test_an_explicit_preference_may_list_a_challenger():
    data = valid()
    data["services"]["credit"]["models"].append(
        {"name": "nn", "role": "challenger", "uri": "models:/credit/3"}
    )
    data["services"]["credit"]["preference"] = ["nn", "gbm"]
    assert config.parse(data).service("credit").preference == ("nn", "gbm")


def test_input_from_a_model_signature():
    data = valid()
    data["services"]["credit"]["input"] = {"from_model": "gbm"}
    svc = config.parse(data).service("credit")
    assert svc.input_fields is None
    assert svc.input_from_model == "gbm"


def test_signature_inputs_are_filled_in_and_failures_reported():
    data = valid()
    data["services"]["credit"]["input"] = {"from_model": "gbm"}
    data["services"]["other"] = copy.deepcopy(data["services"]["credit"])
    data["services"]["other"]["models"][0]["uri"] = "models:/broken@champion"
    data["services"]["rules"] = copy.deepcopy(data["services"]["credit"])
    data["services"]["rules"]["input"] = {"from_model": "rules"}
    cfg = config.parse(data)
    fields = (FieldSpec("amount", "double"), FieldSpec("age", "long", required=False))
    asked = []

    def fields_of(uri: str):
        asked.append(uri)
        if "broken" in uri:
            raise RuntimeError("model models:/broken@champion has no signature")
        return fields

    resolved, problems = cfg.with_signature_inputs(fields_of)
    assert resolved.service("credit").input_fields == fields
    assert resolved.service("other").input_fields is None
    assert problems == {
        "other": "model models:/broken@champion has no signature",
        "rules": "model rules is a callable: it has no signature",
    }
    assert sorted(asked) == ["models:/broken@champion", "models:/credit@champion"]
    assert cfg.service("credit").input_fields is None  # the original is left alone


def test_a_model_runs_in_the_shared_interpreter_unless_it_asks_for_a_process():
    data = valid()
    data["services"]["credit"]["models"][1]["isolation"] = "process"
    svc = config.parse(data).service("credit")
    assert [m.isolation for m in svc.models] == ["thread", "process", "thread"]


def test_unknown_service_and_model_are_named():
    cfg = config.parse(valid())
    with pytest.raises(ConfigError, match=r"unknown service 'fraud'; configured services: credit"):
        cfg.service("fraud")
    with pytest.raises(ConfigError, match=r"service 'credit' has no model 'nn'"):
        cfg.service("credit").model("nn")


def _set(data: dict, dotted: str, value: Any) -> None:
    """Set ``value`` at a dotted path below ``services.credit`` (list indexes as numbers)."""
    node: Any = data["services"]["credit"]
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is DELETE:
        del node[last]
    else:
        node[last] = value


DELETE = object()
GBM = {"name": "gbm", "role": "champion", "uri": "models:/credit@champion"}

# (a change to the valid configuration, the field path the error must name, a phrase of the fix)
INVALID = {
    "sla missing": ("sla_ms", DELETE, "services.credit.sla_ms", "integer number of milliseconds"),
    "sla text": ("sla_ms", "100ms", "services.credit.sla_ms", "got '100ms'"),
    "sla bool": ("sla_ms", True, "services.credit.sla_ms", "got True"),
    "sla zero": ("sla_ms", 0, "services.credit.sla_ms", "between 1 and 600000"),
    "sla huge": ("sla_ms", 600_001, "services.credit.sla_ms", "between 1 and 600000"),
    "grace negative": ("grace_ms", -1, "services.credit.grace_ms", "milliseconds >= 0"),
    "grace text": ("grace_ms", "2s", "services.credit.grace_ms", "got '2s'"),
    "models missing": ("models", DELETE, "services.credit.models", "non-empty list"),
    "models empty": ("models", [], "services.credit.models", "non-empty list"),
    "model not a mapping": ("models.0", "gbm", "services.credit.models[0]", "expected a mapping"),
    "model name": ("models.0.name", "g b m", "services.credit.models[0].name", "got 'g b m'"),
    "model role": ("models.0.role", "king", "services.credit.models[0].role", "got 'king'"),
    "uri and callable": ("models.0.callable", "a:b", "services.credit.models[0]", "exactly one"),
    "neither uri nor callable": (
        "models.0",
        {"name": "gbm", "role": "champion"},
        "services.credit.models[0]",
        "exactly one",
    ),
    "decoy with uri": (
        "models.1",
        {"name": "lr", "role": "decoy", "uri": "models:/x@y"},
        "services.credit.models[1]",
        "a decoy has no uri",
    ),
    "uri scheme": ("models.0.uri", "s3://bucket/m", "services.credit.models[0].uri", "models:/"),
    "uri type": ("models.0.uri", 7, "services.credit.models[0].uri", "got 7"),
    "callable form": (
        "models.2.callable",
        "udfs.rules.approve",
        "services.credit.models[2].callable",
        "'package.module:function'",
    ),
    "params": ("models.0.params", [1], "services.credit.models[0].params", "expected a mapping"),
    "duplicate names": (
        "models.1",
        dict(GBM, role="canary"),
        "services.credit.models",
        "repeated: gbm",
    ),
    "two champions": (
        "models.1",
        {"name": "lr", "role": "champion", "uri": "models:/x@y"},
        "services.credit.models",
        "at most one champion",
    ),
    "preference empty": ("preference", [], "services.credit.preference", "non-empty list"),
    "preference text": ("preference", "gbm", "services.credit.preference", "non-empty list"),
    "preference unknown": (
        "preference.1",
        "nn",
        "services.credit.preference[1]",
        "'nn' is not one",
    ),
    "preference decoy": (
        "models.1",
        {"name": "lr", "role": "decoy"},
        "services.credit.preference[1]",
        "'lr' is the decoy",
    ),
    "input missing": (
        "input",
        DELETE,
        "services.credit.input",
        "required: expected the input fields",
    ),
    "input empty": ("input", {}, "services.credit.input", "expected the input fields"),
    "input from unknown model": (
        "input",
        {"from_model": "nn"},
        "services.credit.input.from_model",
        "'nn' is not one of the models",
    ),
    "input type": ("input.amount", "float", "services.credit.input.amount.type", "got 'float'"),
    "input spec": ("input.amount", [1], "services.credit.input.amount", "expected a type name"),
    "isolation": (
        "models.0",
        {**GBM, "isolation": "container"},
        "services.credit.models[0].isolation",
        "expected one of thread, process, got 'container'",
    ),
    "enrich op": ("enrich.0.op", "sqrt", "services.credit.enrich[0].op", "got 'sqrt'"),
    "enrich not a mapping": ("enrich.0", "log1p", "services.credit.enrich[0]", "got 'log1p'"),
    "enrich argument": (
        "enrich.1",
        {"op": "lookup", "key": "region"},
        "services.credit.enrich[1].table",
        "the lookup step needs key, table",
    ),
}


@pytest.mark.parametrize(("change", "value", "field_path", "phrase"), INVALID.values(), ids=INVALID)
def test_each_invalid_input_names_its_field_path(change, value, field_path, phrase):
    data = valid()
    _set(data, change, value if value is DELETE else copy.deepcopy(value))
    with pytest.raises(ConfigError) as err:
        config.parse(data, source="services.yaml")
    message = err.value.message
    assert message.startswith(f"services.yaml: {field_path}: "), message
    assert phrase in message, message


@pytest.mark.parametrize(
    ("data", "phrase"),
    [
        (None, "expected a top-level mapping with a 'services' mapping"),
        ([1, 2], "expected a top-level mapping with a 'services' mapping"),
        ({"service": {}}, "expected a top-level mapping with a 'services' mapping"),
        ({"services": {}}, "'services' is empty"),
    ],
)
def test_invalid_top_level(data, phrase):
    with pytest.raises(ConfigError) as err:
        config.parse(data, source="services.yaml")
    assert err.value.message.startswith(f"services.yaml: {phrase}"), err.value.message


def test_a_service_that_is_not_a_mapping():
    with pytest.raises(ConfigError, match=r"services.yaml: services.credit: expected a mapping"):
        config.parse({"services": {"credit": 100}}, source="services.yaml")


def test_a_service_name_with_spaces():
    data = {"services": {"credit card": valid()["services"]["credit"]}}
    with pytest.raises(ConfigError, match=r"services.credit card: service names use letters"):
        config.parse(data)


def test_a_missing_file_says_how_to_pass_one(tmp_path):
    with pytest.raises(ConfigError) as err:
        config.load(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in err.value.message
    assert "--config <file>" in err.value.message


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text("services:\n  credit: [unclosed\n")
    with pytest.raises(ConfigError, match=r"services.yaml: invalid YAML"):
        config.load(path)


def test_invalid_json_names_the_file_and_line(tmp_path):
    path = tmp_path / "services.json"
    path.write_text('{\n  "services": {,}\n}\n')
    with pytest.raises(ConfigError, match=r"services.json: invalid JSON at line 2"):
        config.load(path)


def test_errors_in_a_file_name_the_file(tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text(VALID_YAML.replace("sla_ms: 100", "sla_ms: fast"))
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert err.value.message.startswith(f"{path}: services.credit.sla_ms: ")
