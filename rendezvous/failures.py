"""Why a Flink job failed, in one line, from its exception history.

``GET /jobs/<id>/exceptions`` (Flink 2.x: ``JobExceptionsInfoWithHistory``) answers
``{"exceptionHistory": {"entries": [...], "truncated": bool}}``, newest entry first; each entry
has ``exceptionName`` (the original exception class), ``stacktrace`` (the whole Java stack
trace as text), ``timestamp`` (ms), ``taskName``, ``endpoint``, ``taskManagerId`` (null for a
global failure), ``failureLabels`` and ``concurrentExceptions``.

A Python error reaches Flink wrapped: in thread mode as ``pemja.core.PythonException`` whose
message reads ``<class 'pkg.Error'>: message``; in process mode inside a chain of Beam
``RuntimeException`` s, the last of which carries the Python traceback in its message. The one
line names the Python exception and its message, which for a model that cannot load names the
model and the module (``ModelLoadError: model m: cannot import mod:f (No module named 'mod')``).

Pure: dicts and text in, text out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

MAX_MESSAGE = 400

# Exceptions that only carry another one.
_WRAPPER_CLASSES = frozenset(
    {
        "java.util.concurrent.ExecutionException",
        "java.util.concurrent.CompletionException",
        "java.lang.reflect.InvocationTargetException",
        "java.lang.reflect.UndeclaredThrowableException",
        "org.apache.flink.util.WrappingRuntimeException",
        "org.apache.flink.util.SerializedThrowable",
        "py4j.protocol.Py4JJavaError",
        "Py4JJavaError",
    }
)
# Messages of PyFlink's and Beam's wrappers around a Python worker's error.
_WRAPPER_MESSAGES = (
    "Error while waiting for BeamPythonFunctionRunner flush",
    "Failed to close remote bundle",
    "Error received from SDK harness",
    "An error occurred while calling",
    "Recovery is suppressed by",
)
_HEADER = re.compile(r"(?:Caused by: )?([A-Za-z_$][\w$.]*)(?:: (.*))?")
# Java prints frames, "... n more" and suppressed exceptions tab-indented; Python tracebacks
# inside a message are indented with spaces.
_FRAME = re.compile(r"\t+(?:at |\.\.\. \d+ more|Suppressed: |Caused by: )")
_PEMJA = re.compile(r"<class '([\w.]+)'>: (.*)", re.S)
_PYTHON_ERROR = re.compile(r"([A-Za-z_][\w.]*)(?:: (.*))?")
_TRACEBACK = "Traceback (most recent call last):"


@dataclass(frozen=True)
class Failure:
    """One failure of a job: the exception that explains it and where it happened."""

    exception: str  # class name without its package, e.g. "ModelLoadError"
    message: str  # one line
    timestamp_ms: int
    task: str | None = None

    @property
    def line(self) -> str:
        return f"{self.exception}: {self.message}" if self.message else self.exception


@dataclass(frozen=True)
class _Throwable:
    cls: str
    message: str  # all of it, lines joined with "\n"


def latest(exceptions: dict) -> Failure | None:
    """The newest failure in a ``GET /jobs/<id>/exceptions`` answer; None when the job never
    failed."""
    entries = (exceptions.get("exceptionHistory") or {}).get("entries") or []
    if not entries:
        return None
    entry = max(entries, key=lambda e: e.get("timestamp") or 0)
    cls, message = root_cause(entry.get("stacktrace") or "", entry.get("exceptionName") or "")
    return Failure(
        _short(cls), _one_line(message), int(entry.get("timestamp") or 0), entry.get("taskName")
    )


def describe(job_name: str, failure: Failure, hint: str | None = None) -> str:
    """``<job name>: <exception class>: <message>``, then ``; <hint>`` when there is one."""
    return f"{job_name}: {failure.line}" + (f"; {hint}" if hint else "")


_NO_MODULE = re.compile(r"No module named '([\w.]+)'")


def missing_module(failure: Failure) -> str | None:
    """The top-level module a failure could not import (``No module named 'x.y'`` gives
    ``x``); None when it is not an import failure."""
    match = _NO_MODULE.search(failure.message)
    return match.group(1).split(".", 1)[0] if match else None


def missing_package_hint(
    failure: Failure, requirements: Mapping[str, str], *, python: str | None = None
) -> str | None:
    """What to install when a job failed for a third-party package the TaskManager's Python
    lacks: ``requirements`` maps top-level module names to the requirement that provides them
    where the job was submitted (``sklearn`` -> ``scikit-learn==1.9.1``); ``python`` is the
    interpreter the jobs were given, if known. None for any other failure, and for modules no
    installed package provides (a service's own code: see its ``code`` key)."""
    module = missing_module(failure)
    requirement = requirements.get(module) if module else None
    if requirement is None:
        return None
    where = f"the TaskManagers' Python ({python})" if python else "the TaskManagers' Python"
    return (
        f"{where} lacks the package {requirement.split('==', 1)[0]} (module {module!r}); "
        f"install it there (pip install '{requirement}', the version this side has) on every "
        "TaskManager, or point flink_python at an interpreter that has it"
    )


def root_cause(stacktrace: str, exception_name: str = "") -> tuple[str, str]:
    """The exception class and message that explain a Java stack trace: the outermost
    exception, unless it only wraps its cause; then the innermost ``Caused by:`` that says
    something. A Python exception inside a pemja or Beam wrapper is taken out of it."""
    chain = _chain(stacktrace)
    if not chain:
        return exception_name or "unknown error", ""
    if _says_something(chain, 0):
        return _python_error(chain[0])
    inner = (i for i in range(len(chain) - 1, -1, -1) if _says_something(chain, i))
    return _python_error(chain[next(inner, len(chain) - 1)])


def _chain(stacktrace: str) -> list[_Throwable]:
    """The exception and its causes, outermost first; their frames and suppressed
    exceptions left out."""
    chain: list[_Throwable] = []
    cls: str | None = None
    message: list[str] = []
    in_frames = False
    for raw in stacktrace.splitlines():
        if cls is None and not raw.strip():
            continue
        if cls is None or raw.startswith("Caused by: "):
            if cls is not None:
                chain.append(_Throwable(cls, "\n".join(message).strip()))
            match = _HEADER.fullmatch(raw.strip())
            cls, message = (match.group(1), [match.group(2) or ""]) if match else (raw.strip(), [])
            in_frames = False
        elif in_frames or _FRAME.match(raw):
            in_frames = True
        else:
            message.append(raw)
    if cls is not None:
        chain.append(_Throwable(cls, "\n".join(message).strip()))
    return chain


def _says_something(chain: list[_Throwable], i: int) -> bool:
    """False for an exception that only wraps another: a wrapper class, an empty message, a
    PyFlink or Beam wrapper's message, or the message ``new RuntimeException(cause)`` gives."""
    t = chain[i]
    python = _python_error(t)
    if python != (t.cls, t.message):
        return python[0] not in _WRAPPER_CLASSES
    if t.cls in _WRAPPER_CLASSES or not t.message:
        return False
    if any(t.message.startswith(m) for m in _WRAPPER_MESSAGES):
        return False
    return not (i + 1 < len(chain) and t.message.startswith(chain[i + 1].cls))


def _python_error(t: _Throwable) -> tuple[str, str]:
    pemja = _PEMJA.match(t.message)
    if pemja:
        return pemja.group(1), pemja.group(2)
    if _TRACEBACK in t.message:
        # after the last traceback's last frame (its "File" line and indented source lines)
        # comes the exception: "pkg.Error: message"
        tail = t.message.split(_TRACEBACK)[-1].splitlines()
        frames = [i for i, line in enumerate(tail) if line.lstrip().startswith('File "')]
        for line in tail[frames[-1] + 1 if frames else 0 :]:
            if line.strip() and not line[0].isspace():
                match = _PYTHON_ERROR.fullmatch(line.strip())
                if match:
                    return match.group(1), match.group(2) or ""
                break
    return t.cls, t.message


def _short(cls: str) -> str:
    return cls.rsplit(".", 1)[-1].rsplit("$", 1)[-1] or cls


def _one_line(message: str) -> str:
    first = next((line.strip() for line in message.splitlines() if line.strip()), "")
    return first if len(first) <= MAX_MESSAGE else first[: MAX_MESSAGE - 1] + "…"
