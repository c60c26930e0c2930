"""Flink 2.3 exception-history payloads (``GET /jobs/<id>/exceptions``,
``JobExceptionsInfoWithHistory``): ``exceptionHistory.entries[]`` with ``exceptionName``,
``stacktrace``, ``timestamp``, ``taskName``, ``endpoint``, ``taskManagerId``, ``failureLabels``,
``concurrentExceptions``. The stack traces are laid out as Java prints them (tab-indented
frames, ``Caused by:``), with the Python error as pemja (thread mode) and Beam (process mode)
put it into the message."""

from __future__ import annotations

LOAD_ERROR = (
    "model broken: cannot import no_such_module:predict (No module named 'no_such_module'); "
    "a module of your own belongs in the service's code key (it ships with the jobs), a "
    "third-party one installed in the TaskManagers' Python; check the function name too"
)
TASK = "Source: model-input -> score-credit-broken-data -> score-credit-broken -> scores sink (1/1)"


def trace(*lines: str) -> str:
    return "\n".join(lines) + "\n"


# Thread mode: pemja turns the Python exception into pemja.core.PythonException, its message
# "<class '...'>: <args[0]>", the Python frames (innermost first) ahead of the Java ones.
PEMJA = trace(
    f"pemja.core.PythonException: <class 'rendezvous.models.errors.ModelLoadError'>: {LOAD_ERROR}",
    "\tat /work/app/rendezvous/models/callables._load_callable(callables.py:22)",
    "\tat /work/app/rendezvous/models/scorer.load_scorer(scorer.py:41)",
    "\tat /work/app/jobs/score.open(score.py:28)",
    "\tat /venv/lib/python3.11/site-packages/pyflink/fn_execution/embedded/operations.open(operations.py:32)",
    "\tat pemja.core.object.PyObject.invokeMethod(Native Method)",
    "\tat pemja.core.object.PyObject.invokeMethod(PyObject.java:74)",
    "\tat org.apache.flink.streaming.api.operators.python.embedded.AbstractOneInputEmbeddedPythonFunctionOperator.open(AbstractOneInputEmbeddedPythonFunctionOperator.java:106)",
    "\tat org.apache.flink.streaming.api.operators.python.embedded.EmbeddedPythonProcessOperator.open(EmbeddedPythonProcessOperator.java:69)",
    "\tat org.apache.flink.streaming.runtime.tasks.RegularOperatorChain.initializeStateAndOpenOperators(RegularOperatorChain.java:107)",
    "\tat org.apache.flink.streaming.runtime.tasks.StreamTask.restoreStateAndGates(StreamTask.java:858)",
    "\tat org.apache.flink.runtime.taskmanager.Task.doRun(Task.java:753)",
    "\tat org.apache.flink.runtime.taskmanager.Task.run(Task.java:569)",
    "\tat java.base/java.lang.Thread.run(Thread.java:840)",
)

PY_TRACEBACK = (
    "Traceback (most recent call last):",
    '  File "/venv/lib/python3.11/site-packages/apache_beam/runners/worker/sdk_worker.py", line 311, in _execute',
    "    response = task()",
    "               ^^^^^^",
    '  File "/venv/lib/python3.11/site-packages/pyflink/fn_execution/beam/beam_operations.py", line 71, in setup',
    "    self.operation.open()",
    '  File "/work/app/jobs/score.py", line 28, in open',
    "    self.scorer = load_scorer(spec, tracking_uri=self.settings.tracking_uri)",
    '  File "/work/app/rendezvous/models/callables.py", line 22, in _load_callable',
    "    raise ModelLoadError(",
    f"rendezvous.models.errors.ModelLoadError: {LOAD_ERROR}",
    "",
)

# Process mode: the Python worker's traceback travels in the message of Beam's exception, under
# PyFlink's wrappers.
BEAM = trace(
    "java.lang.RuntimeException: Error while waiting for BeamPythonFunctionRunner flush",
    "\tat org.apache.flink.streaming.api.operators.python.process.AbstractExternalPythonFunctionOperator.invokeFinishBundle(AbstractExternalPythonFunctionOperator.java:107)",
    "\tat org.apache.flink.runtime.taskmanager.Task.run(Task.java:569)",
    "\tat java.base/java.lang.Thread.run(Thread.java:840)",
    "Caused by: java.lang.RuntimeException: Failed to close remote bundle",
    "\tat org.apache.flink.streaming.api.runners.python.beam.BeamPythonFunctionRunner.finishBundle(BeamPythonFunctionRunner.java:423)",
    "\t... 1 more",
    "Caused by: java.util.concurrent.ExecutionException: java.lang.RuntimeException: Error received from SDK harness for instruction 1: "
    + PY_TRACEBACK[0],
    *PY_TRACEBACK[1:],
    "\tat java.base/java.util.concurrent.CompletableFuture.reportGet(CompletableFuture.java:396)",
    "\tat org.apache.beam.sdk.util.MoreFutures.get(MoreFutures.java:61)",
    "\t... 7 more",
    "Caused by: java.lang.RuntimeException: Error received from SDK harness for instruction 1: "
    + PY_TRACEBACK[0],
    *PY_TRACEBACK[1:],
    "\tat org.apache.beam.runners.fnexecution.control.FnApiControlClient$ResponseStreamObserver.onNext(FnApiControlClient.java:180)",
    "\t... 3 more",
)

TASKMANAGER_LOST = trace(
    "org.apache.flink.runtime.jobmaster.JobMasterException: TaskManager with id 127.0.0.1:39251-7c1e2a is no longer reachable.",
    "\tat org.apache.flink.runtime.jobmaster.JobMaster$TaskManagerHeartbeatListener.notifyTargetUnreachable(JobMaster.java:1560)",
    "\tat java.base/java.lang.Thread.run(Thread.java:840)",
)

KAFKA = trace(
    "java.lang.RuntimeException: org.apache.kafka.common.errors.TimeoutException: Timeout expired while fetching topic metadata",
    "\tat org.apache.flink.connector.kafka.source.enumerator.KafkaSourceEnumerator.getSubscribedTopicPartitions(KafkaSourceEnumerator.java:240)",
    "\tSuppressed: java.lang.IllegalStateException: enumerator closed",
    "\t\tat org.apache.flink.connector.kafka.source.enumerator.KafkaSourceEnumerator.close(KafkaSourceEnumerator.java:300)",
    "Caused by: org.apache.kafka.common.errors.TimeoutException: Timeout expired while fetching topic metadata",
)


def entry(stacktrace: str, name: str, timestamp: int = 1_750_000_000_123, **extra) -> dict:
    base = {
        "exceptionName": name,
        "stacktrace": stacktrace,
        "timestamp": timestamp,
        "taskName": TASK,
        "endpoint": "127.0.0.1:40321",
        "taskManagerId": "127.0.0.1:40321-5a9d2c",
        "failureLabels": {},
        "concurrentExceptions": [],
    }
    return {**base, **extra}


def history(*entries: dict, truncated: bool = False) -> dict:
    return {"exceptionHistory": {"entries": list(entries), "truncated": truncated}}
