"""The MLflow registry as a model reference sees it: resolve versions, find files, download.

``_Source`` binds one :class:`~rendezvous.models.uri.ModelRef` to one tracking URI (the
process-wide MLflow URI is never touched) and turns registry failures into
:class:`~rendezvous.models.errors.ModelLoadError` messages that say how to fix them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from rendezvous.models.errors import ModelLoadError
from rendezvous.models.folder import _load_folder
from rendezvous.models.loaded import _Loaded
from rendezvous.models.uri import ModelRef, _quote


class _Source:
    """Resolves one reference against one registry and loads versions of it."""

    def __init__(self, ref: ModelRef, model: str, tracking_uri: str | None) -> None:
        self.ref = ref
        self.model = model
        self.tracking_uri = tracking_uri
        self._client = None

    @property
    def where(self) -> str:
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "MLflow's default"

    @property
    def client(self):
        if self._client is None:
            if not self.tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI"):
                # MLflow would fall back to ./mlflow.db and answer from an empty registry.
                raise ModelLoadError(
                    f"model {self.model}: {self.ref.uri} needs an MLflow registry, and no "
                    "tracking URI is set; pass the tracking server's URL (the stack's is "
                    "http://127.0.0.1:5000 by default) or set MLFLOW_TRACKING_URI"
                )
            from mlflow import MlflowClient

            self._client = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client

    # -- resolution -----------------------------------------------------------------------

    def current_version(self) -> str:
        """The version the reference points at now (a registry call for aliases)."""
        ref = self.ref
        try:
            if ref.alias is not None:
                return str(self.client.get_model_version_by_alias(ref.name, ref.alias).version)
            if ref.version is not None:
                return str(self.client.get_model_version(ref.name, ref.version).version)
            if ref.latest:
                versions = self.client.search_model_versions(f"name = '{_quote(ref.name)}'")
                if not versions:
                    raise ModelLoadError(
                        f"model {self.model}: registered model {ref.name!r} has no versions in "
                        f"the registry at {self.where}; register one or fix the uri {ref.uri}"
                    )
                return str(max(int(v.version) for v in versions))
        except ModelLoadError:
            raise
        except Exception as exc:
            raise self._registry_error(exc) from None
        raise AssertionError(f"not a registry reference: {ref}")

    def artifact_uri(self, version: str | None) -> tuple[str, str]:
        """``(version, where the model's files are)`` for this reference."""
        ref = self.ref
        try:
            if ref.registered:
                assert version is not None
                return version, self.client.get_model_version_download_uri(ref.name, version)
            if ref.logged_model_id is not None:
                found = self.client.get_logged_model(ref.logged_model_id)
                return ref.logged_model_id, found.artifact_location
            if ref.run_id is not None:
                return self._run_artifact_uri()
        except ModelLoadError:
            raise
        except Exception as exc:
            raise self._registry_error(exc) from None
        return "local", ref.path or ""

    def _run_artifact_uri(self) -> tuple[str, str]:
        # MLflow 3 keeps a run's models as logged models; older runs keep them as artifacts.
        # Resolved here, with this client: MLflow's own runs:/ resolution uses the global URI.
        ref = self.ref
        client = self.client
        run = client.get_run(ref.run_id)
        first, _, rest = (ref.path or "").partition("/")
        location, model_id = None, None
        for logged in client.search_logged_models(
            experiment_ids=[run.info.experiment_id], filter_string=f"name = '{_quote(first)}'"
        ):
            if logged.source_run_id == ref.run_id:
                model_id = logged.model_id
                location = logged.artifact_location + (f"/{rest}" if rest else "")
                break
        if location is None:
            location = f"{run.info.artifact_uri.rstrip('/')}/{ref.path}"
        # The registered version made from this model, if there is one; else the run id.
        versions = client.search_model_versions(f"run_id = '{_quote(ref.run_id)}'")
        matching = [v for v in versions if model_id and v.source == f"models:/{model_id}"]
        matching = matching or (versions if len(versions) == 1 else [])
        version = str(max(int(v.version) for v in matching)) if matching else ref.run_id
        return version, location

    def _registry_error(self, exc: Exception) -> ModelLoadError:
        ref = self.ref
        text = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        missing = getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST" or any(
            s in str(exc).lower() for s in ("not found", "does not exist")
        )
        if not missing:
            unreachable = any(
                s in str(exc) for s in ("Max retries", "Connection refused", "Failed to establish")
            )
            if unreachable:
                return ModelLoadError(
                    f"model {self.model}: cannot reach the MLflow registry at {self.where} to "
                    f"resolve {ref.uri} ({text}); start it with `rendezvous up` or point the "
                    "job at the right tracking URI"
                )
            return ModelLoadError(
                f"model {self.model}: cannot resolve {ref.uri} in the registry at {self.where}: {text}"
            )
        if ref.run_id is not None:
            return ModelLoadError(
                f"model {self.model}: no run {ref.run_id!r} (or no {ref.path!r} in it) at "
                f"{self.where}; copy the URI from the run's page or use models:/<name>@<alias>"
            )
        if ref.logged_model_id is not None:
            return ModelLoadError(
                f"model {self.model}: no logged model {ref.logged_model_id!r} at {self.where}; "
                "check the id or register the model and use models:/<name>@<alias>"
            )
        try:
            registered = self.client.get_registered_model(ref.name)
        except Exception:
            return ModelLoadError(
                f"model {self.model}: no registered model {ref.name!r} in the registry at "
                f"{self.where} ({ref.uri}); register it (mlflow.sklearn.log_model(..., "
                "registered_model_name=...), `rendezvous demo` registers the demo models) or "
                "fix the uri"
            )
        aliases = dict(getattr(registered, "aliases", None) or {})
        known = ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items())) or "none"
        if ref.alias is not None:
            return ModelLoadError(
                f"model {self.model}: no alias {ref.alias!r} on registered model {ref.name!r} "
                f"at {self.where} (its aliases: {known}); set it with "
                f"MlflowClient().set_registered_model_alias({ref.name!r}, {ref.alias!r}, <version>) "
                "or in the MLflow UI (`rendezvous promote` moves only @champion, to the version "
                "of the model it makes the first choice)"
            )
        return ModelLoadError(
            f"model {self.model}: registered model {ref.name!r} has no version "
            f"{ref.version!r} at {self.where} (its aliases: {known}); list versions in the "
            "MLflow UI or use an alias, models:/<name>@<alias>"
        )

    # -- loading --------------------------------------------------------------------------

    def load(self, version: str | None = None) -> _Loaded:
        """Download and load ``version`` (default: what the reference points at now)."""
        if self.ref.registered and version is None:
            version = self.current_version()
        version, location = self.artifact_uri(version)
        if self.ref.path is not None and self.ref.run_id is None:
            if not os.path.isfile(os.path.join(location, "MLmodel")):
                raise ModelLoadError(
                    f"model {self.model}: {location!r} is not an MLflow model folder (no MLmodel "
                    "file); save one with mlflow.sklearn.save_model(model, path) or use a "
                    "models:/ URI"
                )
            return _load_folder(location, version, self.model, self.ref.uri, owned=False)
        folder = tempfile.mkdtemp(prefix=f"rdv-model-{self.model}-")
        try:
            import mlflow.artifacts

            local = mlflow.artifacts.download_artifacts(
                artifact_uri=location, dst_path=folder, tracking_uri=self.tracking_uri
            )
        except Exception as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise ModelLoadError(
                f"model {self.model}: cannot download {self.ref.uri} (version {version}, files "
                f"at {location}) from {self.where}: {str(exc).splitlines()[0][:300]}; check the "
                "artifact store is reachable from this machine (mlflow server "
                "--artifacts-destination)"
            ) from None
        return _load_folder(local, version, self.model, self.ref.uri, owned=True, folder=folder)

    def describe(self) -> Any:
        """The model's MLmodel description (mlflow.models.Model), downloading only that file."""
        from mlflow.models import Model

        version = self.current_version() if self.ref.registered else None
        version, location = self.artifact_uri(version)
        if self.ref.path is not None and self.ref.run_id is None:
            path = os.path.join(location, "MLmodel")
            if not os.path.isfile(path):
                raise ModelLoadError(
                    f"model {self.model}: {location!r} is not an MLflow model folder (no MLmodel file)"
                )
            return Model.load(path)
        with tempfile.TemporaryDirectory(prefix="rdv-mlmodel-") as folder:
            try:
                import mlflow.artifacts

                path = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{location.rstrip('/')}/MLmodel",
                    dst_path=folder,
                    tracking_uri=self.tracking_uri,
                )
            except Exception as exc:
                raise ModelLoadError(
                    f"model {self.model}: cannot download the MLmodel file of {self.ref.uri} "
                    f"from {self.where}: {str(exc).splitlines()[0][:300]}"
                ) from None
            return Model.load(path)
