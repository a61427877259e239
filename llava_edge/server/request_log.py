"""What the operator sees in the server's log: one line per refused request, saying why.

``RefusalLog`` (ASGI middleware, outermost) watches each answer's status. The error responders note the
code and message of the error they answer with (``note_refusal``, through a per-request context
variable), so a 4xx or 5xx is logged as::

    INFO: llava_edge.server.requests: refused POST /v1/chat/completions: 400 invalid_value "temperature must ..."

with the route's template (``/images/{name}``), never the raw path, and the message as a JSON string (client
text inside it is already quoted and cut by the message's author). Refusals at the front door (Host, Origin,
too many requests) and WebSocket upgrades closed before acceptance are logged the same way.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from starlette.routing import Match

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_log = logging.getLogger("llava_edge.server.requests")
UNKNOWN_ROUTE = "(unknown route)"
"""``route_template`` of a request no route matches."""
MESSAGE_CHARS = 300
"""A logged message is cut to this many characters (messages quote client text cut to 80 already)."""


@dataclass
class _Refusal:
    code: str = "-"
    message: str = ""


_current: ContextVar[_Refusal | None] = ContextVar("llava_edge_refusal", default=None)


def note_refusal(code: str | None, message: str) -> None:
    """Record the error the current request is answered with, for its log line (no effect outside one)."""
    refusal = _current.get()
    if refusal is not None:
        refusal.code, refusal.message = code or "-", message


class RefusalLog:
    """Log every request answered with a status of 400 or more (see the module docstring)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = _Refusal()
        token = _current.set(refusal)
        answered = False

        async def watched(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and message["status"] >= 400:
                _log_refusal(scope, int(message["status"]), refusal)
            elif message["type"] == "websocket.close" and not answered:  # uvicorn answers the upgrade 403
                _log_refusal(scope, 403, refusal if refusal.message else _Refusal(str(message.get("reason") or "-")))
            answered = answered or message["type"] in ("websocket.accept", "http.response.start")
            await send(message)  # logged before the client hears: the line is there once it has its answer

        try:
            await self.app(scope, receive, watched)
        finally:
            _current.reset(token)


def _log_refusal(scope: Scope, status: int, refusal: _Refusal) -> None:
    _log.info("refused %s %s: %d %s %s", scope.get("method", "WEBSOCKET"), route_template(scope), status,
                 refusal.code, json.dumps(refusal.message[:MESSAGE_CHARS]))


def route_template(scope: Scope) -> str:
    """The template of the route a request reached (``/images/{name}``); for a request the router has not
    matched yet (refused at the door), the first route that would match; ``UNKNOWN_ROUTE`` for none."""
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return str(route.path)
    app: Any = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", []):
        if candidate.matches(scope)[0] is not Match.NONE:
            return str(candidate.path)
    return UNKNOWN_ROUTE


def show_server_logs(level: int = logging.INFO) -> None:
    """Print llava-edge's own log lines (refusals, model loads and swaps, deliveries) to stderr at ``level``,
    as ``serve`` does; where the embedding program has set up logging, its handlers are used instead."""
    logger = logging.getLogger("llava_edge")
    logger.setLevel(level)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)


class _Stderr(logging.Handler):
    """Writes to ``sys.stderr`` as it is when a line is logged (a test runner may swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)
