"""Faults at load, audited against the archive.

    python -m bench.chaos [--faults taskmanager,broker,proxy] [--rate 20] [--before 15]
                          [--after 45]

For each fault, on the demo service (prepared as ``rendezvous demo`` would): light load until
answers are in time, then ``vegeta attack`` open loop at ``--rate`` for ``--before`` +
``--after`` seconds, every request with an ``X-Request-ID`` of its own; ``--before`` seconds in,
the fault:

- ``taskmanager``: SIGKILL to the Flink TaskManager running the most tasks, started again one
  second later (what a supervisor such as systemd or Kubernetes does; ``--tm-restart-s``);
- ``broker``: SIGKILL to the Kafka broker, started again at once;
- ``proxy``: the proxy replaced by a new one, as a rolling restart does: the new replica
  starts on the same port (shared with ``SO_REUSEPORT``) and listens once ready, then the old
  one is stopped (SIGTERM: it stops accepting, answers what it has accepted, then exits).
  ``--proxy-restart stop`` stops the old one first and then starts the new one (a single
  replica that restarts, with the port closed in between).

Then the archive is queried with SQL until every accepted request (answered 200, or given an
explicit ``504 deadline_exceeded`` / ``502 no_answer``: the proxy had produced it) is in the
``requests`` and ``decisions`` tables, or a timeout passes. Printed per fault: sent, answered
(200), explicit errors by status, refused connections (the proxy was down), responses later
than SLA + 20 ms, accepted requests **lost** (missing from a table), **duplicated** (more than
one row), answers that **differ** from the archived decision (model, reason or output), and the
**recovery** time: from the fault to the send time of the last request that did not get a 200.
Results go to ``bench/results/chaos-<UTC time>.json``. A script, not a test: the numbers depend
on the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx

from bench.vegeta import Attack, find_vegeta, targets_jsonl

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FAULTS = ("taskmanager", "broker", "proxy")
ACCEPTED = {200, 502, 504}
LATE_MS = 20


def targets(url: str, prefix: str, bodies: list[dict], n: int) -> str:
    """``n`` vegeta targets, request ``i`` with ID ``<prefix>-<i>``."""
    return targets_jsonl(
        url,
        (bodies[i % len(bodies)] for i in range(n)),
        request_ids=(f"{prefix}-{i}" for i in range(n)),
    )


def answer_note(code: int, body: bytes, error: str) -> str:
    """The parts of a response the audit compares, as JSON (vegeta's note slot)."""
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = None
    out: dict = {"code": code, "json": isinstance(doc, dict), "error": error}
    if code == 200 and isinstance(doc, dict):
        out.update(model=doc.get("model"), reason=doc.get("reason"), output=doc.get("output"))
    elif isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        out["code_name"] = doc["error"].get("code")
    return json.dumps(out)


def recovery_s(hits, fault_ns: int) -> float:
    """From the fault to the send time of the last request after it without a 200."""
    bad = [h.sent_ns for h in hits if h.sent_ns >= fault_ns and h.code != 200]
    return round((max(bad) - fault_ns) / 1e9, 1) if bad else 0.0


def back_s(hits, fault_ns: int, window_s: float = 5.0) -> float:
    """From the fault to the first request after it from which ``window_s`` seconds of
    requests all got a 200: when answers came back, not counting a stray miss later on."""
    after = sorted((h for h in hits if h.sent_ns >= fault_ns), key=lambda h: h.sent_ns)
    window_ns = int(window_s * 1e9)
    for i, h in enumerate(after):
        if h.code != 200:
            continue
        j = i
        while j < len(after) and after[j].sent_ns - h.sent_ns < window_ns and after[j].code == 200:
            j += 1
        if j == len(after) or after[j].sent_ns - h.sent_ns >= window_ns:
            return round((h.sent_ns - fault_ns) / 1e9, 1)
    return round((after[-1].sent_ns - fault_ns) / 1e9, 1) if after else 0.0


def inject(
    fault: str,
    stack,
    settings,
    *,
    tm_restart_s: float = 1.0,
    tm_nice: int = 0,
    proxy_restart: str = "replace",
) -> None:
    from rendezvous import demo
    from rendezvous.stack.procs import Service, port_open

    if fault == "taskmanager":
        stack.flink.busiest_taskmanager().kill()  # with several, the others stay up
        if tm_restart_s >= 0:
            time.sleep(tm_restart_s)
            stack.flink.start_taskmanagers(nice=tm_nice)
    elif fault == "broker":
        stack.kafka.service.kill()
        # The dead broker's listening sockets close a moment after the process is gone.
        deadline = time.monotonic() + 10
        while port_open(settings.host, settings.kafka_port) and time.monotonic() < deadline:
            time.sleep(0.05)
        stack.kafka.start()
        stack.kafka.service.wait_ready(stack.kafka.ready, timeout_s=60, what="Kafka")
    elif fault == "proxy" and proxy_restart == "replace":
        demo.replace_proxy(settings)
    elif fault == "proxy":
        Service("proxy", settings.run_dir, settings.logs_dir).stop()
        demo.prepare(settings, print=lambda *a, **k: None)
    else:
        raise ValueError(f"unknown fault {fault!r}; expected one of {', '.join(FAULTS)}")


def audit(settings, prefix: str, answers: dict[str, dict], *, timeout_s: float) -> dict:
    """Wait until every accepted request is in ``requests`` and ``decisions`` (or the timeout
    passes); count the lost, the duplicated and the answers unlike their decision."""
    from rendezvous.archive.sql import ArchiveSQL

    accepted = {rid for rid, a in answers.items() if a["code"] in ACCEPTED}
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    while True:
        with ArchiveSQL(settings.archive_dir) as db:
            counts = {}
            for table in ("requests", "decisions"):
                rows = db.con.execute(
                    f"SELECT request_id, count(*) FROM {table} WHERE request_id LIKE ? GROUP BY 1",
                    [prefix + "-%"],
                ).fetchall()
                counts[table] = dict(rows)
            decided = {
                rid: (model, reason, output)
                for rid, model, reason, output in db.con.execute(
                    "SELECT request_id, model, reason, output FROM decisions "
                    "WHERE request_id LIKE ?",
                    [prefix + "-%"],
                ).fetchall()
            }
        missing = {t: accepted - set(c) for t, c in counts.items()}
        if not any(missing.values()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    differ = []
    for rid in sorted(accepted):
        a = answers[rid]
        if a["code"] != 200 or rid not in decided:
            continue
        model, reason, output = decided[rid]
        got = (a.get("model"), a.get("reason"), a.get("output"))
        if got != (model, reason, None if output is None else json.loads(output)):
            differ.append({"request_id": rid, "answer": got, "decision": decided[rid]})
    return {
        "accepted": len(accepted),
        "archived_after_s": round(time.monotonic() - t0, 1),
        "lost": {t: len(m) for t, m in missing.items()},
        "lost_ids": {t: sorted(m)[:10] for t, m in missing.items()},
        "duplicated": {t: sum(1 for n in c.values() if n > 1) for t, c in counts.items()},
        "differ": len(differ),
        "differ_sample": differ[:5],
    }


GIVE_UP_LAG = "rdv_proxy_give_up_lag_seconds"


def give_up_lags(url: str) -> dict[float, float] | None:
    """The proxy's give-up lag histogram (``le`` -> cumulative count), or None if the proxy
    does not answer."""
    from urllib.parse import urlsplit

    from prometheus_client.parser import text_string_to_metric_families

    parts = urlsplit(url)
    try:
        text = httpx.get(f"{parts.scheme}://{parts.netloc}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    for family in text_string_to_metric_families(text):
        if family.name == GIVE_UP_LAG:
            return {
                float(s.labels["le"]): s.value for s in family.samples if s.name.endswith("_bucket")
            }
    return None


def lag_summary(before: dict[float, float] | None, after: dict[float, float] | None) -> dict:
    """Give-ups during the run, and how many went out more than 5 / 20 ms after their
    planned time (the proxy's own view of how late its explicit errors were)."""
    if before is None or after is None or any(after[k] < before.get(k, 0) for k in after):
        return {}  # the proxy restarted (its counters began again) or did not answer
    delta = {le: after[le] - before.get(le, 0) for le in after}
    total = delta[float("inf")]
    return {
        "give_ups": int(total),
        "give_ups_lag_over_5ms": int(total - delta.get(0.005, 0)),
        "give_ups_lag_over_20ms": int(total - delta.get(0.02, 0)),
        "give_ups_lag_over_100ms": int(total - delta.get(0.1, 0)),
    }


def run_fault(fault: str, args, settings, stack, url: str, vegeta: str, work: Path) -> dict:
    from bench.vegeta import rendezvous_note
    from rendezvous.demo_models import SLA_MS, demo_requests

    bodies = demo_requests(500, seed=13)
    # Light load until answers are in time again (after the previous fault).
    probe_file = work / "probe.jsonl"
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.settle:
        probe_file.write_text(targets(url, f"probe{uuid.uuid4().hex[:6]}", bodies, 30))
        atk = Attack(vegeta, probe_file, 10, 3, timeout_s=5, workdir=work)
        atk.wait()
        if all(h.note == "preferred" for h in atk.results(rendezvous_note)):
            break
    prefix = f"chaos-{fault}-{uuid.uuid4().hex[:6]}"
    seconds = args.before + args.after
    n = int(round(args.rate * seconds))
    path = work / f"{fault}.jsonl"
    path.write_text(targets(url, prefix, bodies, n))
    lags_before = give_up_lags(url)
    atk = Attack(vegeta, path, args.rate, seconds, timeout_s=5, workdir=work)
    time.sleep(args.before)
    fault_ns = time.time_ns()
    t_inject = time.monotonic()
    inject(  # vegeta keeps sending
        fault,
        stack,
        settings,
        tm_restart_s=args.tm_restart_s,
        tm_nice=args.tm_nice,
        proxy_restart=args.proxy_restart,
    )
    inject_s = time.monotonic() - t_inject
    atk.wait()
    lags = lag_summary(lags_before, give_up_lags(url))
    if fault == "taskmanager" and args.tm_restart_s < 0:
        stack.flink.start_taskmanagers()  # back to full strength for what comes next
    hits = atk.results(answer_note)
    answers = {}
    for h in hits:
        a = json.loads(h.note)
        a["latency_ms"] = h.latency_ms
        answers[f"{prefix}-{h.seq}"] = a
    codes: dict[str, int] = {}
    for a in answers.values():
        key = str(a["code"]) + (f" {a['code_name']}" if a.get("code_name") else "")
        if a["code"] == 0:
            key = "refused" if "refused" in a["error"] else f"transport: {a['error'][:40]}"
        codes[key] = codes.get(key, 0) + 1
    late_ms = sorted(
        a["latency_ms"]
        for a in answers.values()
        if a["code"] and a["latency_ms"] > SLA_MS + LATE_MS
    )
    late = len(late_ms)
    not_json = sum(1 for a in answers.values() if a["code"] and not a["json"])
    result = {
        "fault": fault,
        "rate": args.rate,
        "seconds": seconds,
        "sent": len(hits),
        "answered": codes.get("200", 0),
        "codes": codes,
        "late": late,
        "late_max_ms": round(late_ms[-1], 1) if late_ms else None,
        "late_median_ms": round(late_ms[len(late_ms) // 2], 1) if late_ms else None,
        # each answer that was not a 200, and each late one: seconds from the fault to its
        # send, its latency, its status (0: no response)
        "missed_hits": [
            [round((h.sent_ns - fault_ns) / 1e9, 2), round(h.latency_ms, 1), h.code]
            for h in hits
            if h.code != 200
        ],
        "late_hits": [
            [round((h.sent_ns - fault_ns) / 1e9, 2), round(h.latency_ms, 1), h.code]
            for h in hits
            if h.code and h.latency_ms > SLA_MS + LATE_MS
        ],
        "not_json": not_json,
        "inject_s": round(inject_s, 1),
        "recovery_s": recovery_s(hits, fault_ns),
        "back_s": back_s(hits, fault_ns),
        **lags,
    }
    result.update(audit(settings, prefix, answers, timeout_s=args.audit_timeout))
    return result


def line(r: dict) -> str:
    errors = sum(v for k, v in r["codes"].items() if k != "200" and k[0].isdigit())
    refused = sum(v for k, v in r["codes"].items() if not k[0].isdigit())
    return (
        f"{r['fault']:<12} {r['sent']:>5} {r['answered']:>6} {errors:>6} {refused:>7} "
        f"{r['late']:>5} {r['lost']['requests']:>5}/{r['lost']['decisions']:<5} "
        f"{r['duplicated']['requests']:>4}/{r['duplicated']['decisions']:<4} {r['differ']:>6} "
        f"{r['recovery_s']:>9.1f} {r['back_s']:>6.1f} {r['late_max_ms'] or 0:>9.0f}"
    )


HEADER = (
    f"{'fault':<12} {'sent':>5} {'200':>6} {'errors':>6} {'refused':>7} {'late':>5} "
    f"{'lost r/d':>11} {'dup r/d':>9} {'differ':>6} {'recovery':>9} {'back':>6} {'late max':>9}"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    p.add_argument("--faults", default=",".join(FAULTS), help="comma-separated, in order")
    p.add_argument("--rate", type=float, default=20.0, help="requests per second")
    p.add_argument("--before", type=float, default=15.0, help="seconds of load before the fault")
    p.add_argument("--after", type=float, default=45.0, help="seconds of load after the fault")
    p.add_argument("--settle", type=float, default=60.0, help="at most this long of light load")
    p.add_argument("--audit-timeout", type=float, default=180.0)
    p.add_argument(
        "--tm-restart-s",
        type=float,
        default=1.0,
        help="start the killed TaskManager again after this long (negative: after the load)",
    )
    p.add_argument(
        "--tm-nice",
        type=int,
        default=0,
        help="start the replacement TaskManager at this nice level (as a replacement on "
        "another machine would, it then leaves the serving path's CPU alone)",
    )
    p.add_argument(
        "--proxy-restart",
        choices=("replace", "stop"),
        default="replace",
        help="replace: a new replica on the shared port, then the old one stopped (default); "
        "stop: stop the old one, then start a new one",
    )
    p.add_argument("--vegeta", default=None)
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    args.faults = [f for f in args.faults.split(",") if f]
    unknown = set(args.faults) - set(FAULTS)
    if unknown:
        p.error(f"unknown fault(s) {', '.join(sorted(unknown))}; expected {', '.join(FAULTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rendezvous import demo
    from rendezvous.settings import StackSettings
    from rendezvous.stack import Stack

    settings = StackSettings.from_env()
    vegeta = find_vegeta(args.vegeta)
    started = datetime.now(timezone.utc)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out_path = args.results_dir / f"chaos-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    print("preparing the demo (stack, models, jobs, proxy) ...", flush=True)
    url = demo.prepare(settings, print=lambda *a, **k: None)
    stack = Stack(settings, log=lambda m: None)
    doc = {
        "command": [sys.executable, "-m", "bench.chaos", *(argv or sys.argv[1:])],
        "started": started.isoformat(),
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="rdv-chaos-") as tmp:
        for fault in args.faults:
            print(f"\n{fault}: {args.rate:g} req/s, fault after {args.before:g} s ...", flush=True)
            r = run_fault(fault, args, settings, stack, url, vegeta, Path(tmp))
            doc["runs"].append(r)
            out_path.write_text(json.dumps(doc, indent=1, default=str))
            print(HEADER)
            print(line(r), flush=True)
            print(
                f"    codes {r['codes']}; fault injected in {r['inject_s']} s; "
                f"archive audited {r['archived_after_s']} s after the load"
            )
            if "give_ups" in r:
                print(
                    f"    the proxy gave up on {r['give_ups']} requests; after their planned "
                    f"time by > 5 ms: {r['give_ups_lag_over_5ms']}, > 20 ms: "
                    f"{r['give_ups_lag_over_20ms']}, > 100 ms: {r['give_ups_lag_over_100ms']}"
                )
            if r["differ"]:
                print(f"    differing answers, e.g. {r['differ_sample'][:2]}")
            if any(r["lost"].values()):
                print(f"    lost, e.g. {r['lost_ids']}")
    print("\n" + HEADER)
    for r in doc["runs"]:
        print(line(r))
    print(f"\nwritten to {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
