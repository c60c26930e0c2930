"""An MLflow tracking server with a SQLite backend and a local artifact store."""

from __future__ import annotations

import os
import urllib.request

from rendezvous.settings import StackSettings
from rendezvous.stack.procs import Service, ensure_port_free


class MlflowServer:
    name = "mlflow"

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.dir = settings.data_dir / "mlflow"
        self.service = Service(self.name, settings.run_dir, settings.logs_dir)

    @property
    def address(self) -> str:
        return self.settings.mlflow_url

    @property
    def backend_uri(self) -> str:
        # Four slashes: an absolute path. A relative SQLite path would resolve against
        # whichever process opens it.
        return f"sqlite:///{self.dir / 'mlflow.db'}"

    def start(self) -> None:
        s = self.settings
        ensure_port_free(
            s.host, s.mlflow_port, wanted_by="the MLflow server", setting="RDV_MLFLOW_PORT"
        )
        (self.dir / "artifacts").mkdir(parents=True, exist_ok=True)
        argv = [
            str(s.python),
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.backend_uri,
            "--artifacts-destination",
            str(self.dir / "artifacts"),
            "--host",
            s.host,
            "--port",
            str(s.mlflow_port),
            "--workers",
            "1",
        ]
        # The server's background job runner (a pool of huey consumers, about 1 GB) serves
        # GenAI evaluation jobs this project does not use.
        env = dict(
            os.environ, MLFLOW_HOME=str(self.dir), MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"
        )
        self.service.start(argv, env=env, cwd=self.dir)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.address + "/health", timeout=1) as resp:
                return resp.status == 200
        except Exception:
            return False
