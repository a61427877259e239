"""``POST /api/pull``: download a registry variant as Ollama clients ask for it, and ``/api/embed``,
``/api/embeddings``, which this model cannot answer.

The name is an Ollama tag (``llava:7b-v1.6-mistral-q4_K_M``), a variant id or alias; a name that is already
installed (the generic ``llava:7b`` among them) answers ``success`` at once. Downloads go through the
registry's pinned, verified and resumable hub path (``models/download.py``): only the registry's hub
endpoint is contacted, never a host named in the request. Progress streams as Ollama's objects
(``pulling manifest``, ``downloading`` with ``digest``/``total``/``completed``, ``verifying sha256 digest``,
``success``); ``stream: false`` answers the last one only.

Refused under ``--offline`` and ``--no-fetch`` (the operator downloads with ``llava-edge pull``), and on a
non-loopback bind without a key unless the server was started with ``--allow-pull``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from llava_edge.errors import InvalidRequestError, LlavaEdgeError, UnknownModelError
from llava_edge.models.catalog import ModelSpec, load_registry
from llava_edge.models.download import FileProgress, download_model, is_offline
from llava_edge.models.ollama_names import ollama_tag, variant_named
from llava_edge.models.synthetic import NAME_PREFIX
from llava_edge.server.bodies import read_json_object
from llava_edge.server.chat import authenticate_request
from llava_edge.server.conversation import quoted
from llava_edge.server.families import error_response
from llava_edge.server.model_listing import name_table
from llava_edge.server.public_errors import for_client
from llava_edge.server.settings import is_loopback
from llava_edge.server.statuses import status_for
from llava_edge.server.task_service import TaskService

_log = logging.getLogger("llava_edge.server.ollama_pull")
PULL_BODY_BYTES = 64 * 1024
"""A pull request names a model: its body is never bigger than this."""
PROGRESS_STEP_BYTES = 4 * 2**20
"""A ``downloading`` object is sent each time this many more bytes have arrived (and at the end)."""


class PullRefused(LlavaEdgeError):
    """This server does not download models (its settings say so), or not for this client."""

    def __init__(self, message: str, *, status: int = 403, code: str = "pull_refused"):
        super().__init__(message, code=code)
        self.status = status


class Downloads:
    """The server's one download thread: a pull runs there (and on after its client left: the file is kept);
    a pull asked for while one runs is told to come back, so downloads never take the threads requests are
    parsed on, nor pile up."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llava-edge-pull")
        self.running: str | None = None

    def claim(self, spec: ModelSpec | None) -> None:
        if spec is None:
            return
        if self.running is not None:
            raise PullRefused(f"{self.running} is being downloaded; pull again once it is done.", status=503,
                              code="pull_busy")
        self.running = spec.id


def add_pull_routes(app: FastAPI, service: TaskService) -> None:
    """Register ``/api/pull``, ``/api/embed`` and ``/api/embeddings`` on ``app``."""
    downloads = Downloads()

    async def pull(request: Request) -> Response:
        try:
            authenticate_request(request, service)
            body = await read_json_object(request, PULL_BODY_BYTES)
            name, stream = _requested(body)
            _check_allowed(service)
            spec = _variant_to_download(name, service)
            downloads.claim(spec)
        except PullRefused as err:
            return error_response("/api/pull", err.status, err.code, err.message)
        except LlavaEdgeError as err:
            return error_response("/api/pull", status_for(err, "ollama"), err.code, for_client(err).message)
        events = _pull_events(spec, None if spec is None else _download(spec, service, downloads))
        if stream:
            return StreamingResponse(_ndjson(events), media_type="application/x-ndjson")
        last: dict[str, Any] = {}
        async for last in events:
            if "error" in last:
                return error_response("/api/pull", 500, "download_failed", last["error"])
        return JSONResponse(last)

    async def embed(request: Request) -> Response:
        try:
            authenticate_request(request, service)
        except LlavaEdgeError as err:
            return error_response(request.url.path, status_for(err, "ollama"), err.code, err.message)
        return error_response(request.url.path, 501, "embeddings_unsupported",
                              f"{service.captioner.model_name} has no embeddings: llava-edge serves a captioning "
                              "model. Use an embedding model (e.g. with Ollama itself) for /api/embed.")

    app.add_api_route("/api/pull", pull, methods=["POST"], include_in_schema=False)
    app.add_api_route("/api/embed", embed, methods=["POST"], include_in_schema=False)
    app.add_api_route("/api/embeddings", embed, methods=["POST"], include_in_schema=False)


def _requested(body: dict[str, Any]) -> tuple[str, bool]:
    name, stream = body.get("model", body.get("name")), body.get("stream", True)
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequestError("Name the model to pull: {\"model\": \"llava:7b-v1.6-mistral-q4_K_M\"}.",
                                  code="missing_model", parameter="model")
    if not isinstance(stream, bool):
        raise InvalidRequestError("stream must be true or false.", code="invalid_type", parameter="stream")
    return name.strip(), stream


def _check_allowed(service: TaskService) -> None:
    settings = service.settings
    why = ("--offline" if settings.offline or is_offline() else
           "--no-fetch" if settings.fetch_hosts is not None and not settings.fetch_hosts else None)
    if why is not None:
        raise PullRefused(f"This server was started with {why}: it downloads nothing. Download the model on the "
                          "server's machine with `llava-edge pull VARIANT`, then name it in your requests.")
    if not is_loopback(settings.host) and settings.api_key is None and not settings.allow_pull:
        raise PullRefused("This server has no API key, so it downloads models only when started with --allow-pull. "
                          "Ask the operator to run `llava-edge pull VARIANT` on the server's machine.")


def _variant_to_download(name: str, service: TaskService) -> ModelSpec | None:
    """The variant to download; None when ``name`` already picks an installed model."""
    if name.lower() in {known.lower() for known in name_table(service)} or name == service.captioner.model_name:
        return None
    if name.lower().startswith(NAME_PREFIX):
        raise UnknownModelError(f"{quoted(name)} is a synthetic test model: it is built, not downloaded. Start "
                                f"the server with `llava-edge serve --model {name[:40]}` to use it.",
                                code="not_downloadable")
    registry = load_registry(service.captioner.registry)
    try:
        return variant_named(name, registry)
    except UnknownModelError:
        known = ", ".join(f"{ollama_tag(spec.id)} ({spec.id})" for spec in registry.models.values())
        raise UnknownModelError(f"No model called {quoted(name)} can be pulled here. Pull one of: {known}.",
                                code="model_not_found") from None


async def _pull_events(spec: ModelSpec | None, download: AsyncIterator[dict[str, Any]] | None,
                       ) -> AsyncIterator[dict[str, Any]]:
    """Ollama's progress objects for one pull; an ``{"error"}`` object ends a failed one."""
    yield {"status": "pulling manifest"}
    if spec is not None and download is not None:
        async for event in download:
            yield event
            if "error" in event:
                return
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
    yield {"status": "success"}


def _download(spec: ModelSpec, service: TaskService, downloads: Downloads) -> AsyncIterator[dict[str, Any]]:
    """Start the download in the download thread now (so the claim is released however the client goes);
    its progress comes through a queue (None: finished)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    sent: dict[str, int] = {}

    def send(event: dict[str, Any] | None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, event)
        except RuntimeError:  # the server stopped while the download ran: nobody is left to tell
            pass

    def report(progress: FileProgress) -> None:
        if progress.completed - sent.get(progress.file, -PROGRESS_STEP_BYTES) >= PROGRESS_STEP_BYTES or \
                progress.completed == progress.total:
            sent[progress.file] = progress.completed
            send({"status": "downloading", "digest": progress.digest, "total": progress.total,
                  "completed": progress.completed})

    def work() -> None:
        captioner = service.captioner
        try:
            download_model(spec, registry=captioner.registry, cache_dir=captioner.cache_dir, progress=False,
                           offline=False, on_progress=report)
        except LlavaEdgeError as err:
            send({"error": for_client(err).message})
        except Exception:  # a failure nobody else would see: the log gets the trace, the client no paths
            _log.exception("pulling %s failed", spec.id)
            send({"error": f"Pulling {spec.id} failed on the server; its log says why. Retry, or ask the operator."})
        finally:
            downloads.running = None
            send(None)

    loop.run_in_executor(downloads.executor, work)  # a client that leaves does not stop it: the file is kept

    async def progress() -> AsyncIterator[dict[str, Any]]:
        while (event := await queue.get()) is not None:
            yield event

    return progress()


async def _ndjson(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    async for event in events:
        yield json.dumps(event) + "\n"
