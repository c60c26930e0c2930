"""The project's exception tree.

Every error carries a message that says what happened and how to fix it, and an HTTP status
so the proxy can map it to a response in one place.
"""

from __future__ import annotations


class RendezvousError(Exception):
    """Root of every error this project raises on purpose."""

    status = 500
    code = "internal"

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id


class ConfigError(RendezvousError):
    """A setting or configuration file is invalid."""

    code = "config"
    problems: tuple = ()  # a configuration file's problems, one per field (see rendezvous.config)


class PolicyError(RendezvousError):
    """A policy change that cannot be made as asked (nothing to undo, an unknown version)."""

    code = "policy"


class StackError(RendezvousError):
    """A local service could not be started, probed or stopped."""

    code = "stack"


class PortInUse(StackError):
    code = "port_in_use"


class ComponentDied(StackError):
    code = "component_died"


class MissingTool(StackError):
    code = "missing_tool"


class NotEnoughSlots(StackError):
    """The jobs to submit do not fit in the Flink cluster's free task slots."""

    code = "not_enough_slots"


class JobFailed(StackError):
    """A submitted Flink job failed, or did not start running in time."""

    code = "job_failed"
