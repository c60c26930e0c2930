"""Named connection profiles: the Kafka, Flink and MLflow a command talks to.

A profile names settings of :class:`rendezvous.settings.StackSettings` (the same names as the
``RDV_*`` variables, without the prefix, in lower case), for example::

    # ~/.config/rendezvous/profiles.yaml (or the file RDV_PROFILES names)
    profiles:
      prod:
        kafka_bootstrap: kafka-1.internal:9093,kafka-2.internal:9093
        kafka_properties: /etc/rendezvous/kafka.properties   # SASL_SSL, mTLS: see rendezvous.kafka
        flink_rest_url: http://flink-jobmanager.internal:8081
        flink_python: /usr/bin/python3    # on the TaskManagers; the project's code ships with jobs
        mlflow_tracking_uri: https://mlflow.internal

``rendezvous --profile prod submit ...`` (or ``RDV_PROFILE=prod``) uses it; ``RDV_*``
variables still override single settings. Secrets stay in the Kafka properties file and in
MLflow's own variables, never in a profile, so a profile can be printed and shared.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rendezvous.errors import ConfigError

# Settings a profile may set: where the services are, not how the local stack is built.
KEYS = frozenset(
    {
        "kafka_bootstrap",
        "kafka_properties",
        "kafka_partitions",
        "results_partitions",
        "flink_rest_url",
        "flink_python",
        "mlflow_tracking_uri",
        "home",
        "python",
        "serving_checkpoint_s",
        "archive_commit_s",
        "enrich_parallelism",
        "join_parallelism",
        "archive_parallelism",
    }
)


def path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    given = env.get("RDV_PROFILES")
    if given:
        return Path(given).expanduser()
    config_home = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "rendezvous" / "profiles.yaml"


def load(name: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings of profile ``name``; ConfigError names the file, the profile or the key."""
    import yaml

    file = path(env)
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(
            f"profile {name!r}: no profiles file at {file}; write one (see `rendezvous "
            "profiles --help`) or set RDV_PROFILES to its path"
        ) from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"profile {name!r}: cannot read {file}: {exc}") from None
    profiles = data.get("profiles") if isinstance(data, dict) else None
    if not isinstance(profiles, dict):
        raise ConfigError(f"{file}: expected a top-level mapping 'profiles: {{name: {{...}}}}'")
    if name not in profiles:
        known = ", ".join(sorted(map(str, profiles))) or "none"
        raise ConfigError(f"{file}: no profile {name!r}; its profiles: {known}")
    profile = profiles[name] or {}
    if not isinstance(profile, dict):
        raise ConfigError(f"{file}: profiles.{name}: expected a mapping of settings")
    unknown = sorted(set(map(str, profile)) - KEYS)
    if unknown:
        raise ConfigError(
            f"{file}: profiles.{name}: unknown setting(s) {', '.join(unknown)}; a profile "
            f"sets {', '.join(sorted(KEYS))}"
        )
    out = {}
    for key, value in profile.items():
        if key in ("kafka_properties", "home", "python") and value is not None:
            # relative to the profiles file, so that a file and its properties travel together
            value = str((file.parent / Path(str(value)).expanduser()).resolve())
        out[key] = value
    return out


def names(env: Mapping[str, str] | None = None) -> list[str]:
    """The profiles the profiles file defines (none without a file)."""
    import yaml

    try:
        data = yaml.safe_load(path(env).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    profiles = data.get("profiles") if isinstance(data, dict) else None
    return sorted(map(str, profiles)) if isinstance(profiles, dict) else []
