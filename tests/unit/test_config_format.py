"""The configuration format: unknown keys, format versions, every problem at once, and the JSON
Schema and reference generated from the same definitions the loader uses."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

from rendezvous import config, demo_models
from rendezvous.config import format as fmt
from rendezvous.config.reference import markdown
from rendezvous.config.resolve import resolve
from tests.unit.test_config import VALID_YAML, valid

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "schemas" / "config.schema.json"


def problems(data: Any) -> list[str]:
    cfg, found = config.check(data)
    assert (cfg is None) == bool(found)
    return [str(p) for p in found]


def with_change(path: str, value: Any) -> dict[str, Any]:
    """The valid configuration with ``value`` set at a dotted path (numbers index lists)."""
    data = valid()
    node: Any = data
    *parents, last = path.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[int(last) if isinstance(node, list) else last] = value
    return data


# (where a misspelled key goes, the key, the problem reported)
UNKNOWN_KEYS = {
    "top level": ("", "owner", "owner: unknown key; the keys here are version, services"),
    "top level near": ("", "verison", "verison: unknown key; did you mean `version`?"),
    "service": (
        "services.credit",
        "modelz",
        "services.credit.modelz: unknown key; did you mean `models`?",
    ),
    "service sla": (
        "services.credit",
        "sla",
        "services.credit.sla: unknown key; did you mean `sla_ms`?",
    ),
    "model": (
        "services.credit.models.0",
        "isolaton",
        "services.credit.models[0].isolaton: unknown key; did you mean `isolation`?",
    ),
    "model far off": (
        "services.credit.models.0",
        "zzqx",
        "services.credit.models[0].zzqx: unknown key; the keys here are name, role, uri, callable, params, isolation, sample, sample_key, quota_weight, parallelism",
    ),
    "input field": (
        "services.credit.input.age",
        "requred",
        "services.credit.input.age.requred: unknown key; did you mean `required`?",
    ),
    "enrich step": (
        "services.credit.enrich.0",
        "too",
        "services.credit.enrich[0].too: unknown key; did you mean `to`?",
    ),
    "lookup step": (
        "services.credit.enrich.1",
        "prefx",
        "services.credit.enrich[1].prefx: unknown key; did you mean `prefix`?",
    ),
}


@pytest.mark.parametrize(("where", "key", "expected"), UNKNOWN_KEYS.values(), ids=UNKNOWN_KEYS)
def test_an_unknown_key_at_any_level_names_its_path_and_the_nearest_key(where, key, expected):
    data = valid()
    node: Any = data
    for part in where.split(".") if where else ():
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[key] = 1
    assert problems(data) == [expected]


def test_a_misspelled_services_key_is_named():
    assert problems({"servics": valid()["services"]}) == [
        "expected a top-level mapping with a 'services' mapping; found `servics`: did you mean `services`?"
    ]


def test_every_problem_is_reported_not_only_the_first():
    data = valid()
    svc = data["services"]["credit"]
    svc["sla_ms"] = 0
    svc["modelz"] = []
    svc["models"][1]["role"] = "king"
    svc["models"].append({"name": "gbm", "role": "challenger", "uri": "models:/credit/2"})
    svc["preference"] = ["gbm", "nn"]
    svc["enrich"][0]["op"] = "sqrt"
    data["services"]["other"] = {"sla_ms": 50}
    found = problems(data)
    assert sorted(found) == sorted(
        [
            "services.credit.sla_ms: expected an integer number of milliseconds between 1 and 600000, got 0",
            "services.credit.models[1].role: expected one of champion, challenger, canary, backstop, decoy, got 'king'",
            "services.credit.enrich[0].op: expected one of rename, default, log1p, scale, lookup, drop, got 'sqrt'",
            "services.credit.modelz: unknown key; did you mean `models`?",
            "services.credit.models: model names must be unique; repeated: gbm",
            "services.credit.preference[1]: 'nn' is not one of the models (gbm, lr, rules)",
            "services.other.models: required: expected a non-empty list of {name, role, uri | callable}",
            "services.other.input: required: expected the input fields ({field: type}) or {from_model: <model name>}",
        ]
    )
    with pytest.raises(config.ConfigError) as err:
        config.parse(data, source="f.yaml")
    assert len(err.value.problems) == len(found)
    assert err.value.message.splitlines() == [f"f.yaml: {p}" for p in found]


def test_a_key_newer_than_the_declared_version_says_which_version_introduced_it():
    data = with_change("services.credit.models.1.isolation", "process")
    data["version"] = 1
    assert problems(data) == [
        "services.credit.models[1].isolation: `isolation` was introduced in format version 2; "
        "this file declares version: 1; set version: 2 or remove the key"
    ]
    data["version"] = 2
    assert config.parse(data).service("credit").model("lr").isolation == "process"
    del data["version"]  # a file without a version is read as the newest format
    assert config.parse(data).service("credit").model("lr").isolation == "process"


def test_a_file_for_a_newer_format_is_refused_with_the_versions_this_release_reads():
    data = valid()
    data["version"] = fmt.FORMAT_VERSION + 1
    data["services"]["credit"]["split"] = {"key": "customer_id"}
    assert problems(data) == [
        f"version: this file is written for format version {fmt.FORMAT_VERSION + 1}, newer than "
        f"this release reads (1 to {fmt.FORMAT_VERSION}); upgrade rendezvous, or write the file "
        f"for version {fmt.FORMAT_VERSION}"
    ]


@pytest.mark.parametrize("version", [0, "2", True, 1.5])
def test_the_version_is_a_positive_integer(version):
    data = valid()
    data["version"] = version
    assert problems(data) == [
        f"version: expected a format version between 1 and {fmt.FORMAT_VERSION}, got {version!r}"
    ]


def test_optional_enrichment_arguments_reach_the_steps():
    data = with_change(
        "services.credit.enrich.1",
        {"op": "lookup", "key": "region", "table": "t.csv", "missing": {"x": 0}},
    )
    data["services"]["credit"]["enrich"].append({"op": "default", "field": "age", "value": None})
    data["services"]["credit"]["enrich"].append({"op": "rename", "from": "a", "to": "b"})
    steps = config.parse(data).service("credit").enrich
    assert steps == (
        {"op": "log1p", "field": "amount", "to": "log_amount"},
        {"op": "lookup", "key": "region", "table": "t.csv", "missing": {"x": 0}},
        {"op": "default", "field": "age", "value": None},
        {"op": "rename", "from": "a", "to": "b"},
    )


# ---------------------------------------------------------------- the schema and the loader agree


@pytest.fixture(scope="module")
def validator():
    return jsonschema_rs.validator_for(fmt.json_schema())


def example_files() -> list[Path]:
    return sorted((ROOT / "examples").glob("*.y*ml")) + sorted((ROOT / "examples").glob("*.json"))


def test_the_schema_is_draft_2020_12_and_the_repository_copy_is_current():
    schema = fmt.json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema_rs.meta.validate(schema)
    assert json.loads(SCHEMA_FILE.read_text()) == schema, (
        "schemas/config.schema.json is stale: run `rendezvous config schema > schemas/config.schema.json`"
    )


def test_every_example_file_validates_against_the_schema_and_loads(validator):
    files = example_files()
    assert files, "no example configuration files found"
    documents = {str(f): config.read(f) for f in files}
    documents["demo"] = {"services": {"breast_cancer": demo_models.demo_service_config()}}
    documents["the module's docstring"] = yaml.safe_load(
        config.__doc__.split("```yaml")[1].split("```")[0]
    )
    documents["the reference's example"] = yaml.safe_load(
        markdown().split("```yaml")[1].split("```")[0]
    )
    documents["tests' valid file"] = yaml.safe_load(VALID_YAML)
    for name, data in documents.items():
        errors = [e.message for e in validator.iter_errors(data)]
        assert errors == [], name
        config.parse(data, source=name)


# Bad files whose problem is one of shape: the schema and the loader must both reject them.
SHAPE_ERRORS = {
    "unknown top-level key": ("extra", 1),
    "unknown service key": ("services.credit.modelz", []),
    "unknown model key": ("services.credit.models.0.smaple", 0.1),
    "unknown input field key": ("services.credit.input.age.requird", False),
    "unknown step key": ("services.credit.enrich.0.too", "x"),
    "sla zero": ("services.credit.sla_ms", 0),
    "sla text": ("services.credit.sla_ms", "100"),
    "sla bool": ("services.credit.sla_ms", True),
    "grace negative": ("services.credit.grace_ms", -5),
    "no models": ("services.credit.models", []),
    "model role": ("services.credit.models.0.role", "king"),
    "model name": ("services.credit.models.0.name", "a b"),
    "uri scheme": ("services.credit.models.0.uri", "s3://m"),
    "callable form": ("services.credit.models.2.callable", "udfs.rules"),
    "params list": ("services.credit.models.0.params", [1]),
    "isolation": ("services.credit.models.0.isolation", "container"),
    "preference text": ("services.credit.preference", "gbm"),
    "empty input": ("services.credit.input", {}),
    "input type": ("services.credit.input.amount", "float"),
    "enrich op": ("services.credit.enrich.0.op", "sqrt"),
    "lookup without table": ("services.credit.enrich.1", {"op": "lookup", "key": "region"}),
    "scale factor text": (
        "services.credit.enrich.0",
        {"op": "scale", "field": "amount", "factor": "2"},
    ),
    "version zero": ("version", 0),
    "service name": ("services", {"credit card": valid()["services"]["credit"]}),
}


@pytest.mark.parametrize(("where", "value"), SHAPE_ERRORS.values(), ids=SHAPE_ERRORS)
def test_the_schema_and_the_loader_reject_the_same_bad_files(validator, where, value):
    data = with_change(where, copy.deepcopy(value))
    assert not validator.is_valid(data)
    assert problems(data)


# Problems between fields, which a JSON Schema does not express: only the loader finds them.
REFERENCE_ERRORS = {
    "duplicate model names": (
        "services.credit.models.2.name",
        "lr",
        "model names must be unique; repeated: lr",
    ),
    "two champions": (
        "services.credit.models.1.role",
        "champion",
        "at most one champion; found gbm, lr",
    ),
    "preference names an unknown model": (
        "services.credit.preference.1",
        "nn",
        "'nn' is not one of the models",
    ),
    "from_model names an unknown model": (
        "services.credit.input",
        {"from_model": "nn"},
        "'nn' is not one of the models",
    ),
    "uri and callable": ("services.credit.models.0.callable", "a:b", "set exactly one of uri"),
}


@pytest.mark.parametrize(
    ("where", "value", "phrase"), REFERENCE_ERRORS.values(), ids=REFERENCE_ERRORS
)
def test_the_loader_checks_what_the_schema_cannot(validator, where, value, phrase):
    data = with_change(where, copy.deepcopy(value))
    if where != "services.credit.preference.1":
        data["services"]["credit"]["preference"] = ["gbm"]  # so that only the change is wrong
    assert validator.is_valid(data)
    found = problems(data)
    assert len(found) == 1 and phrase in found[0], found


# ---------------------------------------------------------------- the reference


def test_the_reference_in_docs_is_generated_from_the_definitions():
    text = markdown()
    assert (ROOT / "docs" / "configuration.md").read_text() == text, (
        "docs/configuration.md is stale: run `rendezvous config reference > docs/configuration.md`"
    )
    for model in (fmt.File, fmt.Service, fmt.Model, fmt.InputField, fmt.FromModel, *fmt.STEPS):
        for name, field in model.model_fields.items():
            assert f"| `{field.alias or name}` |" in text, name
            assert field.description, f"{model.__name__}.{name} has no description"
    assert '| `isolation` | `thread` \\| `process` | `"thread"` | 2 |' in text


# ---------------------------------------------------------------- the command line, offline


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rendezvous.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def test_config_check_prints_every_problem_and_fails(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(VALID_YAML.replace("sla_ms: 100", "sla_ms: 0\n    modelz: []"))
    out = run_cli("config", "check", str(path))
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        f"{path}: services.credit.sla_ms: expected an integer number of milliseconds between 1 and 600000, got 0",
        f"{path}: services.credit.modelz: unknown key; did you mean `models`?",
    ]
    assert "2 problems" in out.stderr


def test_config_check_passes_the_example_and_schema_prints_json():
    out = run_cli("config", "check", "examples/rules.yaml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "examples/rules.yaml: valid (services: rules)" in out.stdout
    schema = run_cli("config", "schema")
    assert json.loads(schema.stdout) == fmt.json_schema()


def test_resolve_checks_callables_and_lookup_tables_one_line_each(tmp_path):
    (tmp_path / "regions.csv").write_text("code,risk\neu,1\n")
    data = valid()
    svc = data["services"]["credit"]
    svc["models"] = [
        {"name": "ok", "role": "champion", "callable": "udfs.zoo:constant", "params": {"value": 1}},
        {"name": "gone", "role": "canary", "callable": "udfs.nosuch:predict"},
        {"name": "typo", "role": "backstop", "callable": "udfs.zoo:constnt"},
        {
            "name": "params",
            "role": "challenger",
            "callable": "udfs.zoo:constant",
            "params": {"nope": 1},
        },
    ]
    svc["preference"] = ["ok", "gone", "typo"]
    svc["enrich"] = [
        {"op": "lookup", "key": "region", "table": "regions.csv"},
        {"op": "lookup", "key": "region", "table": "regions.csv", "table_key": "code"},
        {"op": "lookup", "key": "region", "table": "missing.csv"},
    ]
    found = [str(p) for p in resolve(config.parse(data), base_dir=tmp_path, tracking_uri=None)]
    assert [p.split(":")[0] for p in found] == [
        "services.credit.models[1].callable",
        "services.credit.models[2].callable",
        "services.credit.models[3].callable",
        "services.credit.enrich[0].table",
        "services.credit.enrich[2].table",
    ]
    assert all("\n" not in p for p in found)
    assert "No module named 'udfs.nosuch'" in found[0]
    assert "belongs in the service's code key" in found[0]
    assert "fix params in the service configuration" in found[2]
    assert "has no column 'region' (its header: code, risk); set table_key" in found[3]
    assert "missing.csv" in found[4] and "relative to the configuration file" in found[4]
