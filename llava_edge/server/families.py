"""Which API a path belongs to, and errors in that API's own shape, unknown routes and wrong methods included.

* ``/api/...``: Ollama, ``{"error": "..."}``;
* ``/v1/...`` (not the Runware ``/v1`` itself): OpenAI, ``{"error": {"message", "type", "param", "code"}}``;
* everything else (``POST /v1``, ``/``, ``/images``, ``/health``): Runware, ``{"errors": [{"code", "message"}]}``.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import Match

from llava_edge.server.conversation import quoted
from llava_edge.server.request_log import note_refusal
from llava_edge.server.statuses import retry_headers

Family = Literal["ollama", "openai", "runware"]
OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                429: "rate_limit_error", 501: "not_implemented", 503: "service_unavailable"}
"""OpenAI's error ``type`` by status, where it has one of its own (``openai_type``)."""


def openai_type(status: int) -> str:
    """OpenAI's error ``type`` for a status: its own, else ``invalid_request_error`` (4xx) or ``server_error``."""
    return OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")


def api_family(path: str) -> Family:
    """The API a request path belongs to (see the module docstring)."""
    if path.startswith("/api/"):
        return "ollama"
    if path.startswith("/v1/") and path != "/v1/":
        return "openai"
    return "runware"


def error_body(path: str, status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """An error in the shape of the API ``path`` belongs to."""
    family = api_family(path)
    if family == "ollama":
        return {"error": message}
    if family == "openai":
        return {"error": {"message": message, "type": openai_type(status),
                          "param": param, "code": code}}
    item = {"code": code, "message": message}
    return {"errors": [item if param is None else {**item, "parameter": param}]}


def error_response(path: str, status: int, code: str, message: str, param: str | None = None) -> JSONResponse:
    """``error_body`` as a response with its status (``Retry-After`` on 429 and 503), noted for the log."""
    note_refusal(code, message)
    return JSONResponse(error_body(path, status, code, message, param), status_code=status,
                        headers=retry_headers(status))


def add_route_errors(app: FastAPI) -> None:
    """Answer unknown routes (404) and wrong methods (405) in the shape of the API the path belongs to,
    instead of the framework's ``{"detail": ...}``."""

    async def http_error(request: Request, error: Exception) -> Response:
        status = error.status_code if isinstance(error, HTTPException) else 500
        code, message = _route_error(request, status)
        response = error_response(request.url.path, status, code, message)
        if isinstance(error, HTTPException) and error.headers:
            response.headers.update(error.headers)  # Allow, on a 405
        return response

    app.add_exception_handler(HTTPException, http_error)


def _route_error(request: Request, status: int) -> tuple[str, str]:
    path = quoted(request.url.path)
    family = api_family(request.url.path)
    if status == 404:
        hint = {"ollama": "Ollama's routes here are /api/generate, /api/chat, /api/tags, /api/show, /api/ps, "
                          "/api/pull and /api/version.",
                "openai": "OpenAI's routes here are /v1/chat/completions and /v1/models.",
                "runware": "Runware tasks go to POST /v1 (or the WebSocket at /v1)."}[family]
        code = {"ollama": "not_found", "openai": "unknown_url", "runware": "notFound"}[family]
        return code, f"No route {path} on this server. {hint}"
    if status == 405:
        code = "methodNotAllowed" if family == "runware" else "method_not_allowed"
        return code, f"{request.method} is not allowed on {path}; use {_allowed(request)}."
    return ("httpError" if family == "runware" else "http_error"), f"HTTP {status} on {path}."


def _allowed(request: Request) -> str:
    """The methods the routes at this path accept."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if route.matches(request.scope)[0] is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return " or ".join(sorted(methods - {"HEAD"})) or "another method"
