"""The README's first command: `rendezvous demo` on the test stack, MLflow models scored in Flink."""

from __future__ import annotations

import re

import pytest

from rendezvous import demo, deploy
from rendezvous.stack.procs import Service

pytestmark = [pytest.mark.e2e, pytest.mark.flink, pytest.mark.mlflow]


def test_demo_answers_with_the_registered_champion(stack, stack_env, capsys):
    try:
        assert demo.run(stack.settings, requests=40, concurrency=2) == 0
        out = capsys.readouterr().out
        table = out[out.index("answers  model") : out.index("latency at the client")]
        rows = [line.split(maxsplit=3) for line in table.splitlines()[1:] if line.strip()]
        rows = [r for r in rows if not r[0].startswith("first")]
        counts = {(r[1], r[3]): int(r[0]) for r in rows}
        # Every request is answered by its deadline: by a model, or (a stall of a cold two-core
        # machine, when even the backstop misses the 100 ms SLA, or the broker does not
        # acknowledge a request within it) with an explicit error. Each is still archived:
        # the count below includes them.
        errors = [r for r in rows if r[1] == "HTTP"]
        explicit = {
            ("502", "no_answer"),
            ("504", "deadline_exceeded"),
            ("503", "kafka_unavailable"),
        }
        assert all((r[2], r[3].split()[-1]) in explicit for r in errors), out
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
        warm_ups = sum(int(n) for n in re.findall(r"after (\d+) warm-up requests", out + again))
        replay_the_champion(stack, stack_env, versions["champion"], requests=warm_ups + 40 + 4)
    finally:
        deploy.cancel(stack, log=lambda _: None)
        Service("proxy", stack.settings.run_dir, stack.settings.logs_dir).stop()


def replay_the_champion(stack, stack_env, version: str, *, requests: int) -> None:
    """The README's replay example: the champion's registered version over the demo's archived
    requests reproduces what the live champion answered."""
    import os
    import subprocess
    import sys
    import time

    from rendezvous.archive.sql import ArchiveSQL

    # Every request the demo sent is archived; those that reached enrichment after their
    # deadline were decided as errors without being scored, so they have no champion score.
    deadline = time.monotonic() + 120
    while True:  # the archive commits files on checkpoints (every 10 s)
        with ArchiveSQL(stack.settings.archive_dir) as db:
            counts = db.frame(
                "SELECT (SELECT count(*) FROM requests WHERE service = ?) AS archived, "
                "(SELECT count(*) FROM requests WHERE service = ? AND error IS NULL) AS scorable, "
                "(SELECT count(*) FROM scores WHERE service = ? AND model = 'champion') AS scored",
                [demo.SERVICE] * 3,
            ).iloc[0]
        if counts["archived"] >= requests and counts["scored"] >= counts["scorable"]:
            break
        assert time.monotonic() < deadline, f"of {requests} requests: {dict(counts)}"
        time.sleep(2)
    assert counts["archived"] == requests and counts["scored"] == counts["scorable"], dict(counts)
    requests = int(counts["scorable"])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rendezvous.cli",
            "replay",
            "--service",
            demo.SERVICE,
            "--model-uri",
            f"models:/{demo.SERVICE}/{version}",
            "--replay-id",
            "demo-champion",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **stack_env},
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    row = next(
        line.split() for line in done.stdout.splitlines() if line.strip().startswith("champion")
    )
    # against  live  replayed  matched  missing  status-changed  agreement  delta mean ...
    assert row[1] == row[2] == row[3] == str(requests), done.stdout
    assert row[4:7] == ["0", "0", "100.0%"] and row[7] == "+0.0000", done.stdout
