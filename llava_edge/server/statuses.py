"""The one table from error types to HTTP statuses, for every API the server speaks.

A status is chosen by the TYPE of an error (the nearest class in its MRO that the table names), never by its
text. The APIs agree on every row but one: a model that is not on this machine is Runware's ``invalidModel``
(400: the task named a bad value), and a 404 on the OpenAI and Ollama routes, as their own servers answer.
"""

from __future__ import annotations

from typing import Literal

from llava_edge.errors import (
    AuthenticationError,
    ConflictTaskUUIDError,
    GenerationTimeoutError,
    ImageStoreError,
    InvalidRequestError,
    ModelNotCachedError,
    PayloadTooLargeError,
    RuntimeBackendError,
    ServerBusyError,
    StructuredOutputError,
    TaskNotFoundError,
    TooManyAttemptsError,
    UnknownModelError,
)

Api = Literal["runware", "openai", "ollama"]

_STATUS: dict[type[BaseException], int] = {
    TooManyAttemptsError: 429,
    AuthenticationError: 401,
    TaskNotFoundError: 404,
    ConflictTaskUUIDError: 409,
    PayloadTooLargeError: 413,
    InvalidRequestError: 400,
    UnknownModelError: 400,
    ModelNotCachedError: 503,
    ServerBusyError: 503,
    ImageStoreError: 507,
    RuntimeBackendError: 500,
    StructuredOutputError: 400,
    GenerationTimeoutError: 504,
}
_CHAT_STATUS: dict[type[BaseException], int] = {UnknownModelError: 404}
_BY_API: dict[Api, dict[type[BaseException], int]] = {"runware": {}, "openai": _CHAT_STATUS, "ollama": _CHAT_STATUS}
RETRY_AFTER_S = {429: "60", 503: "2"}
"""``Retry-After`` of the statuses that ask a client to come back."""


def status_for(error: BaseException, api: Api = "runware") -> int:
    """The HTTP status ``api`` answers ``error`` with (500 for anything the table does not name)."""
    overrides = _BY_API[api]
    for cls in type(error).__mro__:
        if cls in overrides:
            return overrides[cls]
        if cls in _STATUS:
            return _STATUS[cls]
    return 500


def retry_headers(status: int) -> dict[str, str] | None:
    """The ``Retry-After`` header for a 429 or 503, else None."""
    return {"Retry-After": RETRY_AFTER_S[status]} if status in RETRY_AFTER_S else None
