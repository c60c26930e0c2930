"""Whether the jobs to submit fit in the Flink cluster's free task slots, and what to change
when they do not.

Pure: the REST payloads of ``GET /overview``, ``GET /taskmanagers`` and ``GET /jobs/overview``
come in as dicts, a decision or a message goes out. ``rendezvous.deploy`` asks the cluster and
acts on the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from rendezvous.settings import ENV_PREFIX

# Every job of a plan runs at parallelism 1 in one slot sharing group: one slot per job.
SLOTS_PER_JOB = 1

SLOTS_SETTING = f"{ENV_PREFIX}FLINK_TASKMANAGER_SLOTS"
TASKMANAGERS_SETTING = f"{ENV_PREFIX}FLINK_TASKMANAGERS"

# Job states in which a job holds, or is about to ask for, slots.
_LIVE = ("RUNNING", "CREATED", "INITIALIZING", "RESTARTING", "FAILING", "RECONCILING")


@dataclass(frozen=True)
class Capacity:
    """The cluster's slots: in all, free, and per registered TaskManager."""

    total: int
    free: int
    per_taskmanager: tuple[int, ...]

    @classmethod
    def from_rest(cls, overview: dict, taskmanagers: dict | None = None) -> Capacity:
        """From ``GET /overview`` (``slots-total``, ``slots-available``) and, when given,
        ``GET /taskmanagers`` (each TaskManager's ``slotsNumber``)."""
        per = tuple(int(tm["slotsNumber"]) for tm in (taskmanagers or {}).get("taskmanagers", []))
        return cls(int(overview["slots-total"]), int(overview["slots-available"]), per)


@dataclass(frozen=True)
class Growth:
    """How the cluster can grow: whether ``rendezvous up`` started it (then it can add
    TaskManagers beside the running ones) and the slots a new TaskManager gets
    (``RDV_FLINK_TASKMANAGER_SLOTS``)."""

    slots_per_taskmanager: int
    local: bool


def waiting_for_slots(jobs_overview: dict, *, besides: set[str] = frozenset()) -> int:
    """How many live jobs (``GET /jobs/overview``; those named in ``besides`` left out) have
    tasks waiting for a slot (``scheduled``): they take the next slots that free up."""
    return sum(
        1
        for job in jobs_overview.get("jobs", [])
        if job.get("state") in _LIVE
        and job.get("name") not in besides
        and job.get("tasks", {}).get("scheduled", 0) > 0
    )


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def shortfall(
    jobs: int, capacity: Capacity, growth: Growth, *, waiting: int = 0, freed: int = 0
) -> str | None:
    """None when ``jobs`` new jobs fit in the free slots; else the message that says how many
    slots are needed and free, and which setting or command makes room.

    ``waiting``: live jobs already waiting for a slot (they come first); ``freed``: slots that
    jobs being cancelled give back.
    """
    needed = jobs * SLOTS_PER_JOB
    free = capacity.free + freed - waiting * SLOTS_PER_JOB
    if needed <= free:
        return None
    missing = needed - max(free, 0)
    tms = len(capacity.per_taskmanager)
    waits = f", {waiting} of them taken by running jobs waiting for a slot" if waiting else ""
    head = (
        f"the jobs to submit need {needed} Flink task slot{'s' if needed != 1 else ''} but "
        f"{max(free, 0)} {'is' if max(free, 0) == 1 else 'are'} free ({capacity.total} in all"
        f"{f' on {tms} TaskManager' + ('s' if tms != 1 else '') if tms else ''}{waits}); "
        "nothing was submitted. "
    )
    if not growth.local:
        return head + (
            f"Add TaskManagers or slots (taskmanager.numberOfTaskSlots) to the cluster for "
            f"{missing} more, or cancel jobs you no longer need (`rendezvous cancel --only NAME`)"
        )
    per = growth.slots_per_taskmanager
    more = _ceil_div(missing, per)
    grown = tms + more
    return head + (
        f"Start {more} more TaskManager{'s' if more != 1 else ''} of {per} slots beside the "
        f"running ones, which keep running: `rendezvous up --taskmanagers {grown}` (set "
        f"{TASKMANAGERS_SETTING}={grown} to keep that size; {SLOTS_SETTING} sets each new "
        f"one's slots), or cancel jobs you no longer need (`rendezvous cancel --only NAME`)"
    )


def standby_warning(jobs: int, capacity: Capacity) -> str | None:
    """A warning when, with ``jobs`` more jobs, losing the largest TaskManager would leave
    some jobs without a slot until it is back; None when every job can move to the others."""
    if len(capacity.per_taskmanager) < 2:
        return None
    used = capacity.total - capacity.free + jobs * SLOTS_PER_JOB
    left = capacity.total - max(capacity.per_taskmanager)
    if used <= left:
        return None
    return (
        f"{used} slots in use but {left} left if the largest TaskManager dies: some jobs would "
        f"wait for a slot until it is back (more slots per TaskManager: {SLOTS_SETTING})"
    )
