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

Loading validates everything: every problem is reported at once, each naming its field path and
how to fix it. The format is declared once in ``rendezvous.config.format``; its JSON Schema
(``rendezvous config schema``) and its reference (``docs/configuration.md``) come from there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rendezvous.config.format import (
    DEFAULT_GRACE_MS,
    ENRICH_OPS,
    FIELD_TYPES,
    FORMAT_VERSION,
    ISOLATION,
    ROLES,
)
from rendezvous.config.spec import Config, FieldSpec, ModelSpec, ServiceSpec
from rendezvous.config.validate import Problem, check
from rendezvous.errors import ConfigError

__all__ = [
    "DEFAULT_GRACE_MS",
    "ENRICH_OPS",
    "FIELD_TYPES",
    "FORMAT_VERSION",
    "ISOLATION",
    "ROLES",
    "Config",
    "ConfigError",
    "FieldSpec",
    "ModelSpec",
    "Problem",
    "ServiceSpec",
    "check",
    "load",
    "parse",
    "read",
]


def read(path: str | Path) -> Any:
    """The file's data, parsed as JSON (``.json``) or YAML; unreadable files raise ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read configuration {path}: {exc.strerror}; pass --config <file>"
        ) from None
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None


def load(path: str | Path) -> Config:
    return parse(read(path), source=str(path))


def parse(data: Any, *, source: str = "<inline>") -> Config:
    """A validated configuration, or ConfigError listing every problem (one per line)."""
    cfg, problems = check(data, source=source)
    if problems:
        error = ConfigError("\n".join(f"{source}: {p}" for p in problems))
        error.problems = tuple(problems)
        raise error
    assert cfg is not None
    return cfg
