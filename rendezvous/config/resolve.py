"""Checks of a valid configuration that need the world around it: the MLflow registry, the
Python path, the lookup tables. Each failure is one line naming the field and the fix."""

from __future__ import annotations

import sys
from pathlib import Path

from rendezvous.config.spec import Config, ModelSpec
from rendezvous.config.validate import Problem


def resolve(cfg: Config, *, base_dir: Path, tracking_uri: str | None) -> list[Problem]:
    problems: list[Problem] = []
    for name, svc in cfg.services.items():
        path = f"services.{name}"
        for i, m in enumerate(svc.models):
            where = f"{path}.models[{i}]"
            if m.uri is not None:
                problems += _check_uri(m, f"{where}.uri", tracking_uri)
            elif m.callable is not None:
                problems += _check_callable(m, f"{where}.callable", base_dir, svc.code)
        if svc.input_from_model is not None:
            model = svc.model(svc.input_from_model)
            if model.uri is None:
                problems.append(
                    Problem(
                        f"{path}.input.from_model",
                        f"model {model.name} is a callable and has no MLflow signature; name a model "
                        "with a uri, or declare the input fields",
                    )
                )
            else:
                problems += _check_signature(model, f"{path}.input.from_model", tracking_uri)
        for i, step in enumerate(svc.enrich):
            if step["op"] == "lookup":
                problems += _check_table(step, f"{path}.enrich[{i}].table", base_dir)
    return problems


def _one_line(exc: Exception) -> str:
    text = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def _check_uri(m: ModelSpec, where: str, tracking_uri: str | None) -> list[Problem]:
    from rendezvous.models import parse_model_uri
    from rendezvous.models.registry import _Source

    try:
        ref = parse_model_uri(m.uri or "", model=m.name)
        source = _Source(ref, m.name, tracking_uri)
        if ref.registered:
            version = source.current_version()
            source.artifact_uri(version)
        elif ref.run_id is not None or ref.logged_model_id is not None:
            source.artifact_uri(None)
        elif ref.path and not Path(ref.path).exists():
            return [
                Problem(where, f"{ref.path} does not exist; log the model there or fix the uri")
            ]
    except Exception as exc:
        return [Problem(where, _one_line(exc))]
    return []


def _check_signature(m: ModelSpec, where: str, tracking_uri: str | None) -> list[Problem]:
    from rendezvous.models import input_fields_from_signature

    try:
        input_fields_from_signature(m.uri or "", tracking_uri)
    except Exception as exc:
        return [Problem(where, _one_line(exc))]
    return []


def _check_callable(
    m: ModelSpec, where: str, base_dir: Path, code: tuple[str, ...] = ()
) -> list[Problem]:
    from rendezvous.models.callables import _load_callable

    # The jobs run with the project folder and the service's code on the Python path; so
    # does this check.
    for folder in (str(Path.cwd()), str(base_dir), *(str(base_dir / c) for c in code)):
        if folder not in sys.path:
            sys.path.append(folder)
    try:
        _load_callable(m)
    except Exception as exc:
        return [Problem(where, _one_line(exc))]
    return []


def _check_table(step: dict, where: str, base_dir: Path) -> list[Problem]:
    import csv

    table = base_dir / step["table"]
    column = step.get("table_key", step["key"])
    try:
        with table.open(newline="") as fh:
            header = next(csv.reader(fh), [])
    except OSError as exc:
        return [
            Problem(
                where,
                f"cannot read {table}: {exc.strerror}; paths are relative to the configuration file's folder",
            )
        ]
    if column not in header:
        return [
            Problem(
                where,
                f"{table} has no column {column!r} (its header: {', '.join(header) or 'empty'}); set table_key to the column to match",
            )
        ]
    return []
