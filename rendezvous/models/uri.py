"""MLflow model URIs: ``models:/name@alias``, ``models:/name/3``, ``runs:/...``, a folder.

:func:`parse_model_uri` turns a URI into a :class:`ModelRef`; ``_quote`` escapes a value for
an MLflow search filter.
"""

from __future__ import annotations

from dataclasses import dataclass

from rendezvous.models.errors import ModelLoadError


@dataclass(frozen=True)
class ModelRef:
    """A parsed MLflow model URI. Exactly one of the groups is set:
    registry (``name`` with ``alias``, ``version`` or ``latest``), ``logged_model_id``,
    ``run_id`` with ``path``, or a local ``path`` alone."""

    uri: str
    name: str | None = None
    alias: str | None = None
    version: str | None = None
    latest: bool = False
    logged_model_id: str | None = None
    run_id: str | None = None
    path: str | None = None

    @property
    def registered(self) -> bool:
        return self.name is not None


def parse_model_uri(uri: str, *, model: str = "?") -> ModelRef:
    """Parse ``uri``; a malformed one raises :class:`ModelLoadError` naming ``model``."""

    def bad(why: str) -> ModelLoadError:
        return ModelLoadError(
            f"model {model}: cannot read the model URI {uri!r}: {why}; expected "
            "models:/<name>@<alias>, models:/<name>/<version>, runs:/<run id>/<path> or a folder"
        )

    if uri.startswith("models:"):
        rest = uri[len("models:") :].lstrip("/").rstrip("/")
        if not rest:
            raise bad("no model name")
        if "@" in rest:
            name, _, alias = rest.partition("@")
            if not name or not alias or "/" in alias:
                raise bad("an alias URI is models:/<name>@<alias>")
            return ModelRef(uri, name=name, alias=alias)
        if "/" not in rest:
            if rest.startswith("m-"):
                return ModelRef(uri, logged_model_id=rest)
            raise bad("no version or alias after the model name")
        name, _, ver = rest.partition("/")
        if ver.isdigit():
            return ModelRef(uri, name=name, version=str(int(ver)))
        if ver.lower() == "latest":
            return ModelRef(uri, name=name, latest=True)
        raise bad(
            f"{ver!r} is neither a version number nor 'latest' (stages are deprecated "
            "in MLflow; move an alias instead and use models:/<name>@<alias>)"
        )
    if uri.startswith("runs:"):
        rest = uri[len("runs:") :].lstrip("/").rstrip("/")
        run_id, _, path = rest.partition("/")
        if not run_id or not path:
            raise bad("a run URI is runs:/<run id>/<artifact path>, e.g. runs:/0a1b.../model")
        return ModelRef(uri, run_id=run_id, path=path)
    if uri.startswith("file:"):
        return ModelRef(uri, path=uri[len("file:") :].replace("///", "/", 1) or "/")
    if "://" in uri or uri.split(":", 1)[0] in ("http", "https", "s3", "gs", "dbfs"):
        raise bad("only registry, run and local-folder URIs are supported")
    return ModelRef(uri, path=uri)


def _quote(value: str | None) -> str:
    return (value or "").replace("'", "\\'")
