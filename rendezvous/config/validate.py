"""From a file's data to a Config, or to the list of every problem in it.

Two passes: the format's definitions (rendezvous.config.format) check shapes, types, ranges and
unknown keys; then the checks a schema cannot express (names that refer to models, one
champion, keys newer than the file's declared version) run on each service whose shape is right.
Every problem names its field path, what was expected and what was found.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from rendezvous.config import format as fmt
from rendezvous.config.spec import Config, FieldSpec, ModelSpec, ServiceSpec
from rendezvous.guard import GuardRule
from rendezvous.traffic import Split


@dataclass(frozen=True)
class Problem:
    path: str  # dotted, with list indexes: services.credit.models[0].uri ("" for the file)
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def check(data: Any, *, source: str = "<inline>") -> tuple[Config | None, list[Problem]]:
    """The configuration and no problems, or None and every problem found."""
    top = _top_level(data)
    if top:
        return None, top
    version = data.get("version", fmt.FORMAT_VERSION)
    try:
        fmt.File.model_validate(data)
        problems: list[Problem] = []
    except ValidationError as exc:
        problems = _dedupe(_translate(e) for e in exc.errors())
    if any(p.path == "version" for p in problems):
        return None, problems
    broken = {p.path.split(".")[1] for p in problems if p.path.startswith("services.")}
    services: dict[str, ServiceSpec] = {}
    for name, raw in data["services"].items():
        path = f"services.{name}"
        found = _semantics(raw, path)
        if str(name) not in broken:
            svc = fmt.Service.model_validate(raw)
            found += _newer_keys(svc, path, version)
            if not found:
                services[str(name)] = _to_spec(str(name), svc)
        problems += found
    if problems:
        return None, problems
    return Config(services=services, source=source), []


def _top_level(data: Any) -> list[Problem]:
    shape = "expected a top-level mapping with a 'services' mapping"
    if not isinstance(data, Mapping) or not isinstance(data.get("services"), Mapping):
        hint = ""
        if isinstance(data, Mapping):
            near = difflib.get_close_matches("services", [str(k) for k in data], n=1)
            if near and near[0] != "services":
                hint = f"; found `{near[0]}`: did you mean `services`?"
        return [Problem("", shape + hint)]
    if not data["services"]:
        return [Problem("", "'services' is empty; declare at least one service")]
    version = data.get("version", fmt.FORMAT_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > fmt.FORMAT_VERSION:
        return [
            Problem(
                "version",
                f"this file is written for format version {version}, newer than this release "
                f"reads (1 to {fmt.FORMAT_VERSION}); upgrade rendezvous, or write the file for "
                f"version {fmt.FORMAT_VERSION}",
            )
        ]
    return []


def _dedupe(problems: Any) -> list[Problem]:
    seen: dict[tuple[str, str], Problem] = {}
    for p in problems:
        seen.setdefault((p.path, p.message), p)
    return list(seen.values())


# ---------------------------------------------------------------- pydantic errors, in our words


def _translate(error: Mapping[str, Any]) -> Problem:
    loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    path, target, info = _walk(loc)
    expect = _expect(target, info)
    if kind == "extra_forbidden":
        return Problem(path, _unknown_key(str(loc[-1]), _parent_model(loc)))
    if loc and loc[-1] == "[key]":
        if loc[0] == "services":
            return Problem(path, "service names use letters, digits, - and _")
        return Problem(path, f"invalid key {value!r}")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        op = value.get("op") if isinstance(value, Mapping) else value
        return Problem(f"{path}.op", f"expected one of {', '.join(fmt.ENRICH_OPS)}, got {op!r}")
    if kind == "missing":
        parent = _parent_model(loc)
        if isinstance(parent, type) and issubclass(parent, fmt._Step):
            op = parent.model_fields["op"].annotation.__args__[0]
            needs = [
                f.alias or n
                for n, f in parent.model_fields.items()
                if f.is_required() and n != "op"
            ]
            return Problem(path, f"the {op} step needs {', '.join(needs)}")
        return Problem(path, f"required: expected {expect}")
    return Problem(path, f"expected {expect}, got {value!r}")


def _unknown_key(key: str, model: Any) -> str:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return "unknown key"
    known = [f.alias or n for n, f in model.model_fields.items()]
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if near:
        return f"unknown key; did you mean `{near[0]}`?"
    return f"unknown key; the keys here are {', '.join(known)}"


def _expect(target: Any, info: Any) -> str:
    for meta in getattr(info, "metadata", ()):
        if isinstance(meta, fmt.Expect):
            return meta.phrase
    model = _model_of(target)
    if model is not None:
        return model.__expect__
    if _is_union(target) and any(
        _model_of(a) and issubclass(_model_of(a), fmt._Step) for a in _args(target)
    ):
        return f"an enrichment step {{op: {' | '.join(fmt.ENRICH_OPS)}, ...}}"
    return "a valid value"


def _walk(loc: tuple[Any, ...]) -> tuple[str, Any, Any]:
    """The printable path of ``loc``, the type found there and the FieldInfo that declared it."""
    ann: Any = fmt.File
    info: Any = None
    path = ""
    for part in loc:
        if part == "[key]":  # the error is about the key just named, not its value
            return path, None, None
        ann, metas = _unwrap(ann)
        if info is None and metas:
            info = _Metas(metas)
        if _is_union(ann):
            member = _union_member(ann, part)
            if member is not None:  # the part names the union's branch, not a key
                ann = member
                continue
        model = _model_of(ann)
        if model is not None:
            field = model.model_fields.get(part) or next(
                (f for f in model.model_fields.values() if f.alias == part), None
            )
            name = part
            path = f"{path}.{name}" if path else str(name)
            if field is None:
                return path, None, None
            ann, info = _with_metadata(field), field
            continue
        origin = typing.get_origin(ann)
        if origin is list and isinstance(part, int):
            path += f"[{part}]"
            ann, info = typing.get_args(ann)[0], None
        elif origin is dict:
            path = f"{path}.{part}"
            ann, info = typing.get_args(ann)[1], None
        else:
            return path, None, None
    ann, metas = _unwrap(ann)
    if info is None and metas:
        info = _Metas(metas)
    return path, ann, info


@dataclass
class _Metas:
    metadata: list[Any]


def _with_metadata(field: Any) -> Any:
    if field.metadata:
        return typing.Annotated[(field.annotation, *field.metadata)]
    return field.annotation


def _unwrap(ann: Any) -> tuple[Any, list[Any]]:
    metas: list[Any] = []
    while True:
        if typing.get_origin(ann) is typing.Annotated:
            metas += list(ann.__metadata__)
            ann = ann.__origin__
            continue
        if _is_union(ann):
            args = [a for a in _args(ann) if a is not type(None)]
            if len(args) == 1:
                ann = args[0]
                continue
        return ann, metas


def _is_union(ann: Any) -> bool:
    return typing.get_origin(ann) in (typing.Union, types.UnionType)


def _args(ann: Any) -> tuple[Any, ...]:
    return typing.get_args(ann)


def _union_member(ann: Any, part: Any) -> Any:
    for arg in _args(ann):
        inner, metas = _unwrap(arg)
        if any(getattr(m, "tag", None) == part for m in metas):
            return arg
        model = _model_of(inner)
        op = model.model_fields.get("op") if model is not None else None
        if op is not None and part in typing.get_args(op.annotation):
            return arg
    return None


def _model_of(ann: Any) -> type[BaseModel] | None:
    ann, _ = _unwrap(ann)
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _parent_model(loc: tuple[Any, ...]) -> Any:
    _, target, _ = _walk(loc[:-1])
    return _model_of(target) if target is not None else None


# ---------------------------------------------------------------- what a schema cannot say


def _newer_keys(node: Any, path: str, version: int) -> list[Problem]:
    """Keys the file sets that its declared format version does not have yet."""
    found: list[Problem] = []
    if isinstance(node, BaseModel):
        for name in node.model_fields_set:
            field = type(node).model_fields[name]
            key = field.alias or name
            since = next((m for m in field.metadata if isinstance(m, fmt.Since)), None)
            if since is not None and since.version > version:
                found.append(
                    Problem(
                        f"{path}.{key}",
                        f"`{key}` was introduced in format version {since.version}; this file "
                        f"declares version: {version}; set version: {since.version} or remove the key",
                    )
                )
            found += _newer_keys(getattr(node, name), f"{path}.{key}", version)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += _newer_keys(item, f"{path}[{i}]", version)
    elif isinstance(node, dict):
        for key, item in node.items():
            found += _newer_keys(item, f"{path}.{key}", version)
    return found


def _semantics(raw: Any, path: str) -> list[Problem]:
    """Cross-references within one service. Reads the raw data defensively, so that these are
    reported beside shape errors elsewhere in the same service."""
    if not isinstance(raw, Mapping):
        return []
    problems: list[Problem] = []
    listed = raw.get("models") if isinstance(raw.get("models"), list) else []
    models = [m for m in listed if isinstance(m, Mapping)]
    for i, m in enumerate(listed):
        if not isinstance(m, Mapping):
            continue
        uri, func = m.get("uri"), m.get("callable")
        if m.get("role") == "decoy":
            if uri is not None or func is not None:
                problems.append(
                    Problem(
                        f"{path}.models[{i}]", "a decoy has no uri or callable; it only archives"
                    )
                )
            if m.get("quota_weight") is not None:
                problems.append(
                    Problem(
                        f"{path}.models[{i}].quota_weight",
                        "a decoy scores nothing, so no request is charged for it; remove "
                        "quota_weight",
                    )
                )
        elif (uri is None) == (func is None):
            problems.append(
                Problem(
                    f"{path}.models[{i}]",
                    "set exactly one of uri (an MLflow model URI) or callable ('module:function')",
                )
            )
    names = [m.get("name") for m in models if isinstance(m.get("name"), str)]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        problems.append(
            Problem(f"{path}.models", f"model names must be unique; repeated: {', '.join(dup)}")
        )
    champions = [str(m.get("name")) for m in models if m.get("role") == "champion"]
    if len(champions) > 1:
        problems.append(
            Problem(f"{path}.models", f"at most one champion; found {', '.join(champions)}")
        )
    roles = {m.get("name"): m.get("role") for m in models if isinstance(m.get("name"), str)}
    preference = raw.get("preference")
    for i, n in enumerate(preference if isinstance(preference, list) else ()):
        where = f"{path}.preference[{i}]"
        if n not in roles:
            problems.append(Problem(where, f"{n!r} is not one of the models ({', '.join(roles)})"))
        elif roles[n] == "decoy":
            problems.append(
                Problem(where, f"{n!r} is the decoy; a decoy only archives and cannot answer")
            )
    guard = raw.get("guard")
    if isinstance(guard, Mapping) and not any(
        guard.get(f) is not None for f in ("error_rate", "late_rate", "psi")
    ):
        problems.append(
            Problem(
                f"{path}.guard",
                "set at least one threshold: error_rate, late_rate or psi (or remove guard)",
            )
        )
    problems += _traffic(raw, path, models, roles)
    source = raw.get("input")
    if isinstance(source, Mapping) and "from_model" in source and source["from_model"] not in roles:
        problems.append(
            Problem(
                f"{path}.input.from_model",
                f"{source['from_model']!r} is not one of the models ({', '.join(roles)})",
            )
        )
    return problems


def _traffic(
    raw: Mapping[str, Any], path: str, models: list[Mapping[str, Any]], roles: dict[Any, Any]
) -> list[Problem]:
    """The split's and the samples' references: arms and keys that exist, and no sampled model
    where every request needs its score first."""
    problems: list[Problem] = []
    source = raw.get("input")
    # Input fields declared in the file; None when they come from a model's signature (checked
    # when the signature is read).
    fields = (
        {str(k) for k in source}
        if isinstance(source, Mapping) and "from_model" not in source
        else None
    )
    sampled = {
        m.get("name")
        for m in models
        if isinstance(m.get("sample"), (int, float))
        and not isinstance(m.get("sample"), bool)
        and m["sample"] < 1
    }
    for i, m in enumerate(raw.get("models") if isinstance(raw.get("models"), list) else ()):
        if not isinstance(m, Mapping):
            continue
        key = m.get("sample_key")
        if isinstance(key, str) and fields is not None and key not in fields:
            problems.append(
                Problem(
                    f"{path}.models[{i}].sample_key",
                    f"{key!r} is not one of the input fields ({', '.join(sorted(fields))})",
                )
            )
        if key is not None and m.get("sample") is None:
            problems.append(
                Problem(f"{path}.models[{i}].sample_key", "set `sample` too, or remove sample_key")
            )
    split = raw.get("split")
    if isinstance(split, Mapping):
        key = split.get("key")
        if isinstance(key, str) and fields is not None and key not in fields:
            problems.append(
                Problem(
                    f"{path}.split.key",
                    f"{key!r} is not one of the input fields ({', '.join(sorted(fields))}); "
                    "the key must be a field every request can carry",
                )
            )
        arms = split.get("arms")
        for name in arms if isinstance(arms, Mapping) else ():
            where = f"{path}.split.arms.{name}"
            if name not in roles:
                problems.append(
                    Problem(where, f"{name!r} is not one of the models ({', '.join(roles)})")
                )
            elif roles[name] == "decoy":
                problems.append(
                    Problem(
                        where, f"{name!r} is the decoy; a decoy only archives and cannot answer"
                    )
                )
            elif name in sampled:
                problems.append(
                    Problem(
                        where,
                        f"{name!r} samples requests; an arm's model must score every request of "
                        "its arm: remove its `sample`, or take it out of the split",
                    )
                )
    preference = raw.get("preference")
    head = preference[0] if isinstance(preference, list) and preference else None
    if head is None:  # the default preference: the champion, canaries, then the backstop
        ranked = sorted(
            (m for m in models if m.get("role") in _DEFAULT_ORDER),
            key=lambda m: _DEFAULT_ORDER[m["role"]],
        )
        head = ranked[0].get("name") if ranked else None
    if head is not None and head in sampled:
        where = f"{path}.preference[0]" if isinstance(preference, list) else f"{path}.models"
        problems.append(
            Problem(
                where,
                f"{head!r} samples requests but answers first; the first choice must score "
                "every request: remove its `sample`, or put another model first",
            )
        )
    return problems


# ---------------------------------------------------------------- to the runtime objects

_DEFAULT_ORDER = {"champion": 0, "canary": 1, "backstop": 3}


def _to_spec(name: str, svc: fmt.Service) -> ServiceSpec:
    models = tuple(
        ModelSpec(
            name=m.name,
            role=m.role,
            uri=m.uri,
            callable=m.callable,
            params=dict(m.params),
            isolation=m.isolation,
            sample=m.sample,
            sample_key=m.sample_key,
            quota_weight=m.quota_weight,
            parallelism=m.parallelism,
        )
        for m in svc.models
    )
    if svc.preference is not None:
        preference = tuple(svc.preference)
    else:
        # Champion, canaries, backstop; challengers are shadows unless listed explicitly.
        ranked = sorted(
            (m for m in models if m.role in _DEFAULT_ORDER), key=lambda m: _DEFAULT_ORDER[m.role]
        )
        preference = tuple(m.name for m in ranked)
    if isinstance(svc.input, fmt.FromModel):
        input_fields, from_model = None, svc.input.from_model
    else:
        input_fields = tuple(
            FieldSpec(
                name=fname,
                type=f.type,
                required=f.required
                if f.required is not None
                else "default" not in f.model_fields_set,
                default=f.default,
            )
            for fname, f in svc.input.items()
        )
        from_model = None
    enrich = tuple(_step(s) for s in svc.enrich)
    return ServiceSpec(
        name=name,
        sla_ms=svc.sla_ms,
        grace_ms=svc.grace_ms,
        models=models,
        preference=preference,
        input_fields=input_fields,
        input_from_model=from_model,
        enrich=enrich,
        code=tuple(svc.code),
        split=Split.of(svc.split.key, svc.split.arms) if svc.split is not None else None,
        guard=GuardRule(**svc.guard.model_dump()) if svc.guard is not None else None,
    )


def _step(step: BaseModel) -> dict[str, Any]:
    out = step.model_dump(by_alias=True, exclude_unset=True)
    return {k: v for k, v in out.items() if v is not None or k == "value"}
