"""The server's front door, before any route runs: ``Host`` and ``Origin`` checks (no DNS rebinding, no web
page driving the server), the content type of Runware POSTs, and a cap on requests in progress.

Threat model: the server listens on the operator's machine or LAN. A web page the operator visits can
make the browser send requests to it: "simple" cross-origin POSTs (``text/plain``, no preflight), WebSocket
upgrades from any origin, and, through a DNS-rebinding name, same-origin requests with a foreign ``Host``.
Browsers always send ``Origin`` on those requests and the ``Host`` they think they reach; native clients
(the Runware SDKs, curl, Ollama and OpenAI clients) send no ``Origin``. So: a request with an ``Origin`` is
refused unless that origin is the server's own (its page) or listed with ``--allow-origin``; a ``Host``
that is not an IP literal, ``localhost``/``*.localhost`` or a listed name is refused; Runware POSTs must be
``application/json``, which a page cannot send cross-origin without a preflight we never answer.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from llava_edge.server.conversation import quoted
from llava_edge.server.families import error_body
from llava_edge.server.request_log import note_refusal
from llava_edge.server.settings import ServerSettings, is_loopback

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

RUNWARE_POST_PATHS = frozenset({"/v1", "/v1/", "/"})
"""Routes of the Runware REST API, whose POST bodies must be ``application/json``."""
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class Refusal(Exception):
    """Why a request is turned away at the door: an HTTP status, a Runware error code and a message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class RequestGuard:
    """ASGI middleware that refuses, before the app sees them, requests with a foreign ``Host`` or
    ``Origin``, Runware POSTs that are not JSON, and requests beyond ``max_connections`` in progress."""

    def __init__(self, app: ASGIApp, settings: ServerSettings):
        self.app = app
        self.settings = settings
        self.hosts = HostPolicy(settings)
        self.in_progress = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            self._check(scope)
        except Refusal as refusal:
            await _refuse(scope, send, refusal)
            return
        self.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1

    def _check(self, scope: Scope) -> None:
        headers = _headers(scope)
        host = headers.get("host", "")
        self.hosts.check(host)
        check_origin(headers.get("origin"), scope, host, self.settings.allow_origins)
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in RUNWARE_POST_PATHS:
            check_json_content_type(headers.get("content-type", ""))
        if self.in_progress >= self.settings.max_connections:
            raise Refusal(503, "serviceUnavailable",
                          f"The server is handling {self.settings.max_connections} requests already; retry shortly.")


class HostPolicy:
    """Which ``Host`` header values the server answers (see the module docstring)."""

    def __init__(self, settings: ServerSettings):
        self.allowed = {name.lower() for name in settings.allow_hosts}
        self.lan = not is_loopback(settings.host)
        if self.lan:
            self.allowed |= {socket.gethostname().lower(), socket.getfqdn().lower()}

    def check(self, host_header: str) -> None:
        """Raise ``Refusal`` (403) unless the host in ``host_header`` (port ignored) may be answered."""
        name = _host_name(host_header)
        if name is None or self._allowed(name):
            return
        raise Refusal(403, "invalidHost",
                      f"Host {quoted(name)} is not served here. Reach the server by its IP address or localhost, or "
                      f"have the operator allow the name with --allow-host {quoted(name)}.")

    def _allowed(self, name: str) -> bool:
        if _is_ip(name) or name == "localhost" or name.endswith(".localhost") or name in self.allowed:
            return True
        return self.lan and name.endswith((".local", ".internal"))


def check_origin(origin: str | None, scope: Scope, host_header: str, allowed: frozenset[str]) -> None:
    """Raise ``Refusal`` (403) for an ``Origin`` that is neither this server's own nor listed."""
    if origin is None:
        return  # not a browser request
    if origin != "null" and (_same_origin(origin, scope, host_header) or _origin_key(origin) in _keys(allowed)):
        return
    raise Refusal(403, "invalidOrigin",
                  f"Requests from the web page at {quoted(origin)} are refused. If you trust that page, the "
                  f"operator can allow it with --allow-origin {quoted(origin)}.")


def check_json_content_type(content_type: str) -> None:
    """Raise ``Refusal`` (415) unless the body is declared as ``application/json``."""
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise Refusal(415, "unsupportedMediaType",
                      "Send the tasks as a JSON array with 'Content-Type: application/json'.")


def _same_origin(origin: str, scope: Scope, host_header: str) -> bool:
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    return _origin_key(origin) == _origin_key(f"{scheme}://{host_header}")


def _origin_key(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the scheme's default port filled in; None when it is not an origin."""
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    return parts.scheme, parts.hostname, port


def _keys(origins: frozenset[str]) -> set[tuple[str, str, int] | None]:
    return {_origin_key(origin) for origin in origins}


def _host_name(host_header: str) -> str | None:
    """The name in a ``Host`` header, lower case, without port or IPv6 brackets; None when absent."""
    text = host_header.strip().lower()
    if not text:
        return None
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _headers(scope: Scope) -> dict[str, str]:
    return {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", [])}


async def _refuse(scope: Scope, send: Send, refusal: Refusal) -> None:
    note_refusal(refusal.code, refusal.message)
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": refusal.code})  # answered 403 by uvicorn
        return
    body = json.dumps(error_body(scope["path"], refusal.status, refusal.code, refusal.message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if refusal.status == 503:
        headers.append((b"retry-after", b"2"))
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

