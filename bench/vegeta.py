"""Driving `vegeta <https://github.com/tsenart/vegeta>`_ (v12.13.0) and reading its results.

``vegeta attack`` paces hits with a constant pacer: hit *n* (from 0) is due at
``began + (n + 1) / rate``, and a hit that is late (a slow tick, a starved process) is sent at
once. Each result's ``timestamp`` is taken when a worker picks the hit up, just before the
request is built and sent, and its ``latency`` runs from that timestamp until the response
body has been read. So vegeta's latency counts from the **actual** send, not from the
scheduled time. With enough workers the two coincide; when every worker is busy, vegeta
starts a new one, unless ``-max-workers`` is reached, and then the pacer waits for a free
worker and the load silently turns closed-loop. This module gives every attack
``-max-workers`` of at least ``rate * timeout`` (no request outlives its timeout, so a worker
is always free) and computes each hit's **send lag** (actual send minus its slot in the
schedule) from the results, so a run whose generator fell behind shows it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path

NoteFn = Callable[[int, bytes, str], str]


@dataclass(frozen=True, slots=True)
class Hit:
    """One vegeta result, reduced to what the benchmark reads."""

    seq: int
    sent_ns: int  # vegeta's timestamp: when a worker started the request (Unix ns)
    latency_ms: float  # vegeta's latency: from sent_ns until the response body was read
    code: int  # HTTP status; 0 when no response came (connection error, client timeout)
    note: str  # what the answer says: the body's reason or error code, or the transport error
    retry_after: bool  # the response carried a Retry-After header


# ---- targets --------------------------------------------------------------------------------
def targets_jsonl(
    url: str,
    bodies: Iterable[object],
    *,
    method: str = "POST",
    request_ids: Iterable[str] | None = None,
) -> str:
    """vegeta's JSON target format: one object a line, the body base64-encoded; with
    ``request_ids``, target *i* carries the *i*-th as its ``X-Request-ID`` (vegeta sends target
    *i* as hit *i* when there are as many targets as hits)."""
    ids = iter(request_ids) if request_ids is not None else None
    lines = []
    for body in bodies:
        raw = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        header = {"Content-Type": ["application/json"]}
        if ids is not None:
            header["X-Request-ID"] = [next(ids)]
        lines.append(
            json.dumps(
                {
                    "method": method,
                    "url": url,
                    "header": header,
                    "body": base64.b64encode(raw).decode(),
                }
            )
        )
    return "\n".join(lines) + "\n"


def rate_flag(rate: float) -> str:
    """``-rate`` takes an integer count per a duration: 250 -> ``250/1s``, 12.5 -> ``25/2s``."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    frac = Fraction(rate).limit_denominator(1000)
    return f"{frac.numerator}/{frac.denominator}s"


def interval_ns(rate: float) -> int:
    """The pacer's interval between hits (vegeta truncates it to whole nanoseconds)."""
    frac = Fraction(rate).limit_denominator(1000)
    return (frac.denominator * 1_000_000_000) // frac.numerator


def max_workers(rate: float, timeout_s: float, *, floor: int = 64) -> int:
    """Enough workers that one is always free: at most ``rate * timeout`` hits are in flight."""
    return max(floor, math.ceil(rate * timeout_s * 1.1) + 16)


# ---- results --------------------------------------------------------------------------------
_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def parse_timestamp_ns(text: str) -> int:
    """RFC 3339 with up to nanoseconds (Go's ``time.Time`` in JSON) -> Unix nanoseconds."""
    m = _TS.match(text)
    if not m:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    zone = "+00:00" if m[3] == "Z" else m[3]
    seconds = int(datetime.fromisoformat(m[1] + zone).timestamp())
    return seconds * 1_000_000_000 + int((m[2] or "").ljust(9, "0"))


def transport_note(error: str) -> str:
    """A short name for vegeta's error string of a request that got no response."""
    e = error.lower()
    if "timeout" in e or "deadline exceeded" in e:
        return "client timeout"
    if "connection refused" in e:
        return "connection refused"
    if "connection reset" in e:
        return "connection reset"
    if "eof" in e:
        return "connection closed"
    return error.rsplit(": ", 1)[-1][:60] or "no response"


def status_note(code: int, body: bytes, error: str) -> str:
    """The HTTP status alone (``mlflow models serve``)."""
    return str(code) if code else transport_note(error)


def rendezvous_note(code: int, body: bytes, error: str) -> str:
    """A 200's ``reason`` (up to a colon), else ``<status> <error.code>`` of the error body."""
    if not code:
        return transport_note(error)
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if code == 200:
        reason = doc.get("reason") if isinstance(doc, dict) else None
        return str(reason).split(":")[0] if reason else "200 ?"
    err = doc.get("error") if isinstance(doc, dict) else None
    err_code = err.get("code") if isinstance(err, dict) else None
    return f"{code} {err_code or '?'}"


def parse_result(doc: dict, note: NoteFn = status_note) -> Hit:
    """One object of ``vegeta encode -to json``."""
    body = base64.b64decode(doc.get("body") or "")
    headers = doc.get("headers") or {}
    code = int(doc.get("code") or 0)
    error = doc.get("error") or ""
    return Hit(
        seq=int(doc["seq"]),
        sent_ns=parse_timestamp_ns(doc["timestamp"]),
        latency_ms=int(doc["latency"]) / 1e6,
        code=code,
        note=note(code, body, error),
        retry_after=any(k.lower() == "retry-after" for k in headers),
    )


def parse_results(lines: Iterable[str | bytes], note: NoteFn = status_note) -> list[Hit]:
    hits = [parse_result(json.loads(line), note) for line in lines if line.strip()]
    hits.sort(key=lambda h: h.seq)
    return hits


def send_lags_ms(hits: Sequence[Hit], rate: float) -> list[float]:
    """Per hit (in ``hits``' order): how late it left against its slot in the schedule. The
    attack's start is not in the results; it is taken as the earliest start consistent with
    the slots (the least-late hit left on time), so lags are >= 0 and read as relative."""
    if not hits:
        return []
    step = interval_ns(rate)
    offsets = [h.sent_ns - (h.seq + 1) * step for h in hits]
    began = min(offsets)
    return [(o - began) / 1e6 for o in offsets]


# ---- running --------------------------------------------------------------------------------
def find_vegeta(explicit: str | None = None) -> str:
    """``--vegeta``, else ``vegeta`` beside this Python (``make`` puts it in .venv/bin), else
    on PATH."""
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "vegeta"
    if beside.exists():
        return str(beside)
    repo = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "vegeta"
    if repo.exists():
        return str(repo)
    found = shutil.which("vegeta")
    if found:
        return found
    raise FileNotFoundError(
        "vegeta not found: run `make .venv/bin/vegeta` (go install "
        "github.com/tsenart/vegeta/v12@v12.13.0) or pass --vegeta PATH"
    )


def version(vegeta: str) -> str:
    """vegeta's version: ``-version`` prints none for a ``go install`` build, so the module
    version is read from the binary's build information (``go version -m``)."""
    for argv in ([vegeta, "-version"], ["go", "version", "-m", vegeta]):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        for line in out.splitlines():
            parts = line.split()
            if parts[:1] == ["Version:"] and len(parts) > 1:
                return parts[1]
            if parts[:2] == ["mod", "github.com/tsenart/vegeta/v12"] and len(parts) > 2:
                return parts[2]
    return "?"


class Attack:
    """One ``vegeta attack`` process writing its results (gob) to a file of its own.

    ``wait()`` reaps it with ``wait4`` and so also returns the CPU time it used."""

    def __init__(
        self,
        vegeta: str,
        targets: Path,
        rate: float,
        seconds: float,
        *,
        timeout_s: float = 5.0,
        workdir: Path | None = None,
    ) -> None:
        self.vegeta, self.rate, self.seconds, self.timeout_s = vegeta, rate, seconds, timeout_s
        fd, out = tempfile.mkstemp(prefix="vegeta-", suffix=".bin", dir=workdir)
        os.close(fd)
        self.output = Path(out)
        self.argv = [
            vegeta,
            "attack",
            "-format=json",
            f"-targets={targets}",
            f"-rate={rate_flag(rate)}",
            f"-duration={seconds:g}s",
            f"-timeout={timeout_s:g}s",
            f"-max-workers={max_workers(rate, timeout_s)}",
            f"-output={self.output}",
        ]
        self.errors = self.output.with_suffix(".err")
        self.started = time.monotonic()
        with open(self.errors, "wb") as err:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
        self.cpu_s: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self) -> float:
        """Wait for the attack to end; returns its CPU-seconds (user + system)."""
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.cpu_s = usage.ru_utime + usage.ru_stime
        msg = self.errors.read_text(errors="replace").strip()
        self.errors.unlink(missing_ok=True)
        if self.proc.returncode != 0:
            raise RuntimeError(f"vegeta attack exited {self.proc.returncode}: {msg}")
        return self.cpu_s

    def results(self, note: NoteFn = status_note) -> list[Hit]:
        """Decode the results (``vegeta encode -to json``), then delete the file."""
        try:
            enc = subprocess.Popen(
                [self.vegeta, "encode", "-to", "json", str(self.output)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            assert enc.stdout is not None
            hits = parse_results(enc.stdout, note)
            err = enc.stderr.read().decode(errors="replace") if enc.stderr else ""
            if enc.wait() != 0:
                raise RuntimeError(f"vegeta encode failed: {err.strip()}")
            return hits
        finally:
            self.output.unlink(missing_ok=True)

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            with contextlib.suppress(RuntimeError):
                self.wait()
        self.output.unlink(missing_ok=True)
