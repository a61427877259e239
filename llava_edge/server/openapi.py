"""OpenAPI documentation of the REST endpoint (data only: descriptions, schemas and examples).

The body is read and validated by hand (size cap first, then per-task errors), so FastAPI cannot
infer it; these fragments describe it for ``/docs`` and ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any

REST_DESCRIPTION = """\
A local server that speaks the Runware API for image captioning with LLaVA-1.6-Mistral-7B.

POST a JSON **array** of tasks to `/v1`; authenticate with `Authorization: Bearer <key>` or an
`{"taskType": "authentication", "apiKey": ...}` object first in the array. Task types: `caption`,
`imageCaption` (legacy), `imageUpload`, `getResponse`, `ping`. The same tasks work over a WebSocket
at `/v1` (authentication task first, one answer frame per task).

Errors are per task: answers come back in `data`, failures in `errors`. The status is 200 when any
task succeeded; otherwise it follows the first error: 400 invalid request, 401 API key, 404 unknown or
expired task, 409 `conflictTaskUUID`, 413 body too large, 503 queue full (`serviceUnavailable`).
"""

_EXAMPLE_UUID = "23c7f549-0b89-4f39-80bb-d0e68af66dc5"

_TASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["taskType"],
    "properties": {
        "taskType": {"type": "string", "enum": ["authentication", "caption", "imageCaption", "imageUpload",
                                                 "getResponse", "ping"]},
        "taskUUID": {"type": "string", "format": "uuid", "description": "UUID v4, unique per task."},
        "model": {"type": "string", "example": "runware:150@2"},
        "prompt": {"type": "string", "maxLength": 3000},
        "inputs": {"type": "object", "properties": {"image": {
            "type": "string", "description": "Data URI, base64, http(s) URL or the UUID of an uploaded image."}}},
        "inputImage": {"type": "string", "description": "Legacy imageCaption field."},
        "image": {"type": "string", "description": "imageUpload: data URI, base64 or URL."},
        "deliveryMethod": {"type": "string", "enum": ["sync", "async"], "default": "sync"},
        "includeCost": {"type": "boolean", "default": False},
        "webhookURL": {"type": "string", "format": "uri"},
        "uploadEndpoint": {"type": "string", "format": "uri"},
        "ttl": {"type": "integer", "minimum": 60, "description": "Seconds the result is kept for getResponse."},
        "apiKey": {"type": "string", "description": "authentication task only."},
    },
    "additionalProperties": True,
}

REST_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {
            "schema": {"type": "array", "minItems": 1, "items": _TASK_SCHEMA},
            "example": [{"taskType": "caption", "taskUUID": _EXAMPLE_UUID, "model": "runware:150@2",
                         "inputs": {"image": "data:image/png;base64,iVBORw0KGgo..."}, "includeCost": True}],
        }},
    }
}


def _envelope_example(key: str, item: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"example": {key: [item]}}}}


def _error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "message": message, **extra}


REST_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "At least one task succeeded (failed ones are listed in `errors`).",
          **_envelope_example("data", {"taskType": "imageCaption", "taskUUID": _EXAMPLE_UUID,
                                       "text": "A red bicycle leaning on a wall.", "cost": 0.0019})},
    400: {"description": "Invalid request or task.",
          **_envelope_example("errors", _error("invalidInputsImage", "The image is corrupt or truncated.",
                                               parameter="inputs.image", taskType="caption",
                                               taskUUID=_EXAMPLE_UUID))},
    401: {"description": "Missing or wrong API key.",
          **_envelope_example("errors", _error("invalidApiKey", "Invalid API key.", parameter="apiKey",
                                               taskType="authentication"))},
    404: {"description": "getResponse for an unknown or expired task.",
          **_envelope_example("errors", _error("taskFailedOrNotFound", "No task is kept under this UUID.",
                                               taskType="getResponse", taskUUID=_EXAMPLE_UUID))},
    409: {"description": "taskUUID reused while its task is live.",
          **_envelope_example("errors", _error("conflictTaskUUID", "taskUUID is already in use.",
                                               parameter="taskUUID", taskUUID=_EXAMPLE_UUID))},
    413: {"description": "Body over the size cap.",
          **_envelope_example("errors", _error("payloadTooLarge", "The request is too large."))},
    503: {"description": "The caption queue is full; retry after `Retry-After` seconds.",
          **_envelope_example("errors", _error("serviceUnavailable", "The server is busy."))},
}
