"""The archive job on the real stack: a known request stream lands in the three Parquet tables,
readable with DuckDB (``rendezvous sql``), pyarrow and Flink SQL."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from rendezvous import deploy, serde, topics
from rendezvous.archive import tables
from rendezvous.archive.sql import ArchiveSQL
from rendezvous.heartbeat import Heartbeat
from tests.integration.feed import RequestFeed, wait_archived, write_service

pytestmark = [pytest.mark.flink, pytest.mark.kafka]

# The archive is under test here, not latency: an SLA a cold two-core machine keeps.
SLA_MS, GRACE_MS, N, LATE = 1000, 5000, 12, 3


@pytest.fixture(scope="module")
def archived(stack, tmp_path_factory):
    """Run every job for a fresh service, send N requests, wait until all N decisions are
    archived; yields the service name and the request IDs, the last LATE with a late champion."""
    name = "arc" + uuid.uuid4().hex[:6]
    path = write_service(
        tmp_path_factory.mktemp("arc") / "services.yaml",
        name,
        sla_ms=SLA_MS,
        grace_ms=GRACE_MS,
        models=[
            '{name: champion, role: champion, callable: "udfs.zoo:scripted", params: {value: 0.9}}',
            '{name: canary, role: canary, callable: "udfs.zoo:constant", params: {value: 0.1}}',
        ],
    )
    jobs = deploy.submit(stack, path, log=lambda _: None)
    feed = RequestFeed(stack.settings.kafka_bootstrap, name, SLA_MS)
    late = set()
    ids = []
    with Heartbeat(stack.settings.kafka, source="archive-test"):
        feed.warm_up()
        stray_records(stack.settings.kafka_bootstrap, name)
        for i in range(N):
            rid = f"{name}-{i}"
            is_late = i >= N - LATE
            if is_late:
                late.add(rid)
            if i == N - LATE:
                # The champion's job scores one request at a time and reads two partitions in
                # no set order: the in-time requests are answered before a slow one is sent.
                feed.wait_results(ids)
            feed.send(rid, {"x": float(i), "delay_ms": SLA_MS + 200.0 if is_late else 0.0})
            ids.append(rid)
        wait_archived(stack.settings.archive_dir, f"{name}-", [N, 2 * N, N], timeout_s=180)
    feed.close()
    yield name, ids, late
    for jid in jobs.values():
        stack.flink.cancel(jid)


def stray_records(bootstrap: str, service: str) -> None:
    """Values the archive cannot take, in each of its topics ahead of the requests: a record of
    the right kind that is not Avro, a single score where batches belong, bytes of no kind, an
    empty value. The archive skips them (the rdv-batch format) instead of failing for good."""
    from confluent_kafka import Producer

    score = {
        "request_id": f"stray-{service}",
        "service": f"stray{service}",
        "model": "m",
        "version": "1",
        "role": "champion",
        "status": "ok",
        "output": "1",
        "error": None,
        "received_ms": 1,
        "deadline_ms": 2,
        "started_ms": 1,
        "scored_ms": 1,
    }
    p = Producer({"bootstrap.servers": bootstrap})
    for topic in tables.SOURCES.values():
        kind = serde.BATCH_OF[topics.ITEM_KIND[topic]]
        for value in (
            bytes([kind]) + b"not avro",
            serde.encode(serde.Kind.SCORE, score),
            b"\xff\xfe",
            b"",
        ):
            p.produce(topic, value)
    assert p.flush(10) == 0


def test_each_request_appears_once_in_each_table(archived, stack):
    name, ids, _ = archived
    with ArchiveSQL(stack.settings.archive_dir) as db:
        for table, per_request in (("requests", 1), ("scores", 2), ("decisions", 1)):
            rows = db.con.sql(
                f"SELECT request_id, count(*) FROM {table} WHERE request_id LIKE '{name}-%' GROUP BY 1"
            ).fetchall()
            assert dict(rows) == {rid: per_request for rid in ids}, table


def test_tables_join_by_request_id_and_keep_late_scores(archived, stack):
    name, ids, late = archived
    with ArchiveSQL(stack.settings.archive_dir) as db:
        rows = db.con.sql(
            f"""
            SELECT d.request_id, d.model, d.reason, s.late, s.latency_ms, r.features, d.output,
                   list_filter(d.scores, lambda x: x.model = 'champion')[1].late AS champion_late
            FROM decisions d
            JOIN requests r USING (request_id)
            JOIN scores s ON s.request_id = d.request_id AND s.model = 'champion'
            WHERE d.request_id LIKE '{name}-%'
            """
        ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(ids)
    for rid, model, reason, s_late, latency, features, output, champion_late in rows:
        assert serde.from_json(features)["x"] == float(ids.index(rid))
        if rid in late:
            assert (model, reason, s_late, champion_late) == (
                "canary",
                "fallback: champion late",
                True,
                True,
            )
            assert latency > SLA_MS and serde.from_json(output) == 0.1
        else:
            assert (model, reason, s_late) == ("champion", "preferred", False)
            assert serde.from_json(output) == 0.9


def test_files_read_with_pyarrow_and_pandas(archived, stack):
    import pyarrow.dataset as ds

    name, ids, _ = archived
    dataset = ds.dataset(
        stack.settings.archive_dir / "decisions",
        format="parquet",
        partitioning="hive",
        exclude_invalid_files=True,
        ignore_prefixes=[".", "_"],
    )
    df = dataset.to_table(
        filter=(ds.field("service") == name)
        & ~ds.field("request_id").isin([f"warm-{name}-{k}" for k in range(1000)])
    ).to_pandas()
    assert sorted(df["request_id"]) == sorted(ids)
    assert all(len(scores) == 2 for scores in df["scores"])


def test_flink_sql_reads_the_same_tables(archived, stack):
    from pyflink.table import EnvironmentSettings, TableEnvironment

    name, ids, late = archived
    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    jars = sorted((stack.settings.jars_dir / "flink").glob("*.jar"))
    t_env.get_config().set("pipeline.jars", ";".join(j.as_uri() for j in jars))
    for statement in tables.flink_ddl(str(stack.settings.archive_dir)).split(";\n"):
        if statement.strip():
            t_env.execute_sql(statement)
    result = t_env.execute_sql(
        f"SELECT model, COUNT(*) FROM decisions WHERE request_id LIKE '{name}-%' GROUP BY model"
    )
    with result.collect() as rows:
        counts = {row[0]: row[1] for row in rows}
    assert counts == {"champion": N - len(late), "canary": len(late)}


def test_replaying_the_champions_own_version_reproduces_its_scores(archived, stack, stack_env):
    """`rendezvous replay` over the archive: a Flink batch job writes the replay table, and the
    diff against the live champion finds every request, identical outputs and no changes."""
    from rendezvous.archive.metrics import OutputFields
    from rendezvous.archive.replay import compare

    name, ids, late = archived
    replay_id = f"test-{name}"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rendezvous.cli",
            "replay",
            "--service",
            name,
            "--model-uri",
            "udfs.zoo:scripted",
            "--params",
            '{"value": 0.9}',
            "--name",
            "champion",
            "--replay-id",
            replay_id,
            "--parallelism",
            "2",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **stack_env},
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with ArchiveSQL(stack.settings.archive_dir) as db:
        replayed = db.frame("SELECT * FROM replay WHERE replay_id = ?", [replay_id])
        live = db.frame("SELECT * FROM scores WHERE service = ?", [name])
    assert set(ids) <= set(replayed["request_id"])
    assert replayed["request_id"].is_unique
    assert set(replayed["request_id"]) == set(live["request_id"])  # warm-up requests too
    assert (replayed["status"] == "ok").all() and (replayed["version"] == "udfs.zoo:scripted").all()
    # The late requests asked the champion to sleep past the SLA: the replay sleeps too.
    slow = replayed[replayed["request_id"].isin(late)]
    assert (slow["latency_ms"] >= SLA_MS + 200).all() and slow["late"].all()

    diff = compare(live, replayed, OutputFields()).set_index("model")
    champion = diff.loc["champion"]
    assert champion["matched"] == champion["live"] == champion["replayed"] == len(replayed)
    assert champion["missing_in_replay"] == champion["missing_in_live"] == 0
    assert champion["status_changed"] == 0
    assert champion["agreement"] == 1.0 and champion["delta_mean"] == 0.0
    assert diff.loc["canary", "agreement"] == 0.0  # 0.9 against the canary's 0.1
    assert "champion" in done.stdout and "100.0%" in done.stdout


def test_report_logs_a_run_to_the_stacks_mlflow_server(archived, stack, stack_env, tmp_path):
    """`rendezvous report --mlflow` against the real tracking server: the run holds the figures
    of the archive (checked here in SQL) and the HTML page as an artifact."""
    from mlflow import MlflowClient

    name, ids, late = archived
    experiment = f"reports-{name}"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rendezvous.cli",
            "report",
            "--service",
            name,
            "--mlflow",
            "--experiment",
            experiment,
            "--html",
            str(tmp_path / "report.html"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **stack_env},
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    client = MlflowClient(stack.settings.mlflow_url)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["service"] == name
    with ArchiveSQL(stack.settings.archive_dir) as db:  # the same figures, in SQL
        ((won,),) = db.con.execute(
            "SELECT avg(coalesce(model = 'champion', false)::int) FROM decisions WHERE service = ?",
            [name],
        ).fetchall()
        ((late_rate, n_late),) = db.con.execute(
            "SELECT avg(late::int), sum(late::int) FROM scores WHERE service = ? "
            "AND model = 'champion'",
            [name],
        ).fetchall()
    assert n_late >= len(late)
    assert run.data.metrics["win_rate.champion"] == pytest.approx(won)
    assert run.data.metrics["late_rate.champion"] == pytest.approx(late_rate)
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["report.html"]
    assert "data:image/png;base64," in (tmp_path / "report.html").read_text()
