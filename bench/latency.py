"""Latency under open-loop load: the rendezvous path against two baselines, in one run.

    python -m bench.latency [--rates 25,50,100,150] [--seconds 8] [--skip mlflow,kafka]

1. **rendezvous**: HTTP through the proxy, enrich, four scoring jobs and the rendezvous join
   (the demo service: GradientBoosting champion, RandomForest challenger, LogisticRegression
   canary, rule backstop), answered by its deadline.
2. **mlflow serve**: the champion alone behind ``mlflow models serve`` (one worker), the usual
   way to put one model behind HTTP.
3. **kafka round trip**: produce -> consume -> produce -> consume with confluent-kafka and a
   relay thread, no model: the floor under any Kafka-based path.

Load is open loop: request *i* is sent at ``start + i / rate`` whether or not earlier ones came
back, and its latency counts from that scheduled time, so a saturated system shows its queue
instead of hiding it. Prints p50/p99 per rate and, per system, the highest rate whose p99 stayed
under the demo's SLA with at least 99% answered (HTTP 200). Before each rate, light load runs
until a short run holds the SLA, so no rate inherits a cold start or the previous rate's queue.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx

from rendezvous.demo_models import FEATURES, SLA_MS, demo_requests
from rendezvous.settings import StackSettings


@dataclass
class Run:
    system: str
    rate: float
    latencies_ms: list[float] = field(default_factory=list)
    ok: int = 0
    sent: int = 0
    notes: Counter = field(default_factory=Counter)

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    @property
    def ok_share(self) -> float:
        return self.ok / self.sent if self.sent else 0.0

    def holds(self, sla_ms: float) -> bool:
        return self.ok_share >= 0.99 and self.pct(0.99) <= sla_ms


# ---- open-loop HTTP driver ---------------------------------------------------------------
async def _open_loop(system: str, rate: float, seconds: float, send) -> Run:
    run = Run(system, rate)
    n = int(rate * seconds)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05

    async def one(i: int) -> None:
        at = start + i / rate
        await asyncio.sleep(max(0.0, at - loop.time()))
        try:
            ok, note = await send(i)
        except httpx.HTTPError as exc:
            ok, note = False, type(exc).__name__
        run.latencies_ms.append((loop.time() - at) * 1000)
        run.ok += ok
        run.notes[note] += 1

    run.sent = n
    await asyncio.gather(*(one(i) for i in range(n)))
    return run


def drive_http(system: str, url: str, bodies: list, rate: float, seconds: float, note) -> Run:
    async def main() -> Run:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        async with httpx.AsyncClient(timeout=10, limits=limits) as client:

            async def send(i: int):
                r = await client.post(url, json=bodies[i % len(bodies)])
                return r.status_code == 200, note(r)

            return await _open_loop(system, rate, seconds, send)

    return asyncio.run(main())


def settle(system: str, url: str, bodies: list, note, *, timeout_s: float = 120.0) -> None:
    """Send light load until a short run holds the SLA: the first requests after a submit pay
    for JIT compilation and model loading, and a saturated run leaves a backlog behind it."""
    give_up = time.monotonic() + timeout_s
    while True:
        run = drive_http(f"{system} settle", url, bodies, 10, 3, note)
        if run.holds(SLA_MS) or time.monotonic() > give_up:
            return


def rendezvous_note(r: httpx.Response) -> str:
    if r.status_code != 200:
        return f"HTTP {r.status_code}"
    return r.json()["reason"].split(":")[0]


# ---- baseline: mlflow models serve ---------------------------------------------------------
def start_mlflow_serve(settings: StackSettings, port: int) -> subprocess.Popen:
    bindir = os.path.dirname(sys.executable)
    # It execs `uvicorn` through bash: the venv's bin folder must be on PATH.
    env = dict(os.environ, MLFLOW_TRACKING_URI=settings.mlflow_url,
               PATH=bindir + os.pathsep + os.environ.get("PATH", ""))  # fmt: skip
    mlflow = os.path.join(bindir, "mlflow")
    proc = subprocess.Popen(
        [
            mlflow,
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
        ],  # fmt: skip
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
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
    proc.kill()
    raise RuntimeError("mlflow models serve did not answer /ping within 120 s")


def mlflow_bodies(bodies: list[dict]) -> list[dict]:
    return [
        {"dataframe_split": {"columns": list(FEATURES), "data": [[b[f] for f in FEATURES]]}}
        for b in bodies
    ]


# ---- baseline: Kafka round trip --------------------------------------------------------------
def kafka_round_trip(bootstrap: str, rate: float, seconds: float) -> Run:
    """produce(A) -> relay: consume(A), produce(B) -> consume(B), timed per message."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    tag = uuid.uuid4().hex[:8]
    a, b = f"bench.rtt-a.{tag}", f"bench.rtt-b.{tag}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in (a, b)]).values():
        f.result(30)
    fast = {"bootstrap.servers": bootstrap, "fetch.wait.max.ms": 5, "auto.offset.reset": "earliest"}
    stop = threading.Event()

    def relay() -> None:
        c = Consumer({**fast, "group.id": f"relay-{tag}"})
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        c.assign([TopicPartition(a, 0, OFFSET_BEGINNING)])  # no group: no rebalance wait
        while not stop.is_set():
            m = c.poll(0.05)
            if m is not None and not m.error():
                p.produce(b, m.value())
                p.poll(0)
        c.close()
        p.flush(5)

    run = Run("kafka round trip", rate)
    sent_at: dict[bytes, float] = {}
    done = threading.Event()
    n = int(rate * seconds)

    def collect() -> None:
        c = Consumer({**fast, "group.id": f"client-{tag}"})
        c.assign([TopicPartition(b, 0, OFFSET_BEGINNING)])
        while len(run.latencies_ms) < n and not stop.is_set():
            m = c.poll(0.05)
            if m is not None and not m.error():
                run.latencies_ms.append((time.perf_counter() - sent_at[m.value()]) * 1000)
                run.ok += 1
        c.close()
        done.set()

    threads = [threading.Thread(target=t, daemon=True) for t in (relay, collect)]
    for t in threads:
        t.start()
    time.sleep(1)  # both consumers have fetched their (empty) partitions once
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    start = time.perf_counter()
    for i in range(n):
        at = start + i / rate
        while (now := time.perf_counter()) < at:
            time.sleep(min(0.001, at - now))
        key = str(i).encode()
        sent_at[key] = at
        p.produce(a, key)
        p.poll(0)
    p.flush(5)
    run.sent = n
    done.wait(seconds + 30)
    stop.set()
    for t in threads:
        t.join(10)
    admin.delete_topics([a, b])
    return run


# ---- report ----------------------------------------------------------------------------------
def table(runs: list[Run], sla_ms: float) -> str:
    systems = list(dict.fromkeys(r.system for r in runs))
    rates = sorted({r.rate for r in runs})
    by = {(r.system, r.rate): r for r in runs}
    head = f"{'rate/s':>7} | " + " | ".join(f"{s:^26}" for s in systems)
    sub = f"{'':>7} | " + " | ".join(f"{'p50':>7} {'p99':>7} {'ok%':>6}   " for _ in systems)
    lines = [head, sub, "-" * len(head)]
    for rate in rates:
        cells = []
        for s in systems:
            r = by.get((s, rate))
            if r is None:
                cells.append(f"{'-':^26}")
            else:
                mark = " " if r.holds(sla_ms) else "!"
                cells.append(
                    f"{r.pct(0.5):7.1f} {r.pct(0.99):7.1f} {100 * r.ok_share:6.1f} {mark} "
                )
        lines.append(f"{rate:>7g} | " + " | ".join(cells))
    lines.append("")
    lines.append(f"milliseconds; '!' marks p99 over the {sla_ms:g} ms SLA or under 99% answered")
    for s in systems:
        held = [r.rate for r in runs if r.system == s and r.holds(sla_ms)]
        best = f"{max(held):g} req/s" if held else "none of the rates"
        lines.append(f"highest rate with p99 <= {sla_ms:g} ms: {s:<18} {best}")
    return "\n".join(lines)


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as info:
            names = [
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="25,50,100,150,200")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--skip", default="", help="comma-separated: rendezvous,mlflow,kafka")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    settings = StackSettings.from_env()
    bodies = demo_requests(500, seed=11)
    runs: list[Run] = []

    print(f"machine: {machine()}")
    if "rendezvous" not in skip:
        from rendezvous import demo

        url = demo.prepare(settings, print=lambda *a, **k: None)
        for rate in rates:
            settle("rendezvous", url, bodies, rendezvous_note)
            run = drive_http("rendezvous", url, bodies, rate, args.seconds, rendezvous_note)
            runs.append(run)
            print(f"  rendezvous      {rate:>5g}/s  p50 {run.pct(.5):6.1f}  p99 {run.pct(.99):7.1f}"
                  f"  answers {dict(run.notes)}", flush=True)  # fmt: skip
    if "mlflow" not in skip:
        port = free_port()
        proc = start_mlflow_serve(settings, port)
        try:
            url = f"http://127.0.0.1:{port}/invocations"
            mbodies = mlflow_bodies(bodies)
            for rate in rates:
                settle("mlflow serve", url, mbodies, lambda r: str(r.status_code))
                run = drive_http("mlflow serve", url, mbodies, rate, args.seconds,
                                 lambda r: str(r.status_code))  # fmt: skip
                runs.append(run)
                print(f"  mlflow serve    {rate:>5g}/s  p50 {run.pct(.5):6.1f}  p99 {run.pct(.99):7.1f}",
                      flush=True)  # fmt: skip
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(10)
    if "kafka" not in skip:
        for rate in rates:
            run = kafka_round_trip(settings.kafka_bootstrap, rate, args.seconds)
            runs.append(run)
            print(f"  kafka rtt       {rate:>5g}/s  p50 {run.pct(.5):6.1f}  p99 {run.pct(.99):7.1f}",
                  flush=True)  # fmt: skip
    print()
    print(table(runs, SLA_MS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
