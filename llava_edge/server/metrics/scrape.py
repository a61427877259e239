"""The HTTP side of the metrics: ``RequestMetrics`` counts every HTTP request by route template, API family and
status (refusals at the door and unknown routes included), and ``GET /metrics`` answers the Prometheus text
format, behind the same Host/Origin checks and the same key as the other routes. A scrape reads state only: it
never loads the model nor restarts its keep-alive."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from llava_edge.errors import LlavaEdgeError
from llava_edge.server.chat import authenticate_request
from llava_edge.server.families import api_family, error_response
from llava_edge.server.page import wants_html
from llava_edge.server.request_log import UNKNOWN_ROUTE, ASGIApp, Message, Receive, Scope, Send, route_template
from llava_edge.server.statuses import status_for

if TYPE_CHECKING:
    from llava_edge.server.metrics.server_metrics import ServerMetrics
    from llava_edge.server.task_service import TaskService

UNMATCHED = "unmatched"
"""The route label of a request no route matched (its path is never a label)."""
OTHER_ROUTES = frozenset({"/health", "/metrics", "/images/{name}", "/openapi.json", "/docs", "/docs/oauth2-redirect",
                          "/redoc"})
"""Routes that belong to no client API: their family label is ``other``."""


class RequestMetrics:
    """ASGI middleware (outermost) that counts each HTTP request once its answer is over; an error that reached
    no answer counts as the 500 the framework then sends."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began, status = time.perf_counter(), 500

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            route, api = route_labels(scope)
            self.metrics.request(route, api, status, time.perf_counter() - began)


def route_labels(scope: Scope) -> tuple[str, str]:
    """(route template, API family) of a request: ``runware``, ``openai``, ``ollama``, ``page`` or ``other``. An
    unmatched request is ``unmatched``, in the family whose error shape answered it."""
    template = route_template(scope)
    if template == UNKNOWN_ROUTE:
        return UNMATCHED, api_family(str(scope.get("path", "")))
    if template in OTHER_ROUTES:
        return template, "other"
    if template.startswith("/page/"):
        return template, "page"
    if template == "/" and scope.get("method") in ("GET", "HEAD"):  # the page for browsers, else Ollama's line
        return template, "page" if scope.get("method") == "GET" and wants_html(scope) else "ollama"
    return template, api_family(template)


def add_metrics_route(app: FastAPI, service: TaskService, metrics: ServerMetrics) -> None:
    """Register ``GET /metrics``: the key (``Authorization: Bearer``) is required when the server has one; a
    missing or wrong key is answered like the other plain routes, in the Runware error envelope."""

    async def scrape(request: Request) -> Response:
        try:
            authenticate_request(request, service)
        except LlavaEdgeError as err:
            return error_response(request.url.path, status_for(err), err.code, err.message)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", scrape, methods=["GET"], include_in_schema=False)
