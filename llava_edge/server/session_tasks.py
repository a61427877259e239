"""The Runware tasks that never reach the model: ``authentication``, ``ping`` and ``getResponse``."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from llava_edge.errors import LlavaEdgeError
from llava_edge.schema import RESPONSE_TASK_TYPE
from llava_edge.server.auth import AuthGate
from llava_edge.server.settings import AUTH_TASK_TYPE
from llava_edge.server.task_errors import internal_error, require_task_uuid
from llava_edge.server.task_results import Outcome, TaskRegistry

_log = logging.getLogger("llava_edge.server.task_service")


def authenticate(auth: AuthGate, raw: dict[str, Any], client: str) -> Outcome:
    """Check an ``authentication`` task from ``client`` (an address); success answers a fresh
    ``connectionSessionUUID``."""
    try:
        auth.verify(client, raw.get("apiKey"))
    except LlavaEdgeError as err:
        return Outcome.failure(err)
    except Exception:
        _log.exception("authentication task failed unexpectedly")
        return Outcome.failure(internal_error(AUTH_TASK_TYPE, None))
    return Outcome({"taskType": AUTH_TASK_TYPE, "connectionSessionUUID": str(uuid.uuid4())})


async def ping(raw: dict[str, Any], base_url: str) -> Outcome:
    return Outcome({"taskType": "ping", "pong": True})


class ResponseLookup:
    """``getResponse``: a kept outcome by taskUUID, or ``processing`` while the task runs."""

    def __init__(self, registry: TaskRegistry):
        self.registry = registry

    async def __call__(self, raw: dict[str, Any], base_url: str) -> Outcome:
        task_uuid = require_task_uuid(raw)
        outcome = self.registry.lookup(task_uuid)
        if outcome is None:
            return Outcome({"taskType": RESPONSE_TASK_TYPE, "taskUUID": task_uuid, "status": "processing"})
        return outcome.with_status()
