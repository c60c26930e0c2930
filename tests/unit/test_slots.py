"""Whether the jobs to submit fit in the cluster's free slots, and the message when not.

The payloads follow Flink 2.3's ``GET /overview`` (``slots-total``, ``slots-available``),
``GET /taskmanagers`` (``slotsNumber``, ``freeSlots``) and ``GET /jobs/overview`` (``tasks``
counted per lower-case execution state).
"""

from __future__ import annotations

from rendezvous import slots

LOCAL = slots.Growth(slots_per_taskmanager=8, local=True)
REMOTE = slots.Growth(slots_per_taskmanager=8, local=False)


def overview(total: int, free: int, taskmanagers: int = 2) -> dict:
    return {
        "taskmanagers": taskmanagers,
        "taskmanagers-blocked": 0,
        "slots-total": total,
        "slots-available": free,
        "slots-free-and-blocked": 0,
        "jobs-running": total - free,
        "jobs-finished": 0,
        "jobs-cancelled": 0,
        "jobs-failed": 0,
        "flink-version": "2.3.0",
        "flink-commit": "abc1234",
    }


def taskmanagers(*sizes: int) -> dict:
    return {
        "taskmanagers": [
            {
                "id": f"127.0.0.1:4032{i}-5a9d2c",
                "path": f"pekko.tcp://flink@127.0.0.1:4032{i}/user/rpc/taskmanager_0",
                "dataPort": 40400 + i,
                "jmxPort": -1,
                "timeSinceLastHeartbeat": 1_750_000_000_000,
                "slotsNumber": n,
                "freeSlots": n,
                "blocked": False,
            }
            for i, n in enumerate(sizes)
        ]
    }


def capacity(total: int, free: int, *sizes: int) -> slots.Capacity:
    return slots.Capacity.from_rest(overview(total, free, len(sizes)), taskmanagers(*sizes))


def job(name: str, state: str, **tasks: int) -> dict:
    counts = dict.fromkeys(
        (
            "created",
            "scheduled",
            "deploying",
            "running",
            "finished",
            "canceling",
            "canceled",
            "failed",
            "reconciling",
            "initializing",
        ),
        0,
    )
    counts.update(tasks)
    return {
        "jid": "0" * 32,
        "name": name,
        "state": state,
        "start-time": 1,
        "end-time": -1,
        "duration": 5,
        "last-modification": 1,
        "tasks": {"total": sum(counts.values()), **counts},
    }


def test_capacity_reads_the_rest_payloads():
    cap = capacity(16, 9, 8, 8)
    assert cap == slots.Capacity(total=16, free=9, per_taskmanager=(8, 8))
    assert slots.Capacity.from_rest(overview(4, 4)).per_taskmanager == ()


def test_jobs_that_fit_pass():
    assert slots.shortfall(6, capacity(16, 16, 8, 8), LOCAL) is None
    assert slots.shortfall(3, capacity(16, 3, 8, 8), LOCAL) is None
    assert slots.shortfall(0, capacity(16, 0, 8, 8), LOCAL) is None


def test_too_many_jobs_on_the_local_stack_name_the_counts_the_settings_and_the_growth_command():
    message = slots.shortfall(6, capacity(16, 2, 8, 8), LOCAL)
    assert message.startswith("the jobs to submit need 6 Flink task slots but 2 are free ")
    assert "(16 in all on 2 TaskManagers)" in message
    assert "nothing was submitted" in message
    # 4 missing, 8 slots per new TaskManager: one more
    assert "Start 1 more TaskManager of 8 slots" in message
    assert "`rendezvous up --taskmanagers 3`" in message
    assert "RDV_FLINK_TASKMANAGERS=3" in message and "RDV_FLINK_TASKMANAGER_SLOTS" in message
    assert "\n" not in message


def test_the_growth_covers_the_missing_slots_with_new_taskmanagers_of_the_configured_size():
    message = slots.shortfall(10, capacity(8, 1, 4, 4), slots.Growth(4, local=True))
    assert "Start 3 more TaskManagers of 4 slots" in message  # 9 missing
    assert "--taskmanagers 5" in message


def test_a_cluster_not_started_here_gets_the_flink_option_instead():
    message = slots.shortfall(2, capacity(4, 1, 4), REMOTE)
    assert "need 2 Flink task slots but 1 is free (4 in all on 1 TaskManager)" in message
    assert "taskmanager.numberOfTaskSlots" in message and "1 more" in message
    assert "rendezvous up" not in message


def test_jobs_waiting_for_a_slot_come_first_and_cancelled_jobs_give_theirs_back():
    cap = capacity(16, 3, 8, 8)
    assert slots.shortfall(3, cap, LOCAL) is None
    message = slots.shortfall(3, cap, LOCAL, waiting=2)
    assert "but 1 is free" in message and "2 of them taken by running jobs waiting" in message
    assert slots.shortfall(3, cap, LOCAL, waiting=2, freed=2) is None
    assert "but 0 are free" in slots.shortfall(1, capacity(16, 0, 8, 8), LOCAL, waiting=3)


def test_waiting_counts_live_jobs_with_scheduled_tasks_only():
    jobs = {
        "jobs": [
            job("rendezvous-join", "RUNNING", running=3),
            job("rendezvous-score a/m", "RUNNING", scheduled=2),
            job("rendezvous-score a/n", "RESTARTING", scheduled=1),
            job("old", "FAILED", scheduled=1),
            job("rendezvous-enrich", "CREATED", created=2),
        ]
    }
    assert slots.waiting_for_slots(jobs) == 2
    assert slots.waiting_for_slots(jobs, besides={"rendezvous-score a/m"}) == 1
    assert slots.waiting_for_slots({"jobs": []}) == 0


def test_standby_warning_when_one_taskmanager_cannot_take_over_the_others_jobs():
    assert slots.standby_warning(7, capacity(16, 16, 8, 8)) is None
    assert slots.standby_warning(1, capacity(16, 9, 8, 8)) is None  # 8 used: fits on one
    warning = slots.standby_warning(2, capacity(16, 9, 8, 8))
    assert warning.startswith("9 slots in use but 8 left if the largest TaskManager dies")
    assert slots.standby_warning(5, capacity(8, 8, 8)) is None  # one TaskManager: no standby
