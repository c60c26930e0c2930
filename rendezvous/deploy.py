"""Submitting the jobs of a configuration."""

from __future__ import annotations

import contextlib
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rendezvous import config as config_mod
from rendezvous import failures, slots, topics
from rendezvous.clock import now_ms
from rendezvous.errors import ConfigError, JobFailed, NotEnoughSlots
from rendezvous.kafka import KafkaConnection
from rendezvous.settings import REPO_ROOT, StackSettings

if TYPE_CHECKING:
    from rendezvous.control import ControlLog

JOBS_DIR = REPO_ROOT / "jobs"
ENRICH_JOB = "rendezvous-enrich"
JOIN_JOB = "rendezvous-join"
ARCHIVE_JOB = "rendezvous-archive"
SCORE_JOB_PREFIX = "rendezvous-score "


@dataclass(frozen=True)
class JobPlan:
    name: str
    script: Path
    args: tuple[str, ...]
    files: tuple[Path, ...] = ()  # shipped with the job onto the workers' Python path
    parallelism: int = 1  # parallel tasks, one slot each (flink run -p)
    reads: tuple[str, ...] = ()  # the topics its sources share out between its tasks


def code_of(spec, config_path: Path) -> tuple[Path, ...]:
    """A service's own code (its ``code`` key), resolved against its configuration file;
    ConfigError names a path that is not there."""
    base = Path(config_path).resolve().parent
    out = []
    for i, entry in enumerate(spec.code):
        path = (base / entry).resolve()
        if not path.exists():
            raise ConfigError(
                f"{config_path}: services.{spec.name}.code[{i}]: {path} does not exist; the "
                "path is relative to the configuration file"
            )
        out.append(path)
    return tuple(out)


def plan(settings: StackSettings, config_path: Path, *, start: str = "committed") -> list[JobPlan]:
    """The jobs a configuration needs: the shared enrich, rendezvous and archive jobs (one
    each per cluster, whatever the number of files: they take every service from the control
    topic), and one scorer per model of the file's services."""
    cfg = config_mod.load(config_path)
    shared = (
        "--bootstrap",
        settings.kafka_bootstrap,
        "--tracking-uri",
        settings.mlflow_url,
        "--start",
        start,
        "--checkpoint-interval",
        f"{settings.serving_checkpoint_s} s",
        *_kafka_properties(settings.kafka),
    )
    scoring = (*shared, "--config", str(Path(config_path).resolve()))
    jobs = [
        JobPlan(
            ENRICH_JOB,
            JOBS_DIR / "enrich.py",
            shared,
            parallelism=settings.enrich_parallelism,
            reads=(topics.REQUESTS,),
        ),
        JobPlan(
            JOIN_JOB,
            JOBS_DIR / "join.py",
            shared,
            parallelism=settings.join_parallelism,
            reads=topics.RENDEZVOUS,
        ),
        JobPlan(
            ARCHIVE_JOB,
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
            ),
            parallelism=settings.archive_parallelism,
            reads=(topics.MODEL_INPUT, topics.SCORES, topics.DECISIONS, topics.FEEDBACK),
        ),
    ]
    for service in cfg.services.values():
        code = code_of(service, config_path)
        for model in service.scoring_models:
            jobs.append(
                JobPlan(
                    score_job_name(service.name, model.name),
                    JOBS_DIR / "score.py",
                    (*scoring, "--service", service.name, "--model", model.name),
                    code,
                    parallelism=model.parallelism,
                    reads=(topics.MODEL_INPUT,),
                )
            )
    return jobs


def partition_shortfall(jobs: list[JobPlan], partitions: dict[str, int]) -> str | None:
    """None when every job's input topics have at least as many partitions as it has tasks
    (``partitions``: topic -> partitions, as the cluster lists them); else the message naming
    the job, the topic and the setting. A task with no partition would read nothing, and hold
    back the watermark of the jobs that decide on event time."""
    short = [
        (job, topic, partitions[topic])
        for job in jobs
        if job.parallelism > 1
        for topic in job.reads
        if topic in partitions and partitions[topic] < job.parallelism
    ]
    if not short:
        return None
    job, topic, n = short[0]
    return (
        f"{job.name} runs {job.parallelism} parallel tasks but {topic} has {n} "
        f"partition{'s' if n != 1 else ''}; nothing was submitted. Add partitions "
        f"(kafka-topics.sh --alter --topic {topic} --partitions {job.parallelism}; on a new "
        f"stack set RDV_KAFKA_PARTITIONS={job.parallelism}), or lower the job's parallelism"
    )


def score_job_name(service: str, model: str) -> str:
    return f"{SCORE_JOB_PREFIX}{service}/{model}"


def service_of(job_name: str) -> str | None:
    """The service a scoring job scores for; None for the shared jobs."""
    if not job_name.startswith(SCORE_JOB_PREFIX):
        return None
    return job_name.removeprefix(SCORE_JOB_PREFIX).rpartition("/")[0]


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
    return JobPlan(job.name, job.script, tuple(args), job.files)


def running_jobs(stack) -> dict[str, str]:
    """Name -> job id of this project's jobs that are live on the cluster."""
    return {
        j["name"]: j["jid"]
        for j in stack.flink.jobs()
        if j["state"] in LIVE and j["name"].startswith("rendezvous-")
    }


def end_job(stack, name: str, jid: str) -> str:
    """End one job; returns how: "stopped" or "cancelled".

    A scoring job is stopped with a savepoint first (see ``FlinkCluster.stop``): its model may
    run in a Python process of its own, and cancelling that in the middle of a record can take
    its TaskManager down with it. Other jobs, and a scoring job that does not stop in time, are
    cancelled.
    """
    if name.startswith(SCORE_JOB_PREFIX) and stack.flink.stop(jid):
        return "stopped"
    stack.flink.cancel(jid)
    return "cancelled"


def end_jobs(stack, jobs: dict[str, str], *, parallel: int = 4) -> dict[str, str]:
    """End the named jobs (name -> job id) side by side; returns name -> how it ended."""
    if not jobs:
        return {}
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        hows = pool.map(lambda item: end_job(stack, *item), jobs.items())
        return dict(zip(jobs, hows, strict=True))


def cancel(stack, *, only: list[str] | None = None, log=print) -> list[str]:
    """End the live jobs (those whose name contains one of ``only``); returns their names."""
    chosen = {
        name: jid
        for name, jid in sorted(running_jobs(stack).items())
        if not only or any(o in name for o in only)
    }
    for name, how in end_jobs(stack, chosen).items():
        log(f"  {name:<40} {how} ({chosen[name]})")
    return list(chosen)


def submit(
    stack,
    config_path: Path,
    *,
    only: list[str] | None = None,
    prune: bool = False,
    log=print,
    parallel: int = 3,
    control_log: ControlLog | None = None,
    issued_by: str = "",
) -> dict[str, str]:
    """Define the file's services on the cluster and submit every planned job that is not
    already running; returns name -> job id.

    The file's services are published on the control topic (:mod:`rendezvous.catalog`), where
    the shared jobs take them from: services of other files are untouched, and a service
    another file defines is refused (ConfigError) before anything changes. With ``prune``,
    the file's services that it no longer lists are removed, and scoring jobs of the file's
    models that it no longer lists are cancelled. A scoring job added while the rendezvous job
    runs starts at the live end of the model inputs (unless its consumer group has offsets
    already): a new model scores traffic from now on, not the retained history.

    Nothing is published, submitted or cancelled when the new jobs do not fit in the
    cluster's free task slots (:class:`NotEnoughSlots`); a job that fails to start is cancelled
    and named with its cause (:class:`JobFailed`, see :func:`wait_running`).
    """
    from rendezvous import catalog, control

    control_log = control_log or control.KafkaControl(stack.settings.kafka)
    source = str(Path(config_path).resolve())
    defined = catalog.from_file(source)
    change, publish = control.define(
        control_log,
        defined,
        source=source,
        prune=prune,
        issued_by=issued_by or "rendezvous submit",
        issued_ms=now_ms(),
    )
    running = running_jobs(stack)
    planned = plan(stack.settings, config_path)
    if JOIN_JOB in running:
        planned = [joining_live(job) for job in planned]
    stale = {}
    if prune:
        wanted = {job.name for job in planned}
        mine = set(defined) | set(change.removed)
        stale = {
            name: jid
            for name, jid in sorted(running.items())
            if service_of(name) in mine and name not in wanted
        }
    todo, kept = [], []
    for job in planned:
        if only and not any(o in job.name for o in only):
            continue
        (kept if job.name in running else todo).append(job)
    if any(job.parallelism > 1 for job in todo):
        problem = partition_shortfall(todo, stack.kafka.list_topics())
        if problem:
            raise ConfigError(problem)
    check_slots(stack, sum(job.parallelism for job in todo), cancelling=set(stale), log=log)
    publish()
    for definition in change.publish:
        what = "removed" if definition.removed else f"defined (v{definition.version})"
        log(f"  service {definition.service:<32} {what}")
    for name in change.unchanged:
        log(f"  service {name:<32} unchanged")
    for name, how in end_jobs(stack, stale).items():
        log(f"  {name:<40} {how}: no longer in the configuration")
        del running[name]
    for job in kept:
        log(f"  {job.name:<40} already running ({running[job.name]})")
    submitted = {}

    def one(job: JobPlan) -> tuple[str, str]:
        return job.name, stack.flink.submit(
            job.script,
            list(job.args),
            name_hint=job.name,
            python_files=job.files,
            parallelism=job.parallelism,
        )

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for name, jid in pool.map(one, todo):
            log(f"  {name:<40} submitted ({jid})")
            submitted[name] = jid
    if todo:
        wait_running(stack, set(submitted.values()))
    return {**running, **submitted}


def remove(
    stack,
    service: str,
    *,
    log=print,
    control_log: ControlLog | None = None,
    issued_by: str = "",
) -> list[str]:
    """Take a service off the cluster: its definition is removed (the enrich job answers its
    requests with an error from then on) and its scoring jobs are cancelled; other services
    are untouched. Returns the cancelled jobs' names."""
    from rendezvous import control

    control_log = control_log or control.KafkaControl(stack.settings.kafka)
    held = control.remove(
        control_log, service, issued_by=issued_by or "rendezvous remove", issued_ms=now_ms()
    )
    log(f"  service {service:<32} removed (was defined by {held.source})")
    served = {
        name: jid
        for name, jid in sorted(running_jobs(stack).items())
        if service_of(name) == service
    }
    for name, how in end_jobs(stack, served).items():
        log(f"  {name:<40} {how} ({served[name]})")
    return list(served)


@dataclass(frozen=True)
class ServiceStatus:
    """Whether a service answers, from the jobs that serve it."""

    service: str
    state: str  # "serving", "degraded" (it answers, some models do not score) or "down"
    detail: str
    jobs: tuple[str, ...]  # the jobs that serve it, shared ones first


def service_status(spec, preference: tuple[str, ...], working: set[str]) -> ServiceStatus:
    """``spec``'s status given its preference order in force and the names of the jobs whose
    every task runs: it answers when the enrich and rendezvous jobs work and one model of its
    preference order scores."""
    models = [m.name for m in spec.scoring_models]
    jobs = (ENRICH_JOB, JOIN_JOB, *(score_job_name(spec.name, m) for m in models))
    shared_down = [name for name in (ENRICH_JOB, JOIN_JOB) if name not in working]
    if shared_down:
        detail = f"{' and '.join(shared_down)} not running: no answers"
        return ServiceStatus(spec.name, "down", detail, jobs)
    scoring = [m for m in models if score_job_name(spec.name, m) in working]
    first = next((m for m in preference if m in scoring), None)
    if first is None:
        detail = "no model of its preference order is scoring: every request gets no_answer"
        return ServiceStatus(spec.name, "down", detail, jobs)
    detail = f"answers with {first}" + (" (its first choice)" if first == preference[0] else "")
    idle = [m for m in models if m not in scoring]
    if idle:
        detail += f"; not scoring: {', '.join(idle)}"
        return ServiceStatus(spec.name, "degraded", detail, jobs)
    return ServiceStatus(
        spec.name, "serving", f"{detail}; {len(models)}/{len(models)} models scoring", jobs
    )


def working_jobs(overview: list[dict]) -> set[str]:
    """Names of the live jobs whose every task runs (from Flink's ``/jobs/overview``)."""
    return {
        job["name"]
        for job in overview
        if job["state"] == "RUNNING"
        and job.get("tasks", {}).get("running", 0) == job.get("tasks", {}).get("total", -1)
    }


def check_slots(stack, jobs: int, *, cancelling: set[str] = frozenset(), log=print) -> None:
    """Raise :class:`NotEnoughSlots` when ``jobs`` new jobs do not fit in the cluster's free
    slots (after the jobs named in ``cancelling`` give theirs back); warn when losing a
    TaskManager would leave some jobs without a slot."""
    if jobs == 0:
        return
    flink = stack.flink
    capacity = slots.Capacity.from_rest(
        flink.rest("/overview", timeout_s=10), flink.rest("/taskmanagers", timeout_s=10)
    )
    waiting = slots.waiting_for_slots(
        flink.rest("/jobs/overview", timeout_s=10), besides=cancelling
    )
    growth = slots.Growth(
        slots_per_taskmanager=stack.settings.flink_taskmanager_slots,
        # started by `rendezvous up` here
        local=stack.settings.flink_is_local and flink.jobmanager.pid() is not None,
    )
    freed = len(cancelling) * slots.SLOTS_PER_JOB
    problem = slots.shortfall(jobs, capacity, growth, waiting=waiting, freed=freed)
    if problem:
        raise NotEnoughSlots(problem)
    warning = slots.standby_warning(max(jobs - len(cancelling), 0), capacity)
    if warning:
        log(f"  warning: {warning}")


TERMINAL = ("FAILED", "CANCELED", "FINISHED")


def wait_running(
    stack,
    job_ids: set[str],
    timeout_s: float = 120.0,
    *,
    poll_s: float = 0.25,
    exceptions_every_s: float = 1.0,
    clock=time.monotonic,
    sleep=time.sleep,
) -> None:
    """Wait until every task of the jobs is RUNNING (sources are reading).

    A job not running yet has its exception history read every ``exceptions_every_s``; the
    first failure ends the wait: the failing jobs are cancelled (a later ``submit`` then
    submits them again) and :class:`JobFailed` names each with its cause in one line.
    """
    deadline = clock() + timeout_s
    checked: dict[str, float] = {}
    while True:
        pending, failed = [], []
        for jid in sorted(job_ids):
            info = stack.flink.rest(f"/jobs/{jid}")
            if _started(info):
                continue
            ended = info["state"] in TERMINAL
            if ended or clock() - checked.get(jid, float("-inf")) >= exceptions_every_s:
                checked[jid] = clock()
                failure = job_failure(stack, jid)
                if failure is not None or ended:
                    failed.append((jid, info, failure))
                    continue
            pending.append(info)
        if failed:
            raise _failed(stack, failed)
        if not pending:
            return
        if clock() > deadline:
            raise JobFailed(
                f"jobs not running after {timeout_s:.0f}s: "
                + "; ".join(_pending(info) for info in pending)
                + f"; see the Flink UI at {stack.settings.flink_url}"
            )
        sleep(poll_s)


def job_failure(stack, job_id: str) -> failures.Failure | None:
    """The job's latest failure, from its exception history; None when it never failed."""
    return failures.latest(
        stack.flink.rest(f"/jobs/{job_id}/exceptions?maxExceptions=1", timeout_s=10)
    )


def failure_hint(stack, failure: failures.Failure) -> str | None:
    """What to do about a failure, when it is one this side can explain: a third-party
    package the TaskManagers' Python lacks (named with the version installed here)."""
    return failures.missing_package_hint(
        failure, installed_requirements(), python=stack.settings.cluster_python
    )


@functools.lru_cache(maxsize=1)
def installed_requirements() -> dict[str, str]:
    """Top-level module -> ``distribution==version`` of the packages installed here, this
    project's own packages apart (they ship with every job)."""
    from importlib import metadata

    from rendezvous.shipping import PACKAGES

    out = {}
    for module, dists in metadata.packages_distributions().items():
        if module in PACKAGES or not dists:
            continue
        try:
            out[module] = f"{dists[0]}=={metadata.version(dists[0])}"
        except metadata.PackageNotFoundError:
            continue
    return out


def _started(info: dict) -> bool:
    return info["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in info["vertices"])


def _pending(info: dict) -> str:
    states = sorted({v["status"] for v in info["vertices"] if v["status"] != "RUNNING"})
    wait = ", waiting for a free slot" if "SCHEDULED" in states else ""
    tasks = f"; tasks {', '.join(states)}{wait}" if states else ""
    return f"{info['name']} ({info['state']}{tasks})"


def _failed(stack, failed: list[tuple[str, dict, failures.Failure | None]]) -> JobFailed:
    lines, cancelled = [], False
    for jid, info, failure in failed:
        if info["state"] not in TERMINAL:
            with contextlib.suppress(OSError):  # it may have ended meanwhile
                stack.flink.cancel(jid)
                cancelled = True
        lines.append(
            failures.describe(info["name"], failure, failure_hint(stack, failure))
            if failure
            else f"{info['name']}: {info['state']} without an error"
        )
    stopped = "cancelled it" if len(failed) == 1 else "cancelled them"
    lines.append(
        "fix the cause and run `rendezvous submit` again"
        + (f" ({stopped}; " if cancelled else " (")
        + f"full traces in the Flink UI at {stack.settings.flink_url})"
    )
    return JobFailed("\n".join(lines))
