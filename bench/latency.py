"""Latency and CPU cost under open-loop load: the rendezvous path against two baselines.

    python -m bench.latency [--quick] [--rates 100,250,...] [--seconds 60] [--skip ...]

Systems, in one run on one machine:

1. **rendezvous**: ``POST /v1/services/breast_cancer/score`` through the proxy, the enrich
   job, four scoring jobs and the rendezvous join (the demo service), answered by its deadline.
2. **mlflow serve**: the champion alone behind ``mlflow models serve`` (one worker), called
   with the same records.
3. **kafka 4 hops**: the serving path's Kafka hops without any work: produce -> consume ->
   produce ... four times (proxy -> requests -> enrich -> model-input -> score -> scores ->
   join -> results -> proxy), three relay threads, confluent-kafka, one light rate.

HTTP load comes from ``vegeta attack`` (``make`` installs it in .venv/bin), open loop at a
constant rate: hit *n* is due at ``start + (n + 1) / rate`` whether or not earlier ones came
back. vegeta's latency runs from when a worker actually sends a hit (not from its slot in
the schedule) until the response body is read. Every attack gets ``-max-workers`` of at least
``rate * timeout``, so vegeta never waits for a free worker (which would turn the load
closed-loop); what remains is the generator's own lateness on a busy machine, reported per
run as the send lag (p99 of actual send minus slot, ``lag99``). A rate is **held** when p99
<= the demo's SLA (100 ms), at least 99.9% of answers are HTTP 200, and lag99 <= 10 ms (the
load was really offered on schedule). The Kafka baseline measures from the produce call.

Printed, in order: the machine; the idle CPU of each process of the stack (% of one core over
a 10 s window without load); per system and rate p50/p90/p99/max, the share of HTTP 200, the
send lag and the answers by reason or error code; the highest rate held per system and the
ratio rendezvous / mlflow serve; the light-load comparison (rendezvous p50 at a light rate
over the 4-hop Kafka p50, target <= 2.5); an overload step (2x the held rate) with its counts
of 200 / 503 with Retry-After / 503 / 504 / other and a light-load recovery window in 5 s
slices; and the CPU-seconds per 1,000 requests of each process per run: the proxy, the Kafka
broker, the Flink TaskManager and JobManager, the MLflow server, ``mlflow models serve`` (its
process tree) and the load generator (vegeta, or this script for the Kafka baseline), from
``/proc/<pid>/stat`` before and after each attack. Everything goes to
``bench/results/<UTC time>.json`` as well, rewritten after each step.

Before each rate, light load (10 req/s in 3 s probes) runs until a probe holds the SLA, for
at most a bounded time, so no rate pays for a cold start or for the previous rate's backlog.
A sweep stops after a saturated rate (p99 over 10x the SLA, or under 90% HTTP 200) or two
misses in a row (``--no-stop`` runs every rate).

Duration, with the demo already prepared: ``--quick`` 3-5 minutes (rates 100,500,1000 at
15 s, mlflow serve 100,300, a 10 s overload, settling at most 15 s per rate). The full run
(seven rates at 60 s per system, a 30 s overload) takes about 20 minutes when every rate
runs and settles at once, less when a sweep stops early, and up to about 50 when every
settle uses its 120 s. The machine's other work shows in every figure: the CPU of a process
is all of its CPU over the window, whatever caused it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bench import cpu, stats
from bench.stats import RunStats
from bench.vegeta import Attack, Hit, find_vegeta, rendezvous_note, status_note, targets_jsonl
from bench.vegeta import version as vegeta_version
from rendezvous.kafka import KafkaConnection

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CPU_COLUMNS = (
    "proxy",
    "kafka",
    "taskmanager",
    "jobmanager",
    "mlflow server",
    "mlflow serve",
    "load generator",
)
SETTLE_RATE, SETTLE_PROBE_S = 10.0, 3.0
FULL = {
    "rates": "100,250,500,750,1000,1250,1500",
    "mlflow_rates": None,  # the same as --rates
    "seconds": 60.0,
    "overload_seconds": 30.0,
    "settle_budget": 120.0,
}
QUICK = {
    "rates": "100,500,1000",
    "mlflow_rates": "100,300",
    "seconds": 15.0,
    "overload_seconds": 10.0,
    "settle_budget": 15.0,
}


@dataclass
class Context:
    settings: object
    vegeta: str
    workdir: Path
    sla_ms: float
    timeout_s: float
    settle_budget_s: float
    stack_pids: set[int] | None


# ---- measuring one attack ---------------------------------------------------------------
def _roots(ctx: Context, extra: dict[str, list[int]] | None = None):
    procs = cpu.scan()
    return cpu.find_roots(procs, stack_pids=ctx.stack_pids, extra=extra), procs


def attack(
    ctx: Context,
    system: str,
    kind: str,
    targets: Path,
    rate: float,
    seconds: float,
    note,
    *,
    extra_roots: dict[str, list[int]] | None = None,
    cpu_window: bool = True,
) -> RunStats:
    """One vegeta attack; with ``cpu_window``, each process's CPU over it."""
    if cpu_window:
        roots, procs = _roots(ctx, extra_roots)
        before = cpu.snapshot(roots, procs)
    atk = Attack(ctx.vegeta, targets, rate, seconds, timeout_s=ctx.timeout_s, workdir=ctx.workdir)
    try:
        gen_cpu = atk.wait()
    except BaseException:
        atk.kill()
        raise
    if cpu_window:
        after = cpu.snapshot(roots, cpu.scan())
    run = stats.summarize(atk.results(note), system=system, kind=kind, rate=rate, seconds=seconds)
    if cpu_window:
        run.cpu_s = {**cpu.cpu_delta(before, after), "load generator": gen_cpu}
        run.cpu_per_1000 = cpu.per_thousand(run.cpu_s, run.sent)
    return run


def settle(ctx: Context, system: str, targets: Path, note) -> dict:
    """Light load in short probes until one holds the SLA, or the budget is spent."""
    t0 = time.monotonic()
    probes = []
    while True:
        run = attack(
            ctx, system, "settle", targets, SETTLE_RATE, SETTLE_PROBE_S, note, cpu_window=False
        )
        probes.append(run.p99)
        ok = stats.holds(run, ctx.sla_ms, check_lag=False)
        if ok or time.monotonic() - t0 > ctx.settle_budget_s:
            return {
                "settled": ok,
                "probes": len(probes),
                "seconds": round(time.monotonic() - t0, 1),
                "probe_p99_ms": [round(p, 1) for p in probes],
            }


def sweep(
    ctx: Context,
    system: str,
    targets: Path,
    rates,
    seconds,
    note,
    *,
    extra_roots=None,
    no_stop: bool = False,
    on_run=None,
) -> list[RunStats]:
    runs: list[RunStats] = []
    for rate in rates:
        info = settle(ctx, system, targets, note)
        run = attack(ctx, system, "sweep", targets, rate, seconds, note, extra_roots=extra_roots)
        run.extra["settle"] = info
        runs.append(run)
        print(run_line(run, ctx.sla_ms, info))
        print(cpu_line(run), flush=True)
        if on_run:
            on_run(run)
        if not no_stop and stats.stop_sweep(runs, ctx.sla_ms):
            skipped = [r for r in rates if r > rate]
            if skipped:
                print(
                    f"  {system}: saturated, not running {', '.join(f'{r:g}' for r in skipped)}/s"
                )
            break
    return runs


def cpu_line(run: RunStats) -> str:
    cells = [
        f"{name} {v:.3f}" for name in CPU_COLUMNS if (v := run.cpu_per_1000.get(name)) is not None
    ]
    return "      CPU-s per 1,000 requests: " + (", ".join(cells) or "-")


def run_line(run: RunStats, sla_ms: float, settle_info: dict | None = None) -> str:
    mark = "held" if stats.holds(run, sla_ms) else "MISS"
    notes = ", ".join(f"{k} {v}" for k, v in list(run.notes.items())[:4])
    s = (
        f"  {run.system:<13} {run.kind:<8} {run.rate:>6g}/s  p50 {run.p50:7.1f}  p90 {run.p90:7.1f}"
        f"  p99 {run.p99:7.1f}  max {run.max:8.1f}  200 {100 * run.ok_share:6.2f}%"
        f"  lag99 {run.lag_p99:5.1f}  {mark}  [{notes}]"
    )
    if settle_info and not settle_info["settled"]:
        s += f"  (not settled after {settle_info['seconds']:g} s)"
    return s


# ---- baseline: mlflow models serve ---------------------------------------------------------
def start_mlflow_serve(settings, port: int) -> subprocess.Popen:
    import httpx

    bindir = os.path.dirname(sys.executable)
    # It execs `uvicorn` through bash: the venv's bin folder must be on PATH.
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=settings.mlflow_url,
        PATH=bindir + os.pathsep + os.environ.get("PATH", ""),
    )
    argv = [
        os.path.join(bindir, "mlflow"),
        "models",
        "serve",
        "-m",
        "models:/breast_cancer@champion",
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("mlflow models serve exited while starting")
        time.sleep(0.5)
    os.killpg(proc.pid, 9)
    raise RuntimeError("mlflow models serve did not answer /ping within 120 s")


def mlflow_bodies(bodies: list[dict]) -> list[dict]:
    from rendezvous.demo_models import FEATURES

    return [
        {"dataframe_split": {"columns": list(FEATURES), "data": [[b[f] for f in FEATURES]]}}
        for b in bodies
    ]


# ---- baseline: Kafka, as many hops as the serving path ---------------------------------------
def kafka_hops(
    kafka: KafkaConnection, rate: float, seconds: float, hops: int = 4, *, on_window=None
) -> tuple[list[Hit], float]:
    """produce(t0) -> relay -> t1 -> relay ... -> consume(t{hops-1}): ``hops`` produce/consume
    hops and ``hops - 1`` relay threads. Returns one Hit per message (latency from the produce
    call; code 0 when it never came back) and this process's CPU-seconds over the window (from
    the first produce until the last message is back), which ``on_window("start"|"end")``
    marks too (topic creation and the consumers' first fetch stay outside it)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    tag = uuid.uuid4().hex[:8]
    topics = [f"bench.hop{i}.{tag}" for i in range(hops)]
    admin = AdminClient(kafka.client_config())
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        f.result(30)
    # As the proxy and the jobs' connectors: no linger, no compression, acks=1; fetch at once.
    produce = kafka.client_config({"linger.ms": 0, "acks": 1, "compression.type": "none"})
    consume = kafka.client_config(
        {"fetch.wait.max.ms": 10, "fetch.min.bytes": 1, "enable.auto.commit": False}
    )
    stop = threading.Event()
    n = int(rate * seconds)
    sent_at: dict[bytes, int] = {}
    got: dict[bytes, int] = {}

    def relay(src: str, dst: str) -> None:
        c = Consumer({**consume, "group.id": f"relay-{src}"})
        p = Producer(produce)
        c.assign([TopicPartition(src, 0, OFFSET_BEGINNING)])  # no group: no rebalance wait
        while not stop.is_set():
            m = c.poll(0.05)
            if m is not None and not m.error():
                p.produce(dst, m.value())
                p.poll(0)
        c.close()
        p.flush(5)

    def collect() -> None:
        c = Consumer({**consume, "group.id": f"client-{tag}"})
        c.assign([TopicPartition(topics[-1], 0, OFFSET_BEGINNING)])
        while len(got) < n and not stop.is_set():
            m = c.poll(0.05)
            if m is not None and not m.error():
                got[m.value()] = time.time_ns()
        c.close()

    threads = [
        threading.Thread(target=relay, args=(a, b), daemon=True)
        for a, b in zip(topics, topics[1:], strict=False)
    ]
    threads.append(threading.Thread(target=collect, daemon=True))
    for t in threads:
        t.start()
    time.sleep(1)  # every consumer has fetched its (empty) partition once
    if on_window:
        on_window("start")
    ticks0 = cpu.self_ticks()
    p = Producer(produce)
    start = time.perf_counter()
    for i in range(n):
        at = start + (i + 1) / rate
        while (now := time.perf_counter()) < at:
            time.sleep(min(0.001, at - now))
        key = str(i).encode()
        sent_at[key] = time.time_ns()
        p.produce(topics[0], key)
        p.poll(0)
    p.flush(5)
    give_up = time.monotonic() + 10
    while len(got) < n and time.monotonic() < give_up:
        time.sleep(0.05)
    cpu_s = (cpu.self_ticks() - ticks0) / cpu.CLK_TCK
    if on_window:
        on_window("end")
    stop.set()
    for t in threads:
        t.join(10)
    admin.delete_topics(topics)
    hits = []
    for i in range(n):
        key = str(i).encode()
        back = got.get(key)
        lat = (back - sent_at[key]) / 1e6 if back else 10_000.0
        hits.append(Hit(i, sent_at[key], lat, 200 if back else 0, "ok" if back else "lost", False))
    return hits, cpu_s


def kafka_run(ctx: Context, rate: float, seconds: float, hops: int = 4) -> RunStats:
    roots, _ = _roots(ctx)
    snaps: dict[str, cpu.Snapshot] = {}

    def mark(at: str) -> None:
        snaps[at] = cpu.snapshot(roots, cpu.scan())

    hits, gen_cpu = kafka_hops(ctx.settings.kafka, rate, seconds, hops, on_window=mark)
    before, after = snaps["start"], snaps["end"]
    run = stats.summarize(
        hits, system=f"kafka {hops} hops", kind="light", rate=rate, seconds=seconds
    )
    run.cpu_s = {**cpu.cpu_delta(before, after), "load generator": gen_cpu}
    run.cpu_per_1000 = cpu.per_thousand(run.cpu_s, run.sent)
    return run


# ---- idle -----------------------------------------------------------------------------------
def settle_to_idle(ctx: Context, window_s: float = 5.0, budget_s: float = 180.0) -> list[float]:
    """Wait until the stack's CPU stops falling; the % of one core in each window waited.

    JVMs that have just started keep compiling and loading classes for a minute or more after
    they answer: an idle figure, or a first load point, taken then measures their start-up.
    """
    roots, _ = _roots(ctx)
    history: list[float] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < budget_s:
        before = cpu.snapshot(roots, cpu.scan())
        time.sleep(window_s)
        delta = cpu.cpu_delta(before, cpu.snapshot(roots, cpu.scan()))
        history.append(100.0 * sum(v for v in delta.values() if v) / window_s)
        if len(history) >= 2:
            last, before = history[-1], history[:-1]
            if last >= 0.8 * before[-1] and last <= 1.25 * min(before):
                break  # no longer falling, and at the lowest level seen
    return history


def idle_cpu(ctx: Context, seconds: float) -> dict[str, float | None]:
    roots, procs = _roots(ctx)
    before = cpu.snapshot(roots, procs)
    time.sleep(seconds)
    delta = cpu.cpu_delta(before, cpu.snapshot(roots, cpu.scan()))
    order = [c for c in CPU_COLUMNS if c in delta] + sorted(set(delta) - set(CPU_COLUMNS))
    return {k: (None if delta[k] is None else 100.0 * delta[k] / seconds) for k in order}


# ---- overload and recovery --------------------------------------------------------------------
def overload(
    ctx: Context,
    targets: Path,
    rate: float,
    seconds: float,
    light: float,
    recovery_s: float,
    slice_s: float = 5.0,
) -> dict:
    """``rate`` for ``seconds``, then (from the moment the overload stops sending, while its
    last requests are still out) ``light`` req/s for ``recovery_s``, cut in slices."""
    over = Attack(ctx.vegeta, targets, rate, seconds, timeout_s=ctx.timeout_s, workdir=ctx.workdir)
    rec = None
    try:
        time.sleep(max(0.0, over.started + seconds - time.monotonic()))
        rec = Attack(
            ctx.vegeta, targets, light, recovery_s, timeout_s=ctx.timeout_s, workdir=ctx.workdir
        )
        over.wait()
        rec.wait()
    except BaseException:
        over.kill()
        if rec:
            rec.kill()
        raise
    o = stats.summarize(
        over.results(rendezvous_note),
        system="rendezvous",
        kind="overload",
        rate=rate,
        seconds=seconds,
    )
    r_hits = rec.results(rendezvous_note)
    r = stats.summarize(
        r_hits, system="rendezvous", kind="recovery", rate=light, seconds=recovery_s
    )
    parts = stats.slices(r_hits, slice_s, recovery_s)
    return {
        "overload": o,
        "recovery": r,
        "slices": parts,
        "recovered_after_s": stats.recovery_s(parts, ctx.sla_ms),
    }


# ---- machine and output ----------------------------------------------------------------------
def machine(settings, vegeta: str) -> dict:
    cpu_model, mem_kb = "?", None
    try:
        with open("/proc/cpuinfo") as info:
            names = [ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")]
        cpu_model = names[0] if names else cpu_model
        with open("/proc/meminfo") as info:
            mem_kb = next(int(ln.split()[1]) for ln in info if ln.startswith("MemTotal"))
    except (OSError, StopIteration, ValueError):
        pass

    def pkg(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    return {
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(mem_kb / 2**20, 1) if mem_kb else None,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "vegeta": vegeta_version(vegeta),
        "kafka": settings.kafka_version,
        "flink": settings.flink_version,
        "mlflow": pkg("mlflow"),
        "confluent_kafka": pkg("confluent-kafka"),
        "flink_taskmanagers": settings.flink_taskmanagers,
        "flink_taskmanager_slots": settings.flink_taskmanager_slots,
    }


def machine_line(m: dict) -> str:
    return (
        f"{m['os']}, {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"load {m['load_average'][0]:g}, Python {m['python']}, vegeta {m['vegeta']}, "
        f"Kafka {m['kafka']}, Flink {m['flink']}, MLflow {m['mlflow']}"
    )


def _jsonable(v):
    if isinstance(v, RunStats):
        return v.to_json()
    if isinstance(v, stats.Slice | stats.Held):
        return {k: _jsonable(x) for k, x in v.__dict__.items()}
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and v != v:
        return None
    return v


class Results:
    """The run's JSON document, rewritten whole (atomically) after each step."""

    def __init__(self, folder: Path, started: datetime) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
        self.doc: dict = {"started_utc": started.isoformat(timespec="seconds"), "runs": []}

    def save(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(_jsonable(self.doc), indent=1) + "\n")
        tmp.replace(self.path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def floats(text: str) -> list[float]:
    return sorted(float(x) for x in text.split(",") if x.strip())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.latency",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"rates {QUICK['rates']} (mlflow serve {QUICK['mlflow_rates']}) at "
        f"{QUICK['seconds']:g} s, overload {QUICK['overload_seconds']:g} s, "
        "settle at most 15 s: under 5 minutes",
    )
    p.add_argument("--rates", help=f"req/s, comma-separated (default {FULL['rates']})")
    p.add_argument("--mlflow-rates", help="req/s for mlflow serve (default: --rates)")
    p.add_argument("--seconds", type=float, help="attack window per rate (default 60)")
    p.add_argument("--kafka-rate", type=float, default=50.0, help="Kafka baseline rate (50)")
    p.add_argument("--idle-seconds", type=float, default=10.0, help="idle CPU window (10)")
    p.add_argument("--overload-seconds", type=float, help="default 30 (10 with --quick)")
    p.add_argument(
        "--recovery-seconds", type=float, default=15.0, help="light load after the overload (15)"
    )
    p.add_argument(
        "--settle-budget",
        type=float,
        help="max seconds of settling per rate (120; 15 with --quick)",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="vegeta -timeout per request")
    p.add_argument("--skip", default="", help="comma-separated: rendezvous,mlflow,kafka,overload")
    p.add_argument("--no-stop", action="store_true", help="run every rate even when saturated")
    p.add_argument("--vegeta", help="path of the vegeta binary (default .venv/bin/vegeta)")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.rates = floats(args.rates)
    args.mlflow_rates = floats(args.mlflow_rates) if args.mlflow_rates else list(args.rates)
    args.skip = set(filter(None, args.skip.split(",")))
    return args


# ---- main ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rendezvous import demo
    from rendezvous.demo_models import SLA_MS, demo_requests
    from rendezvous.settings import StackSettings

    t_start = time.monotonic()
    settings = StackSettings.from_env()
    vegeta = find_vegeta(args.vegeta)
    started = datetime.now(timezone.utc)
    out = Results(args.results_dir, started)
    m = machine(settings, vegeta)
    out.doc.update(
        command=[
            sys.executable,
            "-m",
            "bench.latency",
            *(argv if argv is not None else sys.argv[1:]),
        ],
        machine=m,
        sla_ms=SLA_MS,
        options={
            k: sorted(v) if isinstance(v, set) else v
            for k, v in vars(args).items()
            if k != "results_dir"
        },
    )
    print(f"machine: {machine_line(m)}")
    print(f"results: {out.path}")

    print("preparing the demo (stack, models, jobs, proxy) ...", flush=True)
    url = demo.prepare(settings, print=lambda *a, **k: print("   ", *a, **k))
    stack_pids = cpu.read_pid_files(settings.run_dir) or None
    work = Path(tempfile.mkdtemp(prefix="rdv-bench-"))
    ctx = Context(
        settings, vegeta, work, float(SLA_MS), args.timeout, args.settle_budget, stack_pids
    )
    bodies = demo_requests(500, seed=11)
    rv_targets = work / "rendezvous.jsonl"
    rv_targets.write_text(targets_jsonl(url, bodies))

    def record(run: RunStats) -> None:
        out.doc["runs"].append(run)
        out.save()

    print()
    settling = settle_to_idle(ctx)
    out.doc["settling_cpu_percent"] = settling
    print(
        f"settled in {5 * len(settling)} s (stack CPU per 5 s window, % of one core: "
        + ", ".join(f"{v:.0f}" for v in settling)
        + ")"
    )
    idle = idle_cpu(ctx, args.idle_seconds)
    out.doc["idle_cpu_percent"] = idle
    out.save()
    print(stats.idle_table(idle, args.idle_seconds))

    runs: dict[str, list[RunStats]] = {}
    held: dict[str, stats.Held] = {}
    light_runs: dict[str, RunStats] = {}
    if "rendezvous" not in args.skip:
        print("\nrendezvous (proxy -> Kafka -> Flink jobs -> proxy)", flush=True)
        runs["rendezvous"] = sweep(
            ctx,
            "rendezvous",
            rv_targets,
            args.rates,
            args.seconds,
            rendezvous_note,
            no_stop=args.no_stop,
            on_run=record,
        )
        held["rendezvous"] = stats.held_rate(runs["rendezvous"], ctx.sla_ms)
        light = stats.light_rate(held["rendezvous"].rate, args.kafka_rate)
        info = settle(ctx, "rendezvous", rv_targets, rendezvous_note)
        run = attack(ctx, "rendezvous", "light", rv_targets, light, args.seconds, rendezvous_note)
        run.extra["settle"] = info
        light_runs["rendezvous"] = run
        record(run)
        print(run_line(run, ctx.sla_ms, info))
        print(cpu_line(run), flush=True)

        if "overload" not in args.skip:
            base = held["rendezvous"].rate or min(args.rates)
            settle(ctx, "rendezvous", rv_targets, rendezvous_note)
            print(
                f"\noverload: {2 * base:g} req/s (2x {base:g}) for {args.overload_seconds:g} s, "
                f"then {light:g} req/s for {args.recovery_seconds:g} s",
                flush=True,
            )
            ov = overload(
                ctx, rv_targets, 2 * base, args.overload_seconds, light, args.recovery_seconds
            )
            out.doc["overload"] = ov
            out.save()
            print(overload_report(ov, ctx.sla_ms), flush=True)

    if "mlflow" not in args.skip:
        print("\nmlflow serve (the champion alone, one worker)", flush=True)
        port = free_port()
        proc = start_mlflow_serve(settings, port)
        try:
            ml_targets = work / "mlflow.jsonl"
            ml_targets.write_text(
                targets_jsonl(f"http://127.0.0.1:{port}/invocations", mlflow_bodies(bodies))
            )
            runs["mlflow serve"] = sweep(
                ctx,
                "mlflow serve",
                ml_targets,
                args.mlflow_rates,
                args.seconds,
                status_note,
                extra_roots={"mlflow serve": [proc.pid]},
                no_stop=args.no_stop,
                on_run=record,
            )
            held["mlflow serve"] = stats.held_rate(runs["mlflow serve"], ctx.sla_ms)
        finally:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(10)

    if "kafka" not in args.skip:
        print(f"\nkafka, 4 produce/consume hops at {args.kafka_rate:g}/s", flush=True)
        run = kafka_run(ctx, args.kafka_rate, args.seconds, hops=4)
        light_runs["kafka"] = run
        record(run)
        print(run_line(run, ctx.sla_ms))
        print(cpu_line(run), flush=True)

    summary = summarize_all(held, light_runs)
    out.doc["held"] = held
    out.doc["summary"] = summary
    out.doc["elapsed_s"] = round(time.monotonic() - t_start, 1)
    out.save()

    print("\n" + "=" * 100)
    for system, rs in runs.items():
        print(f"\n{system}, {args.seconds:g} s per rate, ms ('!': not held)")
        print(stats.sweep_table(rs, ctx.sla_ms))
    print()
    print(summary_text(summary, ctx.sla_ms))
    all_runs = [r for rs in runs.values() for r in rs] + list(light_runs.values())
    print("\nCPU-seconds per 1,000 requests ('-': not running or not measured)")
    print(stats.cpu_table(all_runs, CPU_COLUMNS))
    print(f"\nwritten to {out.path} ({out.doc['elapsed_s']:g} s in all)")
    for f in work.iterdir():
        f.unlink()
    work.rmdir()
    return 0


def summarize_all(held: dict[str, stats.Held], light: dict[str, RunStats]) -> dict:
    rv, ml = held.get("rendezvous"), held.get("mlflow serve")
    rvl, kl = light.get("rendezvous"), light.get("kafka")
    return {
        "held_rate": {k: v.rate for k, v in held.items()},
        "held_ceiling_found": {k: v.ceiling for k, v in held.items()},
        "held_ratio_rendezvous_over_mlflow": stats.ratio(rv and rv.rate, ml and ml.rate),
        "light_rate": rvl.rate if rvl else None,
        "light_p50_rendezvous_ms": rvl.p50 if rvl else None,
        "light_p50_kafka_4hops_ms": kl.p50 if kl else None,
        "light_p50_ratio": stats.ratio(rvl and rvl.p50, kl and kl.p50),
        "light_p50_ratio_target": 2.5,
    }


def summary_text(s: dict, sla_ms: float) -> str:
    lines = [
        f"highest rate held (p99 <= {sla_ms:g} ms, >= 99.9% HTTP 200, lag99 <= "
        f"{stats.MAX_LAG_SHARE * sla_ms:g} ms):"
    ]
    for system, rate in s["held_rate"].items():
        if rate is None:
            what = "none of the rates"
        elif s["held_ceiling_found"][system]:
            what = f"{rate:g} req/s"
        else:
            what = f"{rate:g} req/s (the highest rate tried: may hold more)"
        lines.append(f"  {system:<14} {what}")
    r = s["held_ratio_rendezvous_over_mlflow"]
    lines.append(f"  rendezvous / mlflow serve: {'-' if r is None else f'{r:.2f}'}")
    k = s["light_p50_ratio"]
    if s["light_p50_rendezvous_ms"] is not None or s["light_p50_kafka_4hops_ms"] is not None:
        verdict = "-" if k is None else ("within" if k <= s["light_p50_ratio_target"] else "OVER")
        lines.append(
            f"light load: rendezvous p50 {_ms(s['light_p50_rendezvous_ms'])} at "
            f"{_ms(s['light_rate'], '/s')} / Kafka 4 hops p50 {_ms(s['light_p50_kafka_4hops_ms'])}"
            f" = {'-' if k is None else f'{k:.2f}'} (target <= {s['light_p50_ratio_target']:g}: "
            f"{verdict})"
        )
    return "\n".join(lines)


def _ms(v: float | None, unit: str = " ms") -> str:
    return "-" if v is None else f"{v:.1f}{unit}" if unit == " ms" else f"{v:g}{unit}"


def overload_report(ov: dict, sla_ms: float) -> str:
    o, r = ov["overload"], ov["recovery"]
    counts = ", ".join(f"{k} {v}" for k, v in o.outcomes.items())
    lines = [
        f"  overload {o.rate:g}/s: sent {o.sent}, p50 {o.p50:.1f} ms, p99 {o.p99:.1f} ms; {counts}",
        f"  recovery at {r.rate:g}/s, p99 per 5 s from the end of the overload:",
        "    " + stats.slices_table(ov["slices"], sla_ms).replace("\n", "\n    "),
    ]
    t = ov["recovered_after_s"]
    if t is None:
        lines.append(
            f"  recovery: the last slice still misses the SLA ({r.seconds:g} s of light load)"
        )
    elif t == 0:
        lines.append("  recovery: every slice holds (recovered within the first slice)")
    else:
        lines.append(f"  recovery: every slice from {t:g} s on holds (recovered within {t:g} s)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
