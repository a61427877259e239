"""``llava-edge serve``: the Runware API (REST and WebSocket) in front of one loaded model.

``create_app(captioner, settings)`` builds a FastAPI app with no module globals:

* ``POST /v1`` (and ``/``): a JSON array of tasks -> ``{"data": [...]}`` / ``{"errors": [...]}``; the HTTP
  status is chosen by the TYPE of the error (``status_for``), never by its text.
* WebSocket ``/v1`` (and ``/``): authentication handshake, ping/pong, task arrays, one frame per answer.
* ``GET /images/<uuid>.<ext>`` and ``GET /health``: ``resources.py``; ``GET /metrics``: ``metrics/``.
* Unknown routes and wrong methods: in the shape of the API the path belongs to (``families.py``).

Task semantics live in ``tasks.py``; this module is transport only. Needs the ``server`` extra.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

try:
    import prometheus_client  # noqa: F401  (GET /metrics: metrics/)
    import uvicorn
    from fastapi import FastAPI, Request, WebSocket
    from fastapi.responses import Response
    from starlette.datastructures import URL
    from starlette.websockets import WebSocketDisconnect
except ImportError as err:  # pragma: no cover - exercised without the extra installed
    from llava_edge.errors import MissingExtraError

    raise MissingExtraError(
        f"The llava-edge server needs FastAPI, uvicorn, websockets and prometheus-client ({err.name} is missing). "
        'Install them with: pip install "llava-edge[server]"'
    ) from err

from llava_edge._version import __version__
from llava_edge.errors import (
    AuthenticationError,
    InvalidRequestError,
    LlavaEdgeError,
)
from llava_edge.schema import task_identity
from llava_edge.server.auth import bearer_key, first_task
from llava_edge.server.bodies import check_size, read_up_to, too_large
from llava_edge.server.chat import request_client
from llava_edge.server.connections import guarded_protocol
from llava_edge.server.families import add_route_errors
from llava_edge.server.guard import RequestGuard
from llava_edge.server.metrics.scrape import RequestMetrics, add_metrics_route
from llava_edge.server.metrics.server_metrics import ServerMetrics
from llava_edge.server.ollama_api import add_ollama_routes
from llava_edge.server.ollama_pull import add_pull_routes
from llava_edge.server.openai_api import add_openai_routes
from llava_edge.server.openapi import REST_DESCRIPTION, REST_OPENAPI, REST_RESPONSES
from llava_edge.server.page import add_page_routes
from llava_edge.server.read_policy import client_key
from llava_edge.server.request_log import RefusalLog, note_refusal, show_server_logs
from llava_edge.server.resources import add_resources
from llava_edge.server.responses_api import add_responses_routes
from llava_edge.server.settings import AUTH_TASK_TYPE, ServerSettings
from llava_edge.server.shutdown import DrainingServer, signals_absorbed
from llava_edge.server.statuses import retry_headers, status_for
from llava_edge.server.task_results import Outcome
from llava_edge.server.task_service import TaskService
from llava_edge.server.work_options import BACKGROUND, header_priority

if TYPE_CHECKING:
    from llava_edge.api import Captioner

_log = logging.getLogger("llava_edge.server.app")
UNAUTHENTICATED_WS_S = 10.0
"""Seconds a WebSocket gets to authenticate before it is closed."""


def create_app(captioner: Captioner, settings: ServerSettings | None = None) -> FastAPI:
    """The Runware-compatible app for one loaded ``Captioner``. The model worker starts with the app."""
    settings = settings or ServerSettings()
    service = TaskService(captioner, settings)
    metrics = ServerMetrics(service.resident, service.queue_depths)
    service.resident.observer = metrics.model

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        yield
        await asyncio.to_thread(service.stop)  # bounded: shutdown_timeout + delivery_flush_timeout

    app = FastAPI(title="llava-edge", version=__version__, description=REST_DESCRIPTION, lifespan=lifespan)
    app.state.service, app.state.metrics = service, metrics
    app.add_middleware(RequestGuard, settings=settings)
    app.add_middleware(RefusalLog)  # outside the guard: it sees the guard's refusals too
    app.add_middleware(RequestMetrics, metrics=metrics)  # outermost: it counts every answer
    _add_rest(app, service, metrics)
    _add_websocket(app, service, metrics)
    add_resources(app, service)
    add_metrics_route(app, service, metrics)
    add_route_errors(app)
    add_openai_routes(app, service)
    add_responses_routes(app, service)
    add_page_routes(app, service)  # before Ollama's: browsers get the page at /, other clients Ollama's line
    add_ollama_routes(app, service)
    add_pull_routes(app, service)
    return app


def uvicorn_config(app: FastAPI, settings: ServerSettings, *, log_level: str = "info") -> uvicorn.Config:
    """The uvicorn configuration that enforces the settings' frame size and connection limits (requests in
    progress are capped by ``RequestGuard``, idle sockets by ``guarded_protocol``). Open requests get as long
    as the drain to be answered when the server stops."""
    return uvicorn.Config(
        app, host=settings.host, port=settings.port, ws_max_size=settings.max_body_bytes,
        http=guarded_protocol(settings), log_level=log_level,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout) + 1,
    )


def run_server(captioner: Captioner, settings: ServerSettings) -> bool:
    """Serve until SIGTERM or Ctrl-C, then shut down gracefully and return (no signal is re-raised).

    The first signal stops accepting connections and new captions; the accepted captions get
    ``settings.shutdown_timeout`` seconds to finish (the rest are failed and reported to their webhooks),
    then pending deliveries get ``settings.delivery_flush_timeout`` seconds. A second signal stops waiting.

    Returns:
        True when the model is idle, so the captioner may be closed; False when a caption still runs
        in it past the deadline.

    Raises:
        ServerConfigError: unsafe settings (checked before binding).
    """
    settings.check()
    show_server_logs()
    app = create_app(captioner, settings)
    service: TaskService = app.state.service
    server = DrainingServer(uvicorn_config(app, settings), service)
    with signals_absorbed():
        server.run()
    return service.model_idle


# -- REST -----------------------------------------------------------------------------------------


def _add_rest(app: FastAPI, service: TaskService, metrics: ServerMetrics) -> None:
    async def post_tasks(request: Request) -> Response:
        try:
            body = await _read_authenticated_body(request, service)
            tasks = _without_auth_task(parse_task_array(body, service.settings))
        except LlavaEdgeError as err:
            return _envelope([Outcome.failure(err)])
        base_url, client = _http_base(request.base_url), _client(request)
        reader, background = request_client(request), header_priority(request.headers) == BACKGROUND
        outcomes = await asyncio.gather(*(_answer(service, task, base_url, client, reader, background)
                                          for task in tasks))
        for task, outcome in zip(tasks, outcomes, strict=True):
            metrics.task("rest", task_identity(task)[0], outcome.ok)
        return _envelope(list(outcomes))

    options: dict[str, Any] = {"methods": ["POST"], "responses": REST_RESPONSES, "openapi_extra": REST_OPENAPI}
    app.add_api_route("/v1", post_tasks, summary="Run Runware tasks", **options)
    app.add_api_route("/", post_tasks, include_in_schema=False, **options)


async def _answer(service: TaskService, task: Any, base_url: str, client: str, reader: str,
                  background: bool) -> Outcome:
    """One task of a REST request: ``client`` is the address (the authentication brake's key), ``reader`` the
    client whose turn its image fetches take (``read_policy.client_key``); ``background``: its header asks for
    background priority."""
    if task_identity(task)[0] == AUTH_TASK_TYPE:
        return service.authenticate(task, client)
    return await service.run(task, base_url=base_url, client=reader, background=background)


def _client(request: Request | WebSocket) -> str:
    """The client's address, the key of the failed-authentication brake."""
    return request.client.host if request.client else ""


async def _read_authenticated_body(request: Request, service: TaskService) -> bytes:
    """The body, read only as far as needed to check the key before the rest: the ``Authorization`` header
    is checked before any byte; else the first task of at most ``preauth_body_bytes`` must authenticate."""
    settings, client = service.settings, _client(request)
    if request.headers.get("content-length", "").isdigit():
        check_size(int(request.headers["content-length"]), settings.max_body_bytes)
    chunks = request.stream().__aiter__()
    key = bearer_key(request.headers.get("authorization", ""))
    if settings.api_key is None or key is not None:
        service.auth.verify(client, key)
        return await read_up_to(chunks, b"", settings.max_body_bytes, limit_is_error=True)
    prefix = await read_up_to(chunks, b"", settings.preauth_body_bytes, limit_is_error=False)
    first = first_task(prefix)
    service.auth.verify(client, first.get("apiKey") if task_identity(first)[0] == AUTH_TASK_TYPE else None)
    return await read_up_to(chunks, prefix, settings.max_body_bytes, limit_is_error=True)




def _without_auth_task(tasks: list[Any]) -> list[Any]:
    """The tasks after a leading authentication task (already checked with the body's first bytes)."""
    return tasks[1:] if task_identity(tasks[0])[0] == AUTH_TASK_TYPE else tasks


def _envelope(outcomes: list[Outcome]) -> Response:
    """``data`` and/or ``errors``: 200 when any task succeeded (or none was sent), else the first error's status."""
    data = [outcome.item for outcome in outcomes if outcome.ok]
    failures = [outcome for outcome in outcomes if not outcome.ok]
    body: dict[str, Any] = {}
    if data or not failures:
        body["data"] = data
    if failures:
        body["errors"] = [outcome.item for outcome in failures]
    status = 200 if data or not failures else status_for(failures[0].error)  # type: ignore[arg-type]
    headers = retry_headers(status)
    if failures:
        note_refusal(failures[0].item.get("code"), str(failures[0].item.get("message", "")))
    # json.dumps escapes to ASCII: a lone surrogate echoed from a request (valid JSON) cannot break UTF-8 encoding
    return Response(json.dumps(body), status_code=status, headers=headers, media_type="application/json")


def parse_task_array(body: bytes | str, settings: ServerSettings) -> list[Any]:
    """The tasks of a request body or WebSocket frame: a JSON array (a single object is tolerated).

    Raises:
        InvalidRequestError: not JSON, not an array of tasks, empty, or too many tasks.
        PayloadTooLargeError: over the size cap.
    """
    if len(body) > settings.max_body_bytes:
        raise too_large(len(body), settings.max_body_bytes)
    try:
        tasks = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidRequestError(f"The body is not valid JSON: {err}.", code="invalidJson", parameter="body") from err
    except RecursionError:
        raise InvalidRequestError("The body nests JSON too deeply; send a flat array of task objects.",
                                  code="invalidJson", parameter="body") from None
    tasks = [tasks] if isinstance(tasks, dict) else tasks
    if not isinstance(tasks, list) or not tasks:
        raise InvalidRequestError("Send a non-empty JSON array of tasks: [{\"taskType\": ...}, ...].",
                                  code="invalidRequest", parameter="body")
    if len(tasks) > settings.max_tasks_per_request:
        raise InvalidRequestError(f"{len(tasks)} tasks in one request; the limit is "
                                  f"{settings.max_tasks_per_request}.", code="invalidRequest", parameter="body")
    return tasks


def _http_base(base: URL) -> str:
    """The server's http(s) root URL as the client reached it (also from a WebSocket's ws/wss URL)."""
    scheme = {"ws": "http", "wss": "https"}.get(base.scheme, base.scheme)
    return str(base.replace(scheme=scheme))


# -- WebSocket ------------------------------------------------------------------------------------


def _add_websocket(app: FastAPI, service: TaskService, metrics: ServerMetrics) -> None:
    async def websocket_tasks(websocket: WebSocket) -> None:
        await websocket.accept()
        await _Connection(websocket, service, metrics).serve()

    for path in ("/v1", "/v1/", "/"):
        app.add_api_websocket_route(path, websocket_tasks)


class _Connection:
    """One WebSocket client: it must authenticate first, within ``UNAUTHENTICATED_WS_S`` seconds and with
    small frames; its tasks run concurrently (at most ``ws_max_in_flight``: further frames wait), each
    answered in its own frame as soon as it is done."""

    def __init__(self, websocket: WebSocket, service: TaskService, metrics: ServerMetrics):
        self.websocket = websocket
        self.service = service
        self.metrics = metrics
        self.base_url = _http_base(websocket.base_url)
        self.authenticated = False
        self.client = client_key(connection=uuid.uuid4().hex)
        """This connection, as the client its image fetches count for."""
        self.background = header_priority(websocket.headers) == BACKGROUND
        """Its upgrade request's header asked for background priority for all its tasks."""
        self._send_lock = asyncio.Lock()
        self._running: set[asyncio.Task[None]] = set()
        self._unanswered: set[str] = set()
        """taskUUIDs of this client's tasks not answered yet."""

    async def serve(self) -> None:
        try:
            while (frame := await self._receive()) is not None:
                await self._handle(frame)
        except WebSocketDisconnect:
            pass
        finally:
            for task in self._running:
                task.cancel()
            for task_uuid in self._unanswered:  # nobody waits for these any more: stop the sync ones
                self.service.abandon(task_uuid)

    async def _receive(self) -> str | bytes | None:
        settings = self.service.settings
        timeout = settings.ws_idle_timeout if self.authenticated else min(settings.ws_idle_timeout,
                                                                           UNAUTHENTICATED_WS_S)
        try:
            message = await asyncio.wait_for(self.websocket.receive(), timeout)
        except TimeoutError:
            await self.websocket.close(code=1000, reason="idle timeout")
            return None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        return message.get("text") or message.get("bytes") or ""

    async def _handle(self, frame: str | bytes) -> None:
        settings = self.service.settings
        if not self.authenticated and settings.api_key and len(frame) > settings.preauth_body_bytes:
            await self.websocket.close(code=1009, reason="authenticate first, in a small frame")
            raise WebSocketDisconnect(1009)
        try:
            tasks = parse_task_array(frame, self.service.settings)
        except LlavaEdgeError as err:
            await self._send(Outcome.failure(err))
            return
        for raw in tasks:
            task_type, task_uuid = task_identity(raw)
            if task_type == AUTH_TASK_TYPE:
                outcome = self.service.authenticate(raw, _client(self.websocket))
                self.authenticated = outcome.ok
                await self._answered(task_type, outcome)
            elif task_type == "ping" or self.authenticated:
                await self._room_for_one_more()
                self._start(raw)
            else:
                await self._answered(task_type, Outcome.failure(AuthenticationError(
                    "Authenticate first: send [{\"taskType\": \"authentication\", \"apiKey\": ...}].",
                    code="missingApiKey", task_type=task_type, task_uuid=task_uuid)))

    async def _room_for_one_more(self) -> None:
        """Backpressure: wait (reading no further frames) while this client has its maximum in flight."""
        while len(self._running) >= self.service.settings.ws_max_in_flight:
            await asyncio.wait(set(self._running), return_when=asyncio.FIRST_COMPLETED)

    def _start(self, raw: Any) -> None:
        task = asyncio.create_task(self._run(raw))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, raw: Any) -> None:
        task_uuid = task_identity(raw)[1]
        if task_uuid:
            self._unanswered.add(task_uuid)
        try:
            outcome = await self.service.run(raw, base_url=self.base_url, client=self.client,
                                             background=self.background)
        finally:
            self._unanswered.discard(task_uuid or "")
        try:
            await self._answered(task_identity(raw)[0], outcome)
        except Exception:
            _log.info("client left before task %s was answered", task_identity(raw)[1])

    async def _answered(self, task_type: str | None, outcome: Outcome) -> None:
        """Send a task's answer, counted (``llava_edge_runware_tasks``) whether or not the client still hears it."""
        self.metrics.task("websocket", task_type, outcome.ok)
        await self._send(outcome)

    async def _send(self, outcome: Outcome) -> None:
        async with self._send_lock:
            await self.websocket.send_text(json.dumps(outcome.frame()))

