"""The errors and failed outcomes the task service answers with, each carrying the task's identity."""

from __future__ import annotations

from typing import Any

from llava_edge.errors import InvalidRequestError, LlavaEdgeError, ServerBusyError
from llava_edge.schema import CaptionRequest, is_uuid4
from llava_edge.server.conversation import quoted
from llava_edge.server.task_results import Outcome


def internal_error(task_type: str | None, task_uuid: str | None) -> LlavaEdgeError:
    """What a task answers when something unexpected went wrong while answering it (logged separately)."""
    error = LlavaEdgeError("Internal error while answering this task; it was logged on the server. Retry it, "
                           "and report it if it happens again.")
    error.task_type, error.task_uuid = task_type, task_uuid
    return error


def shutdown_error(*, started: bool) -> ServerBusyError:
    """The error of a job the shutdown deadline caught (running or not started yet)."""
    state = "was still running" if started else "had not started"
    return ServerBusyError(
        f"The server shut down while this task {state}; it was not captioned. Send it again when the server is back.")


def failure(error: LlavaEdgeError, request: CaptionRequest) -> Outcome:
    """A failed outcome carrying the task's identity."""
    error.task_type, error.task_uuid = request.task_type, request.task_uuid
    return Outcome.failure(error)


def require_task_uuid(raw: dict[str, Any]) -> str:
    """The task's taskUUID, which must be a canonical UUID v4."""
    value = raw.get("taskUUID")
    if not is_uuid4(value):
        code = "missingTaskUUID" if value is None else "invalidTaskUUID"
        raise InvalidRequestError(f"taskUUID must be a UUID v4 string, got {quoted(value)}.", code=code,
                                  parameter="taskUUID")
    return str(value)


def unknown_task(raw: Any, task_type: str | None) -> InvalidRequestError:
    """The error for a task that is not an object or whose taskType this server does not know."""
    if not isinstance(raw, dict):
        return InvalidRequestError(f"A task must be a JSON object, got {type(raw).__name__}.", code="invalidTask",
                                   parameter="task")
    known = "caption, imageCaption, imageUpload, getResponse, ping, authentication"
    if task_type is None:
        return InvalidRequestError(f"taskType is required; this server knows {known}.", code="missingTaskType",
                                   parameter="taskType")
    return InvalidRequestError(f"Unsupported taskType {quoted(task_type)}; this server knows {known}.",
                               code="unsupportedTaskType", parameter="taskType")
