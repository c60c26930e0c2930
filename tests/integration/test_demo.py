"""The README's first command: `rendezvous demo` on the test stack, MLflow models scored in Flink."""

from __future__ import annotations

import pytest

from rendezvous import demo, deploy
from rendezvous.stack.procs import Service

pytestmark = [pytest.mark.e2e, pytest.mark.flink, pytest.mark.mlflow]


def test_demo_answers_with_the_registered_champion(stack, capsys):
    try:
        assert demo.run(stack.settings, requests=40, concurrency=2) == 0
        out = capsys.readouterr().out
        table = out[out.index("answers  model") : out.index("latency at the client")]
        rows = [line.split(maxsplit=3) for line in table.splitlines()[1:] if line.strip()]
        counts = {(r[1], r[3]): int(r[0]) for r in rows if not r[0].startswith("first")}
        assert not any(model == "HTTP" for model, _ in counts), out  # every request answered
        assert sum(counts.values()) == 40, out
        # The registered GradientBoosting champion, loaded from MLflow inside the scoring job,
        # answers most requests in time (the rest fall back: a loaded machine misses the SLA).
        assert counts.get(("champion", "preferred"), 0) >= 20, out
        assert "latency at the client: p50" in out and "curl -s -X POST" in out
        versions = demo._registered_versions(stack.settings.mlflow_url)
        assert set(versions) == {"champion", "challenger", "canary"}
        # Run twice: nothing is trained, submitted or started again.
        assert demo.run(stack.settings, requests=4, concurrency=1) == 0
        again = capsys.readouterr().out
        assert "already registered" in again and "submitted" not in again
        assert demo._registered_versions(stack.settings.mlflow_url) == versions
    finally:
        deploy.cancel(stack, log=lambda _: None)
        Service("proxy", stack.settings.run_dir, stack.settings.logs_dir).stop()
