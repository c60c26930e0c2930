"""CPU time of the stack's processes, read from ``/proc/<pid>/stat``.

A component is named by a pattern of its command line (``kafka.Kafka``, ``TaskManagerRunner``,
...) and counts as the tree under each matching process: its own ``utime + stime`` plus the
same for every descendant, plus ``cutime + cstime`` (children that exited and were reaped
during the window move their time there, so a tree's total stays continuous). A window's cost
is the difference of two snapshots.

When the stack's pid files are given (``<home>/run/*.pid``), only processes started from them
count, so a second stack on the same machine (the integration tests start their own) is not
mixed in.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# name -> substrings of the command line (any of them) that mark the root of the component.
COMPONENTS: dict[str, tuple[str, ...]] = {
    "proxy": ("rendezvous.cli proxy", "bin/rendezvous proxy"),
    "kafka": ("kafka.Kafka",),
    "taskmanager": ("TaskManagerRunner",),
    "jobmanager": ("StandaloneSessionClusterEntrypoint",),
    "mlflow server": ("mlflow server",),
    "mlflow serve": ("mlflow models serve",),
}


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    ticks: int  # utime + stime + cutime + cstime, in clock ticks
    starttime: int  # clock ticks after boot: tells a reused pid from the original


def parse_stat(text: str) -> ProcStat:
    """One ``/proc/<pid>/stat`` line. The command name (field 2) is in parentheses and may
    hold spaces and parentheses itself, so fields are counted from the last ``)``."""
    head, _, tail = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    f = tail.split()
    # tail starts at field 3 (state): ppid is field 4, utime..cstime 14..17, starttime 22.
    ppid = int(f[1])
    utime, stime, cutime, cstime = (int(x) for x in f[11:15])
    return ProcStat(pid, ppid, utime + stime + cutime + cstime, int(f[19]))


@dataclass(frozen=True)
class Proc:
    stat: ProcStat
    cmdline: str


def scan(proc_root: str = "/proc") -> dict[int, Proc]:
    """Every process readable now: pid -> stat and command line (arguments joined by spaces)."""
    procs: dict[int, Proc] = {}
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc_root}/{entry}/stat") as f:
                stat = parse_stat(f.read())
            with open(f"{proc_root}/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile, or a kernel thread we cannot read
        procs[stat.pid] = Proc(stat, cmd)
    return procs


def read_pid_files(run_dir: Path) -> set[int]:
    pids = set()
    for p in Path(run_dir).glob("*.pid"):
        try:
            pids.add(int(p.read_text().strip()))
        except (OSError, ValueError):
            continue
    return pids


def children_of(procs: Mapping[int, Proc]) -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for pid, p in procs.items():
        kids.setdefault(p.stat.ppid, []).append(pid)
    return kids


def tree(root: int, kids: Mapping[int, list[int]]) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


def _ancestors(pid: int, procs: Mapping[int, Proc]) -> Iterable[int]:
    seen = set()
    while pid in procs and pid not in seen:
        seen.add(pid)
        pid = procs[pid].stat.ppid
        yield pid


def find_roots(
    procs: Mapping[int, Proc],
    patterns: Mapping[str, tuple[str, ...]] = COMPONENTS,
    *,
    stack_pids: set[int] | None = None,
    extra: Mapping[str, Iterable[int]] | None = None,
) -> dict[str, list[int]]:
    """name -> root pids. A root matches one of the name's patterns and has no matching
    ancestor (``mlflow server`` forks a uvicorn worker: one tree, not two). With
    ``stack_pids``, a root must be one of them or descend from one. ``extra`` adds named
    roots directly (a process this script started)."""
    roots: dict[str, list[int]] = {}
    for name, pats in patterns.items():
        hits = {pid for pid, p in procs.items() if any(s in p.cmdline for s in pats)}
        found = []
        for pid in sorted(hits):
            lineage = set(_ancestors(pid, procs))
            if lineage & hits:
                continue
            if stack_pids is not None and pid not in stack_pids and not lineage & stack_pids:
                continue
            found.append(pid)
        if found:
            roots[name] = found
    for name, pids in (extra or {}).items():
        roots[name] = sorted(set(roots.get(name, [])) | set(pids))
    return roots


@dataclass(frozen=True)
class Snapshot:
    """Per component: pid -> (starttime, ticks) over its trees, at one instant."""

    trees: dict[str, dict[int, tuple[int, int]]]


def snapshot(roots: Mapping[str, list[int]], procs: Mapping[int, Proc]) -> Snapshot:
    kids = children_of(procs)
    trees: dict[str, dict[int, tuple[int, int]]] = {}
    for name, pids in roots.items():
        members: dict[int, tuple[int, int]] = {}
        for root in pids:
            for pid in tree(root, kids):
                if pid in procs:
                    st = procs[pid].stat
                    members[pid] = (st.starttime, st.ticks)
        trees[name] = members
    return Snapshot(trees)


def cpu_delta(
    before: Snapshot, after: Snapshot, *, clk_tck: int = CLK_TCK
) -> dict[str, float | None]:
    """CPU-seconds per component between two snapshots: the tree's total after minus its
    total before. A process that appeared meanwhile counts from zero; one that exited was
    reaped by its parent in the tree, whose ``cutime`` now holds its time (a process reaped
    outside the tree loses its last window). A component missing from either snapshot, or
    whose total went down (its root restarted), is None."""
    out: dict[str, float | None] = {}
    for name in before.trees.keys() | after.trees.keys():
        b, a = before.trees.get(name), after.trees.get(name)
        if not b or not a:
            out[name] = None
            continue
        total = sum(t for _, t in a.values()) - sum(t for _, t in b.values())
        out[name] = total / clk_tck if total >= 0 else None
    return out


def per_thousand(cpu_s: Mapping[str, float | None], requests: int) -> dict[str, float | None]:
    """CPU-seconds per 1,000 requests (None where unknown or when nothing was sent)."""
    return {
        name: (None if s is None or requests <= 0 else 1000.0 * s / requests)
        for name, s in cpu_s.items()
    }


def self_ticks() -> int:
    """This process's own utime + stime (all threads), in clock ticks."""
    with open("/proc/self/stat") as f:
        return parse_stat(f.read()).ticks
