"""What a second Flink TaskManager costs and buys: two against one, in one run.

    python -m bench.taskmanagers [--rates 200,400] [--seconds 20]

On the demo stack (`rendezvous up` starts two TaskManagers; prepared as ``bench.latency``
does), the same open-loop load (vegeta, the demo's requests, one proxy) is offered at each rate
twice:

First a warm-up (``--warmup``, discarded). Then:

1. **2 taskmanagers**: the jobs as the cluster placed them, spread over both.
2. **1 taskmanager**: the TaskManager running fewer tasks is stopped (SIGTERM, as a scale-in
   would); its tasks restart on the other one from their last checkpoint. Measured once every
   job runs again with every task on the one that is left.

The stopped TaskManager is started again at the end (its jobs stay where they are).

Printed per run: p50/p99, the share of HTTP 200, and CPU-seconds per 1,000 requests of each
process (``taskmanager`` sums every TaskManager); then how the tasks were placed. Everything
goes to ``bench/results/taskmanagers-<UTC time>.json`` as well.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench import cpu, stats
from bench.latency import (
    Context,
    attack,
    floats,
    run_line,
    settle_to_idle,
)
from bench.scaleout import begin, cpu_cells, measured, table, write_targets
from bench.vegeta import find_vegeta, rendezvous_note

COLUMNS = ("proxy", "kafka", "taskmanager", "jobmanager", "load generator")
SETUPS = ("2 taskmanagers", "1 taskmanager")


def placement(flink) -> dict[str, int]:
    """Tasks of the running jobs per registered TaskManager (its resource ID)."""
    tasks = {tm["id"]: 0 for tm in flink.rest("/taskmanagers", timeout_s=10)["taskmanagers"]}
    for job in flink.jobs():
        if job["state"] != "RUNNING":
            continue
        for vertex in flink.rest(f"/jobs/{job['jid']}", timeout_s=10)["vertices"]:
            placed = flink.rest(
                f"/jobs/{job['jid']}/vertices/{vertex['id']}/taskmanagers", timeout_s=10
            )
            for tm in placed["taskmanagers"]:
                tasks[tm["taskmanager-id"]] = tasks.get(tm["taskmanager-id"], 0) + 1
    return tasks


def all_running(flink, jobs: set[str]) -> bool:
    for jid in jobs:
        job = flink.rest(f"/jobs/{jid}", timeout_s=10)
        if job["state"] != "RUNNING" or any(v["status"] != "RUNNING" for v in job["vertices"]):
            return False
    return True


def scale_in(flink, *, timeout_s: float = 180.0) -> tuple[str, float]:
    """Stop the TaskManager with fewer tasks; its name, and the seconds until every job runs
    again on the one left."""
    services = flink.taskmanager_services()
    if len(services) < 2:
        raise RuntimeError(f"{len(services)} TaskManager(s) registered; this compares 2 with 1")
    tasks = placement(flink)
    quietest = min(services, key=lambda tm: tasks.get(tm, 0))
    jobs = {j["jid"] for j in flink.jobs() if j["state"] == "RUNNING"}
    t0 = time.monotonic()
    services[quietest].stop()
    while time.monotonic() - t0 < timeout_s:
        registered = flink.rest("/taskmanagers", timeout_s=10)["taskmanagers"]
        if len(registered) == len(services) - 1 and all_running(flink, jobs):
            return services[quietest].name, time.monotonic() - t0
        time.sleep(0.5)
    raise RuntimeError(f"the jobs were not running on the TaskManager left within {timeout_s} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.taskmanagers", description=__doc__.split("\n")[0]
    )
    p.add_argument("--rates", default="200,400", help="req/s, comma-separated (200,400)")
    p.add_argument("--seconds", type=float, default=20.0, help="attack window per run (20)")
    p.add_argument("--timeout", type=float, default=5.0, help="vegeta -timeout per request")
    p.add_argument("--vegeta", help="path of the vegeta binary (default .venv/bin/vegeta)")
    p.add_argument(
        "--warmup",
        type=float,
        default=90.0,
        help="seconds of load at the first rate before anything is measured (90): a stack "
        "just started answers far worse than a warm one, and would make the first setup lose",
    )
    args = p.parse_args(argv)

    from rendezvous.demo_models import SLA_MS, demo_requests
    from rendezvous.settings import StackSettings
    from rendezvous.stack import Stack

    settings = StackSettings.from_env()
    vegeta = find_vegeta(args.vegeta)
    out, url = begin("taskmanagers", argv, settings, vegeta)
    flink = Stack(settings, log=lambda m: None).flink
    work = Path(tempfile.mkdtemp(prefix="rdv-taskmanagers-"))
    targets = work / "targets.jsonl"
    write_targets(targets, [url], demo_requests(500, seed=11))

    runs, placed = [], {}
    stopped = False
    try:
        for setup in SETUPS:
            if setup == "1 taskmanager":
                name, took = scale_in(flink)
                stopped = True
                print(f"\nstopped {name}; every job ran again on the other in {took:.1f} s")
                out.doc["scale_in_s"] = round(took, 1)
            ctx = Context(
                settings, vegeta, work, float(SLA_MS), args.timeout, 15.0,
                cpu.read_pid_files(settings.run_dir) or None,
            )  # fmt: skip
            if setup == SETUPS[0] and args.warmup > 0:
                print(f"\nwarming up: {args.warmup:g} s at {floats(args.rates)[0]:g}/s", flush=True)
                attack(
                    ctx, "warm-up", "warmup", targets, floats(args.rates)[0], args.warmup,
                    rendezvous_note, cpu_window=False,
                )  # fmt: skip
            settle_to_idle(ctx)
            placed[setup] = placement(flink)
            out.doc[f"placement {setup}"] = placed[setup]
            print(f"\n{setup}: tasks per TaskManager {sorted(placed[setup].values())}", flush=True)
            for rate in floats(args.rates):
                run = measured(ctx, setup, targets, rate, args.seconds, [url], None)
                runs.append(run)
                out.doc["runs"].append(run)
                out.save()
                print(run_line(run, ctx.sla_ms, run.extra["settle"]))
                print(f"      CPU-s per 1,000 requests: {cpu_cells(run)}")
    finally:
        if stopped:
            flink.start_taskmanagers()
    print("\n" + table(runs, COLUMNS))
    held = {s: stats.held_rate([r for r in runs if r.system == s], float(SLA_MS)) for s in SETUPS}
    print("held: " + ", ".join(f"{s} {h.rate or 0:g}/s" for s, h in held.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
