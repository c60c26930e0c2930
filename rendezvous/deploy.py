"""Submitting the jobs of a configuration."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rendezvous import config as config_mod
from rendezvous.errors import RendezvousError
from rendezvous.kafka import KafkaConnection
from rendezvous.settings import REPO_ROOT, StackSettings

JOBS_DIR = REPO_ROOT / "jobs"
JOIN_JOB = "rendezvous-join"
SCORE_JOB_PREFIX = "rendezvous-score "


@dataclass(frozen=True)
class JobPlan:
    name: str
    script: Path
    args: tuple[str, ...]


def plan(settings: StackSettings, config_path: Path, *, start: str = "committed") -> list[JobPlan]:
    """The jobs a configuration needs: enrich, the rendezvous join, the archive, one scorer per
    model."""
    cfg = config_mod.load(config_path)
    common = ("--bootstrap", settings.kafka_bootstrap, "--config", str(Path(config_path).resolve()),
              "--tracking-uri", settings.mlflow_url, "--start", start,
              "--checkpoint-interval", f"{settings.serving_checkpoint_s} s",
              *_kafka_properties(settings.kafka))  # fmt: skip
    jobs = [
        JobPlan("rendezvous-enrich", JOBS_DIR / "enrich.py", common),
        JobPlan(JOIN_JOB, JOBS_DIR / "join.py", common),
        JobPlan(
            "rendezvous-archive",
            JOBS_DIR / "archive.py",
            (
                "--bootstrap",
                settings.kafka_bootstrap,
                "--archive",
                str(settings.archive_dir),
                "--checkpoint-interval",
                f"{settings.archive_commit_s} s",
                "--start",
                start,
                *_kafka_properties(settings.kafka),
            ),  # fmt: skip
        ),
    ]
    for service in cfg.services.values():
        for model in service.scoring_models:
            jobs.append(
                JobPlan(
                    f"{SCORE_JOB_PREFIX}{service.name}/{model.name}",
                    JOBS_DIR / "score.py",
                    (*common, "--service", service.name, "--model", model.name),
                )
            )
    return jobs


def _kafka_properties(kafka: KafkaConnection) -> tuple[str, ...]:
    """The jobs' argument naming the Kafka properties file: its path, so that no secret shows
    on a command line; the job reads the file where it is submitted."""
    return () if kafka.source is None else ("--kafka-properties", str(kafka.source))


LIVE = ("RUNNING", "CREATED", "INITIALIZING", "RESTARTING")


def joining_live(job: JobPlan) -> JobPlan:
    """A scoring job's plan with ``--start live``; other jobs are returned as they are."""
    if not job.name.startswith(SCORE_JOB_PREFIX):
        return job
    args = list(job.args)
    args[args.index("--start") + 1] = "live"
    return JobPlan(job.name, job.script, tuple(args))


def running_jobs(stack) -> dict[str, str]:
    """Name -> job id of this project's jobs that are live on the cluster."""
    return {
        j["name"]: j["jid"]
        for j in stack.flink.jobs()
        if j["state"] in LIVE and j["name"].startswith("rendezvous-")
    }


def cancel(stack, *, only: list[str] | None = None, log=print) -> list[str]:
    """Cancel the live jobs (those whose name contains one of ``only``); returns their names."""
    done = []
    for name, jid in sorted(running_jobs(stack).items()):
        if only and not any(o in name for o in only):
            continue
        stack.flink.cancel(jid)
        log(f"  {name:<40} cancelled ({jid})")
        done.append(name)
    return done


def submit(
    stack,
    config_path: Path,
    *,
    only: list[str] | None = None,
    prune: bool = False,
    log=print,
    parallel: int = 3,
) -> dict[str, str]:
    """Submit every planned job that is not already running; returns name -> job id.

    With ``prune``, scoring jobs of models that the configuration no longer lists are
    cancelled; the other jobs keep running either way. A scoring job added while the
    rendezvous job runs starts at the live end of the model inputs (unless its consumer group
    has offsets already): a new model scores traffic from now on, not the retained history.
    """
    running = running_jobs(stack)
    planned = plan(stack.settings, config_path)
    if JOIN_JOB in running:
        planned = [joining_live(job) for job in planned]
    if prune:
        wanted = {job.name for job in planned}
        for name, jid in sorted(running.items()):
            if name.startswith(SCORE_JOB_PREFIX) and name not in wanted:
                stack.flink.cancel(jid)
                log(f"  {name:<40} cancelled: no longer in the configuration")
                del running[name]
    todo = []
    for job in planned:
        if only and not any(o in job.name for o in only):
            continue
        if job.name in running:
            log(f"  {job.name:<40} already running ({running[job.name]})")
        else:
            todo.append(job)
    submitted = {}

    def one(job: JobPlan) -> tuple[str, str]:
        return job.name, stack.flink.submit(job.script, list(job.args), name_hint=job.name)

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for name, jid in pool.map(one, todo):
            log(f"  {name:<40} submitted ({jid})")
            submitted[name] = jid
    if todo:
        wait_running(stack, set(submitted.values()))
    return {**running, **submitted}


def wait_running(stack, job_ids: set[str], timeout_s: float = 120.0) -> None:
    """Wait until every task of the jobs is RUNNING (sources are reading)."""
    deadline = time.monotonic() + timeout_s
    while True:
        pending = []
        for jid in job_ids:
            info = stack.flink.rest(f"/jobs/{jid}")
            if info["state"] in ("FAILED", "CANCELED", "FINISHED"):
                raise RendezvousError(
                    f"job {info['name']} is {info['state']}; see the Flink UI at {stack.settings.flink_url}/#/job/{jid}"
                )
            if info["state"] != "RUNNING" or any(
                v["status"] != "RUNNING" for v in info["vertices"]
            ):
                pending.append(info["name"])
        if not pending:
            return
        if time.monotonic() > deadline:
            raise RendezvousError(f"jobs not running after {timeout_s:.0f}s: {', '.join(pending)}")
        time.sleep(0.25)
