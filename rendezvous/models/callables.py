"""Plain Python callables as models: ``package.module:function`` called with the features."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

import orjson

from rendezvous.config import ModelSpec
from rendezvous.models.errors import ModelLoadError
from rendezvous.models.loaded import _Loaded


def _load_callable(spec: ModelSpec) -> _Loaded:
    target = spec.callable or ""
    module_name, _, func_name = target.partition(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(
            f"model {spec.name}: cannot import {target} ({exc}); a module of your own "
            "belongs in the service's code key (it ships with the jobs), a third-party one "
            "installed in the TaskManagers' Python; check the function name too"
        ) from None
    if not callable(func):
        raise ModelLoadError(
            f"model {spec.name}: {target} is a {type(func).__name__}, not a function; "
            "point callable at a function taking the features dict"
        )
    params = dict(spec.params)
    try:
        inspect.signature(func).bind({}, **params)
    except TypeError as exc:
        raise ModelLoadError(
            f"model {spec.name}: {target}{inspect.signature(func)} cannot be called with the "
            f"features and params {params} ({exc}); fix params in the service configuration"
        ) from None
    except ValueError:  # no signature to check (a builtin)
        pass

    def predict(features: Mapping[str, Any]) -> Any:
        out = func(features, **params) if params else func(features)
        try:
            orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError as exc:
            raise TypeError(
                f"{target} returned a {type(out).__name__} that is not JSON-serialisable ({exc}); "
                "return a dict, list, str, number, bool or None"
            ) from None
        return out

    return _Loaded(version=target, kind="python", predict=predict)
