"""The declarative service configuration: one YAML or JSON file, a few lines per service.

```yaml
services:
  credit:
    sla_ms: 100
    models:
      - {name: gbm,   role: champion,   uri: "models:/credit@champion"}
      - {name: lr,    role: canary,     uri: "models:/credit@canary"}
      - {name: rules, role: backstop,   callable: "udfs.rules:approve_small_amounts"}
    preference: [gbm, lr, rules]          # optional; default: champion, canaries, challengers, backstop
    input:                                 # or {from_model: gbm}: the champion's MLflow signature
      amount: double
      age: {type: long, required: false, default: 40}
    enrich:
      - {op: log1p, field: amount, to: log_amount}
      - {op: lookup, key: region, table: data/regions.csv, prefix: region_}
```

Loading validates everything; an error names the field path and how to fix it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rendezvous.errors import ConfigError

ROLES = ("champion", "challenger", "canary", "backstop", "decoy")
FIELD_TYPES = ("double", "long", "string", "boolean")
ENRICH_OPS = ("rename", "default", "log1p", "scale", "lookup", "drop")
DEFAULT_GRACE_MS = 2000


ISOLATION = ("thread", "process")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    role: str
    uri: str | None = None
    callable: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    # "thread": the scoring job's Python runs in the TaskManager's one interpreter (cheapest);
    # "process": in a Python process of its own, so a model that holds the CPU in Python does
    # not hold every other job's interpreter lock.
    isolation: str = "thread"

    @property
    def source(self) -> str:
        return self.uri if self.uri is not None else f"python:{self.callable}"


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    required: bool = True
    default: Any = None


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    sla_ms: int
    grace_ms: int
    models: tuple[ModelSpec, ...]
    preference: tuple[str, ...]
    input_fields: tuple[FieldSpec, ...] | None  # None: taken from a model's signature
    input_from_model: str | None
    enrich: tuple[Mapping[str, Any], ...]

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise ConfigError(
            f"service {self.name!r} has no model {name!r}; its models are "
            f"{', '.join(m.name for m in self.models)}"
        )

    @property
    def scoring_models(self) -> tuple[ModelSpec, ...]:
        """Models that score requests (every role but the decoy)."""
        return tuple(m for m in self.models if m.role != "decoy")


@dataclass(frozen=True)
class Config:
    services: Mapping[str, ServiceSpec]
    source: str = "<inline>"

    def with_signature_inputs(
        self, fields_of: Callable[[str], tuple[FieldSpec, ...]]
    ) -> tuple[Config, dict[str, str]]:
        """Fill in the input fields of services declared ``{from_model: m}``.

        ``fields_of(uri)`` reads a model's signature (see rendezvous.models). Returns the new
        configuration and, per service that could not be resolved, why (it keeps accepting any
        JSON object, as before).
        """
        services, problems = dict(self.services), {}
        for name, spec in self.services.items():
            if spec.input_fields is not None or spec.input_from_model is None:
                continue
            model = spec.model(spec.input_from_model)
            if model.uri is None:
                problems[name] = f"model {model.name} is a callable: it has no signature"
                continue
            try:
                services[name] = replace(spec, input_fields=fields_of(model.uri))
            except Exception as exc:
                problems[name] = str(exc)
        return replace(self, services=services), problems

    def service(self, name: str) -> ServiceSpec:
        try:
            return self.services[name]
        except KeyError:
            raise ConfigError(
                f"unknown service {name!r}; configured services: {', '.join(sorted(self.services)) or 'none'}"
            ) from None


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read configuration {path}: {exc.strerror}; pass --config <file>"
        ) from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    return parse(data, source=str(path))


def parse(data: Any, *, source: str = "<inline>") -> Config:
    where = source
    if not isinstance(data, Mapping) or not isinstance(data.get("services"), Mapping):
        raise ConfigError(f"{where}: expected a top-level mapping with a 'services' mapping")
    if not data["services"]:
        raise ConfigError(f"{where}: 'services' is empty; declare at least one service")
    services = {
        name: _service(str(name), spec, f"{where}: services.{name}")
        for name, spec in data["services"].items()
    }
    return Config(services=services, source=source)


def _require(cond: bool, path: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{path}: {message}")


def _service(name: str, spec: Any, path: str) -> ServiceSpec:
    _require(isinstance(spec, Mapping), path, "expected a mapping with sla_ms and models")
    _require(
        name.replace("-", "").replace("_", "").isalnum(),
        path,
        "service names use letters, digits, - and _",
    )
    sla = spec.get("sla_ms")
    _require(isinstance(sla, int) and not isinstance(sla, bool) and 1 <= sla <= 600_000, f"{path}.sla_ms",
             f"expected an integer number of milliseconds between 1 and 600000, got {sla!r}")  # fmt: skip
    grace = spec.get("grace_ms", DEFAULT_GRACE_MS)
    _require(
        isinstance(grace, int) and grace >= 0,
        f"{path}.grace_ms",
        f"expected milliseconds >= 0, got {grace!r}",
    )

    raw_models = spec.get("models")
    _require(isinstance(raw_models, list) and raw_models, f"{path}.models",
             "expected a non-empty list of {name, role, uri | callable}")  # fmt: skip
    models = tuple(_model(m, f"{path}.models[{i}]") for i, m in enumerate(raw_models))
    names = [m.name for m in models]
    dup = {n for n in names if names.count(n) > 1}
    _require(
        not dup, f"{path}.models", f"model names must be unique; repeated: {', '.join(sorted(dup))}"
    )
    champions = [m.name for m in models if m.role == "champion"]
    _require(
        len(champions) <= 1, f"{path}.models", f"at most one champion; found {', '.join(champions)}"
    )

    preference = spec.get("preference")
    if preference is None:
        order = {"champion": 0, "canary": 1, "challenger": 2, "backstop": 3}
        preference = [
            m.name for m in sorted(models, key=lambda m: order.get(m.role, 9)) if m.role in order
        ]
        # Challengers are shadows unless listed explicitly.
        preference = [
            n for n in preference if next(m for m in models if m.name == n).role != "challenger"
        ]
    _require(isinstance(preference, list) and preference, f"{path}.preference",
             "expected a non-empty list of model names")  # fmt: skip
    for i, n in enumerate(preference):
        _require(
            n in names,
            f"{path}.preference[{i}]",
            f"{n!r} is not one of the models ({', '.join(names)})",
        )
        _require(next(m for m in models if m.name == n).role != "decoy", f"{path}.preference[{i}]",
                 f"{n!r} is the decoy; a decoy only archives and cannot answer")  # fmt: skip

    input_fields, from_model = _input(spec.get("input"), f"{path}.input", names)
    enrich = tuple(
        _enrich_step(s, f"{path}.enrich[{i}]") for i, s in enumerate(spec.get("enrich") or [])
    )
    return ServiceSpec(
        name=name, sla_ms=sla, grace_ms=grace, models=models, preference=tuple(preference),
        input_fields=input_fields, input_from_model=from_model, enrich=enrich,
    )  # fmt: skip


def _model(spec: Any, path: str) -> ModelSpec:
    _require(isinstance(spec, Mapping), path, "expected a mapping {name, role, uri | callable}")
    name, role = spec.get("name"), spec.get("role")
    _require(isinstance(name, str) and name.replace("-", "").replace("_", "").isalnum(), f"{path}.name",
             f"expected a name of letters, digits, - and _, got {name!r}")  # fmt: skip
    _require(role in ROLES, f"{path}.role", f"expected one of {', '.join(ROLES)}, got {role!r}")
    uri, func = spec.get("uri"), spec.get("callable")
    if role == "decoy":
        _require(
            uri is None and func is None, path, "a decoy has no uri or callable; it only archives"
        )
    else:
        _require((uri is None) != (func is None), path,
                 "set exactly one of uri (an MLflow model URI) or callable ('module:function')")  # fmt: skip
    if uri is not None:
        _require(isinstance(uri, str) and uri.split(":", 1)[0] in ("models", "runs", "file") or
                 (isinstance(uri, str) and uri.startswith("/")), f"{path}.uri",
                 f"expected models:/name@alias, models:/name/3, runs:/<id>/path or a path; got {uri!r}")  # fmt: skip
    if func is not None:
        _require(isinstance(func, str) and func.count(":") == 1 and all(func.split(":")), f"{path}.callable",
                 f"expected 'package.module:function', got {func!r}")  # fmt: skip
    params = spec.get("params") or {}
    _require(isinstance(params, Mapping), f"{path}.params", "expected a mapping")
    isolation = spec.get("isolation", "thread")
    _require(isolation in ISOLATION, f"{path}.isolation",
             f"expected one of {', '.join(ISOLATION)}, got {isolation!r}")  # fmt: skip
    return ModelSpec(
        name=name, role=role, uri=uri, callable=func, params=dict(params), isolation=isolation
    )


def _input(
    spec: Any, path: str, model_names: list[str]
) -> tuple[tuple[FieldSpec, ...] | None, str | None]:
    _require(isinstance(spec, Mapping) and spec, path,
             "declare the input fields ({field: type}) or {from_model: <model name>}")  # fmt: skip
    if "from_model" in spec:
        src = spec["from_model"]
        _require(src in model_names, f"{path}.from_model", f"{src!r} is not one of the models")
        return None, src
    fields = []
    for fname, fspec in spec.items():
        fpath = f"{path}.{fname}"
        if isinstance(fspec, str):
            fspec = {"type": fspec}
        _require(
            isinstance(fspec, Mapping), fpath, "expected a type name or {type, required, default}"
        )
        ftype = fspec.get("type")
        _require(
            ftype in FIELD_TYPES,
            f"{fpath}.type",
            f"expected one of {', '.join(FIELD_TYPES)}, got {ftype!r}",
        )
        required = bool(fspec.get("required", "default" not in fspec))
        fields.append(
            FieldSpec(name=str(fname), type=ftype, required=required, default=fspec.get("default"))
        )
    return tuple(fields), None


def _enrich_step(spec: Any, path: str) -> Mapping[str, Any]:
    _require(isinstance(spec, Mapping) and spec.get("op") in ENRICH_OPS, f"{path}.op",
             f"expected one of {', '.join(ENRICH_OPS)}, got {spec.get('op') if isinstance(spec, Mapping) else spec!r}")  # fmt: skip
    op = spec["op"]
    needs = {
        "rename": ("from", "to"), "default": ("field", "value"), "log1p": ("field",),
        "scale": ("field", "factor"), "lookup": ("key", "table"), "drop": ("field",),
    }[op]  # fmt: skip
    for key in needs:
        _require(key in spec, f"{path}.{key}", f"the {op} step needs {', '.join(needs)}")
    return dict(spec)
