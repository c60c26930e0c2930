"""The one line that says why a Flink job failed, from its exception history (the payloads
in tests/unit/flink_samples.py)."""

from __future__ import annotations

import subprocess
import sys

from rendezvous import failures
from tests.unit.flink_samples import (
    BEAM,
    KAFKA,
    LOAD_ERROR,
    PEMJA,
    PY_TRACEBACK,
    TASK,
    TASKMANAGER_LOST,
    entry,
    history,
    trace,
)


def test_a_model_that_cannot_load_in_thread_mode_names_the_model_and_the_module():
    failure = failures.latest(history(entry(PEMJA, "pemja.core.PythonException")))
    assert failure.exception == "ModelLoadError"
    assert failure.message == LOAD_ERROR
    assert failure.task == TASK
    line = failures.describe("rendezvous-score credit/broken", failure)
    assert line == f"rendezvous-score credit/broken: ModelLoadError: {LOAD_ERROR}"
    assert "\n" not in line and "no_such_module" in line


def test_process_mode_takes_the_python_error_out_of_the_beam_wrappers():
    cls, message = failures.root_cause(BEAM, "java.lang.RuntimeException")
    assert (cls, message) == ("rendezvous.models.errors.ModelLoadError", LOAD_ERROR)


def test_a_module_missing_on_the_worker_is_named():
    tb = (*PY_TRACEBACK[:-2], "ModuleNotFoundError: No module named 'udfs'", "")
    stack = trace(
        "java.lang.RuntimeException: Error received from SDK harness for instruction 2: " + tb[0],
        *tb[1:],
        "\tat org.apache.beam.runners.fnexecution.control.FnApiControlClient$ResponseStreamObserver.onNext(FnApiControlClient.java:180)",
    )
    failure = failures.latest(history(entry(stack, "java.lang.RuntimeException")))
    assert failure.line == "ModuleNotFoundError: No module named 'udfs'"


def test_a_chained_python_error_reports_the_last_one():
    tb = (
        "Traceback (most recent call last):",
        '  File "/work/app/udfs/zoo.py", line 3, in <module>',
        "    import lightgbm",
        "ModuleNotFoundError: No module named 'lightgbm'",
        "",
        "During handling of the above exception, another exception occurred:",
        "",
        *PY_TRACEBACK,
    )
    stack = trace(
        "java.lang.RuntimeException: Error received from SDK harness for instruction 1: " + tb[0],
        *tb[1:],
        "\tat x.Y.z(Y.java:1)",
    )
    assert failures.root_cause(stack)[0] == "rendezvous.models.errors.ModelLoadError"


def test_an_exception_that_explains_itself_is_kept():
    failure = failures.latest(
        history(entry(TASKMANAGER_LOST, "org.apache.flink.runtime.jobmaster.JobMasterException"))
    )
    assert failure.line == (
        "JobMasterException: TaskManager with id 127.0.0.1:39251-7c1e2a is no longer reachable."
    )


def test_a_wrapper_repeating_its_cause_gives_way_to_the_cause_and_suppressed_are_skipped():
    cls, message = failures.root_cause(KAFKA)
    assert cls == "org.apache.kafka.common.errors.TimeoutException"
    assert message == "Timeout expired while fetching topic metadata"


def test_the_newest_entry_wins_and_a_global_failure_has_no_task():
    old = entry(
        TASKMANAGER_LOST, "org.apache.flink.runtime.jobmaster.JobMasterException", timestamp=1_000
    )
    new = entry(
        PEMJA,
        "pemja.core.PythonException",
        timestamp=2_000,
        taskName=None,
        endpoint=None,
        taskManagerId=None,
    )
    for order in ((old, new), (new, old)):
        failure = failures.latest(history(*order, truncated=True))
        assert failure.exception == "ModelLoadError"
        assert failure.timestamp_ms == 2_000
        assert failure.task is None


def test_no_failure_yet():
    assert failures.latest(history()) is None
    assert failures.latest({}) is None


def test_an_unreadable_trace_falls_back_to_the_exception_name():
    failure = failures.latest(history(entry("", "org.apache.flink.util.FlinkException")))
    assert failure.line == "FlinkException"


def test_a_long_message_is_cut_to_one_bounded_line():
    stack = trace(
        "java.lang.IllegalStateException: " + "x" * 1000 + "\nsecond line", "\tat a.B.c(B.java:1)"
    )
    failure = failures.latest(history(entry(stack, "java.lang.IllegalStateException")))
    assert len(failure.message) == failures.MAX_MESSAGE
    assert "\n" not in failure.line


def test_the_module_does_not_load_pyflink():
    code = "import sys, rendezvous.failures, rendezvous.slots; sys.exit('pyflink' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---- a third-party package the TaskManagers' Python lacks -----------------------------------

REQUIREMENTS = {"fastavro": "fastavro==1.13.1", "sklearn": "scikit-learn==1.9.1"}


def missing(module: str, message: str | None = None) -> failures.Failure:
    stack = trace(
        "pemja.core.PythonException: <class 'ModuleNotFoundError'>: "
        + (message or f"No module named '{module}'"),
        "\tat /tmp/python-dist-1/python-files/blob_1/rendezvous-0/rendezvous/serde.py(serde.py:12)",
        "\tat pemja.core.object.PyObject.invokeMethod(Native Method)",
    )
    return failures.latest(history(entry(stack, "pemja.core.PythonException")))


def test_a_third_party_package_missing_on_the_taskmanager_is_named_with_the_fix():
    failure = missing("fastavro")
    hint = failures.missing_package_hint(failure, REQUIREMENTS, python="/usr/bin/python3")
    line = failures.describe("rendezvous-enrich", failure, hint)
    assert line == (
        "rendezvous-enrich: ModuleNotFoundError: No module named 'fastavro'; the TaskManagers' "
        "Python (/usr/bin/python3) lacks the package fastavro (module 'fastavro'); install it "
        "there (pip install 'fastavro==1.13.1', the version this side has) on every "
        "TaskManager, or point flink_python at an interpreter that has it"
    )
    assert "\n" not in line


def test_the_package_is_named_by_its_distribution_from_a_submodule_inside_a_model_error():
    failure = missing("sklearn", "model m: cannot load (No module named 'sklearn.linear_model')")
    assert failures.missing_module(failure) == "sklearn"
    hint = failures.missing_package_hint(failure, REQUIREMENTS)
    assert hint.startswith("the TaskManagers' Python lacks the package scikit-learn")
    assert "pip install 'scikit-learn==1.9.1'" in hint


def test_no_hint_for_a_module_no_installed_package_provides_nor_for_other_failures():
    assert failures.missing_package_hint(missing("mymodule"), REQUIREMENTS) is None
    other = failures.latest(history(entry(PEMJA, "pemja.core.PythonException")))
    assert failures.missing_module(other) == "no_such_module"
    assert failures.missing_package_hint(other, REQUIREMENTS) is None
    assert failures.describe("job", other, None) == f"job: {other.line}"
