"""What a second proxy replica costs and buys: one replica against two, in one run.

    python -m bench.scaleout [--rates 300,600] [--seconds 20]

On the demo stack (`rendezvous up`, prepared as ``bench.latency`` does), the same open-loop
load (vegeta, the demo's requests) is offered three ways at each rate:

1. **1 replica**: every request to the stack's proxy.
2. **2 replicas**: requests alternate between the stack's proxy and a second replica this
   script starts, reading a reply partition of its own (``--results-partition``).
3. **2 replicas, one reads all**: the same, with the second replica reading every partition
   of the results topic (``--results-partition all``), as every replica did before reply
   partitions.

Printed per run: p50/p99, the share of HTTP 200, CPU-seconds per 1,000 requests of each
process (the stack's proxy and the second replica apart), and how many results each replica
read from the results topic (``rdv_proxy_results_total``) per request it took. Everything
goes to ``bench/results/scaleout-<UTC time>.json`` as well.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

from bench import cpu, stats
from bench.latency import (
    RESULTS_DIR,
    Context,
    Results,
    attack,
    floats,
    free_port,
    machine,
    machine_line,
    run_line,
    settle,
    settle_to_idle,
)
from bench.vegeta import find_vegeta, rendezvous_note, targets_jsonl

COLUMNS = ("proxy", "proxy 2", "kafka", "taskmanager", "jobmanager", "load generator")
SETUPS = ("1 replica", "2 replicas", "2 replicas, one reads all")


def results_read(url: str) -> float:
    """The results a replica has read from the results topic (its ``/metrics``)."""
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("rdv_proxy_results_total "):
            return float(line.split()[1])
    raise RuntimeError(f"{url}/metrics has no rdv_proxy_results_total")


def begin(name: str, argv: list[str] | None, settings, vegeta: str) -> tuple[Results, str]:
    """A demo benchmark's start: its results file (``bench/results/<name>-<UTC time>.json``)
    with the command and the machine, both printed, and the demo prepared (stack, models,
    jobs, proxy). Returns the results and the proxy's base URL."""
    from rendezvous import demo
    from rendezvous.demo_models import SLA_MS

    out = Results(RESULTS_DIR, datetime.now(timezone.utc))
    out.path = out.path.with_name(f"{name}-{out.path.name}")
    m = machine(settings, vegeta)
    out.doc.update(command=[sys.executable, "-m", f"bench.{name}", *(argv or sys.argv[1:])])
    out.doc.update(machine=m, sla_ms=SLA_MS)
    print(f"machine: {machine_line(m)}")
    print(f"results: {out.path}")
    print("preparing the demo (stack, models, jobs, proxy) ...", flush=True)
    url = demo.prepare(settings, print=lambda *a, **k: print("   ", *a, **k)).split("/v1/")[0]
    return out, url


def replica_partition(url: str, partitions: int) -> int:
    """The reply partition a replica started without ``--results-partition`` reads."""
    from rendezvous import replies

    replica = httpx.get(f"{url}/healthz", timeout=10).json()["replica_id"]
    return replies.choose(replica, partitions)


def start_replica(settings, port: int, partition: str, log: Path) -> subprocess.Popen:
    from rendezvous import demo

    argv = demo._proxy_argv(settings, "--replica-id", f"bench-{partition}")
    argv[argv.index("--port") + 1] = str(port)
    argv += ["--results-partition", partition]
    proc = subprocess.Popen(
        argv,
        env=demo._proxy_env(settings),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the second replica exited; see {log}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGTERM)
    raise RuntimeError(f"the second replica was not ready within 60 s; see {log}")


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def write_targets(path: Path, urls: list[str], bodies: list[dict]) -> None:
    """Targets alternating between ``urls`` (vegeta sends them in order, round robin)."""
    lines = [
        targets_jsonl(f"{urls[i % len(urls)]}/v1/services/breast_cancer/score", [body])
        for i, body in enumerate(bodies)
    ]
    path.write_text("".join(lines))


def measured(ctx: Context, setup: str, targets: Path, rate: float, seconds: float, urls, extra):
    info = settle(ctx, setup, targets, rendezvous_note)
    before = [results_read(u) for u in urls]
    run = attack(ctx, setup, "sweep", targets, rate, seconds, rendezvous_note, extra_roots=extra)
    after = [results_read(u) for u in urls]
    # vegeta alternates targets, so each replica took about sent / len(urls) requests.
    took = run.sent / len(urls)
    run.extra["settle"] = info
    run.extra["results_read_per_request"] = [
        round((a - b) / took, 2) if took else None for a, b in zip(after, before, strict=True)
    ]
    return run


def cpu_cells(run) -> str:
    return ", ".join(
        f"{name} {v:.3f}" for name in COLUMNS if (v := run.cpu_per_1000.get(name)) is not None
    )


def table(runs, columns: tuple[str, ...] = COLUMNS) -> str:
    head = (
        f"{'setup':<27} {'rate':>6} {'p50':>7} {'p99':>7} {'200 %':>7} "
        + " ".join(f"{c:>10}" for c in columns)
        + "  results read per request taken"
    )
    rows = [head]
    for r in runs:
        cells = " ".join(
            f"{v:10.3f}" if (v := r.cpu_per_1000.get(c)) is not None else f"{'-':>10}"
            for c in columns
        )
        reads = ", ".join(f"{x:g}" for x in r.extra["results_read_per_request"] if x is not None)
        rows.append(
            f"{r.system:<27} {r.rate:>6g} {r.p50:7.1f} {r.p99:7.1f} {100 * r.ok_share:7.2f} "
            f"{cells}  {reads}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scaleout", description=__doc__.split("\n")[0])
    p.add_argument("--rates", default="300,600", help="req/s, comma-separated (300,600)")
    p.add_argument("--seconds", type=float, default=20.0, help="attack window per run (20)")
    p.add_argument("--timeout", type=float, default=5.0, help="vegeta -timeout per request")
    p.add_argument("--vegeta", help="path of the vegeta binary (default .venv/bin/vegeta)")
    args = p.parse_args(argv)

    from rendezvous.demo_models import SLA_MS, demo_requests
    from rendezvous.settings import StackSettings

    settings = StackSettings.from_env()
    vegeta = find_vegeta(args.vegeta)
    out, url = begin("scaleout", argv, settings, vegeta)
    stack_pids = cpu.read_pid_files(settings.run_dir) or None
    work = Path(tempfile.mkdtemp(prefix="rdv-scaleout-"))
    ctx = Context(settings, vegeta, work, float(SLA_MS), args.timeout, 15.0, stack_pids)
    bodies = demo_requests(500, seed=11)
    first = replica_partition(url, settings.results_partitions)
    own = str((first + 1) % settings.results_partitions)
    print(f"the stack's proxy reads results partition {first}; the second replica reads {own}")
    settle_to_idle(ctx)

    runs = []
    for setup in SETUPS:
        second = None
        urls = [url]
        extra = None
        try:
            if setup != "1 replica":
                port = free_port()
                partition = "all" if "reads all" in setup else own
                second = start_replica(settings, port, partition, work / f"proxy-{port}.log")
                urls.append(f"http://127.0.0.1:{port}")
                extra = {"proxy 2": [second.pid]}
            targets = work / f"{len(runs)}.jsonl"
            write_targets(targets, urls, bodies)
            print(f"\n{setup}", flush=True)
            for rate in floats(args.rates):
                run = measured(ctx, setup, targets, rate, args.seconds, urls, extra)
                runs.append(run)
                out.doc["runs"].append(run)
                out.save()
                print(run_line(run, ctx.sla_ms, run.extra["settle"]))
                print(f"      CPU-s per 1,000 requests: {cpu_cells(run)}")
                print(
                    f"      results read per request taken: {run.extra['results_read_per_request']}"
                )
        finally:
            if second is not None:
                stop(second)
    print("\n" + table(runs))
    held = {s: stats.held_rate([r for r in runs if r.system == s], ctx.sla_ms) for s in SETUPS}
    print("held: " + ", ".join(f"{s} {h.rate or 0:g}/s" for s, h in held.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
