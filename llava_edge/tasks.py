"""Runware task dispatch for the server: caption, imageUpload, getResponse, ping and authentication.

``TaskService`` owns a bounded queue and ONE worker thread that runs every caption, so the model is
used by one task at a time and the event loop only waits on futures. A full queue answers
``serviceUnavailable`` at once. Every caption task is registered by taskUUID (``conflictTaskUUID`` on
reuse while it runs or its result is kept), its outcome is kept for ``ttl`` seconds for
``getResponse``, and, when asked, delivered to ``webhookURL`` / ``uploadEndpoint``. Errors are per
task: each call answers one ``Outcome`` and never raises for a bad task.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .delivery import Deliverer
from .errors import InvalidRequestError, LlavaEdgeError, ServerBusyError
from .images import decode_image_bytes, read_image_bytes
from .schema import RESPONSE_TASK_TYPE, CaptionRequest, is_uuid4, parse_caption_request, task_identity
from .server_settings import AUTH_TASK_TYPE, ServerSettings, check_api_key
from .task_registry import Outcome, TaskRegistry

if TYPE_CHECKING:
    from .api import Captioner

UPLOAD_TASK_TYPE = "imageUpload"
UPLOADS_AT_ONCE = 2
"""Uploads decoded at the same time (each may hold a 40-megapixel image in memory)."""
_log = logging.getLogger("llava_edge.tasks")


@dataclass(frozen=True)
class _Job:
    raw: dict[str, Any]
    request: CaptionRequest
    future: Future[Outcome]


class TaskService:
    """Answers Runware tasks with one loaded ``Captioner``; see the module docstring."""

    def __init__(self, captioner: Captioner, settings: ServerSettings):
        self.captioner = captioner
        self.settings = settings
        self.registry = TaskRegistry(max_kept=settings.max_kept_results)
        self.deliverer = Deliverer(
            attempts=settings.delivery_attempts, backoff=settings.delivery_backoff,
            limits=settings.delivery_limits, max_pending=settings.max_pending_deliveries,
        )
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=settings.max_queue)
        self._stopping = threading.Event()
        self._running_task: str | None = None
        self._worker = threading.Thread(target=self._work, name="llava-edge-model", daemon=True)
        self._upload_slots = asyncio.Semaphore(UPLOADS_AT_ONCE)
        self._handlers: dict[str, Callable[[dict[str, Any], str], Awaitable[Outcome]]] = {
            "caption": self._caption, "imageCaption": self._caption, UPLOAD_TASK_TYPE: self._upload,
            "getResponse": self._get_response, "ping": self._ping,
        }

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if not self._worker.is_alive() and not self._stopping.is_set():
            self._worker.start()
            self.deliverer.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the running caption, fail the queued ones with ``serviceUnavailable``, stop the threads."""
        self._stopping.set()
        if self._worker.is_alive():
            self._worker.join(timeout)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            busy = ServerBusyError("The server is shutting down; send the task again when it is back.")
            self._complete(job, _failure(busy, job.request))
        self.deliverer.stop()

    def health(self) -> dict[str, Any]:
        live, kept = self.registry.counts()
        return {
            "status": "ok" if self._worker.is_alive() else "stopped",
            "model": self.captioner.model_name,
            "queueDepth": self._queue.qsize(),
            "queueLimit": self.settings.max_queue,
            "running": self._running_task is not None,
            "liveTasks": live,
            "keptResults": kept,
            "pendingDeliveries": self.deliverer.pending,
        }

    # -- dispatch -------------------------------------------------------------------------------

    async def run(self, raw: Any, *, base_url: str) -> Outcome:
        """Answer one task (any type but authentication). ``base_url`` roots the ``imageURL`` of uploads."""
        task_type, task_uuid = task_identity(raw)
        try:
            handler = self._handlers.get(task_type or "")
            if not isinstance(raw, dict) or handler is None:
                raise _unknown_task(raw, task_type)
            return await handler(raw, base_url)
        except LlavaEdgeError as err:
            err.task_type = err.task_type or task_type
            err.task_uuid = err.task_uuid or task_uuid  # echoed as sent, so the client can route the error
            return Outcome.failure(err)

    def authenticate(self, raw: dict[str, Any]) -> Outcome:
        """Check an ``authentication`` task; success answers a fresh ``connectionSessionUUID``."""
        try:
            check_api_key(self.settings, raw.get("apiKey"))
        except LlavaEdgeError as err:
            return Outcome.failure(err)
        return Outcome({"taskType": AUTH_TASK_TYPE, "connectionSessionUUID": str(uuid.uuid4())})

    async def _ping(self, raw: dict[str, Any], base_url: str) -> Outcome:
        return Outcome({"taskType": "ping", "pong": True})

    async def _get_response(self, raw: dict[str, Any], base_url: str) -> Outcome:
        task_uuid = _require_task_uuid(raw)
        outcome = self.registry.lookup(task_uuid)
        if outcome is None:
            return Outcome({"taskType": RESPONSE_TASK_TYPE, "taskUUID": task_uuid, "status": "processing"})
        return outcome.with_status()

    async def _upload(self, raw: dict[str, Any], base_url: str) -> Outcome:
        task_uuid = _require_task_uuid(raw)
        unknown = sorted(set(raw) - {"taskType", "taskUUID", "image"})
        if unknown:
            raise InvalidRequestError(
                f"Unknown parameter {unknown[0]!r} for imageUpload; send taskType, taskUUID and image.",
                code="unsupportedParameter", parameter=unknown[0],
            )
        image = raw.get("image")
        if not isinstance(image, str) or not image.strip():
            raise InvalidRequestError(
                "image is required: a data URI, base64 string or URL.", code="missingImage", parameter="image"
            )
        async with self._upload_slots:
            name = await asyncio.to_thread(self._store_image, image)
        image_uuid = name.split(".", 1)[0]
        return Outcome({"taskType": UPLOAD_TASK_TYPE, "taskUUID": task_uuid, "imageUUID": image_uuid,
                        "imageURL": f"{base_url}images/{name}"})

    def _store_image(self, image: str) -> str:
        """Validate (decode) an uploaded image and store its bytes; answers the stored file name."""
        limits = replace(self.captioner.image_limits, allow_paths=False)
        store = self.captioner.image_store
        try:
            data = read_image_bytes(image, limits=limits, store=store)
            decode_image_bytes(data, limits)
        except LlavaEdgeError as err:
            err.parameter = "image"
            raise
        return store.path(store.put(data)).name

    async def _caption(self, raw: dict[str, Any], base_url: str) -> Outcome:
        request = parse_caption_request(raw)
        future = self._enqueue(raw, request)
        if request.delivery_method == "async":
            return Outcome({"taskType": RESPONSE_TASK_TYPE, "taskUUID": request.task_uuid})
        return await asyncio.shield(asyncio.wrap_future(future))

    def _enqueue(self, raw: dict[str, Any], request: CaptionRequest) -> Future[Outcome]:
        ttl = request.ttl if request.ttl is not None else self.settings.result_ttl
        self.registry.begin(request.task_uuid, ttl, task_type=request.task_type)
        job = _Job(raw, request, Future())
        try:
            if self._stopping.is_set():
                raise queue.Full
            self._queue.put_nowait(job)
        except queue.Full:
            self.registry.discard(request.task_uuid)
            raise ServerBusyError(
                f"The server is busy: {self.settings.max_queue} caption tasks are already waiting. "
                "Retry in a few seconds.",
            ) from None
        return job.future

    # -- the model worker -----------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                job = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self._running_task = job.request.task_uuid
            try:
                self._complete(job, self._caption_now(job))
            finally:
                self._running_task = None

    def _caption_now(self, job: _Job) -> Outcome:
        try:
            return Outcome(self.captioner.run_task(job.raw, allow_local_files=False))
        except LlavaEdgeError as err:
            return Outcome.failure(err)
        except Exception as err:  # noqa: BLE001 (the worker must answer every task and survive)
            _log.exception("caption task %s failed unexpectedly", job.request.task_uuid)
            return _failure(LlavaEdgeError(f"Internal error while captioning: {type(err).__name__}: {err}"),
                            job.request)

    def _complete(self, job: _Job, outcome: Outcome) -> None:
        request = job.request
        self.registry.finish(request.task_uuid, outcome)
        for url, method in ((request.webhook_url, "POST"), (request.upload_endpoint, "PUT")):
            if url is not None:
                self.deliverer.submit(url, method, outcome.with_status().item)
        try:
            job.future.set_result(outcome)
        except InvalidStateError:
            pass  # the caller went away; the outcome is still kept for getResponse


def _failure(error: LlavaEdgeError, request: CaptionRequest) -> Outcome:
    error.task_type, error.task_uuid = request.task_type, request.task_uuid
    return Outcome.failure(error)


def _require_task_uuid(raw: dict[str, Any]) -> str:
    value = raw.get("taskUUID")
    if not is_uuid4(value):
        code = "missingTaskUUID" if value is None else "invalidTaskUUID"
        raise InvalidRequestError(f"taskUUID must be a UUID v4 string, got {str(value)[:80]!r}.", code=code,
                                  parameter="taskUUID")
    return str(value)


def _unknown_task(raw: Any, task_type: str | None) -> InvalidRequestError:
    if not isinstance(raw, dict):
        return InvalidRequestError(f"A task must be a JSON object, got {type(raw).__name__}.", code="invalidTask",
                                   parameter="task")
    known = "caption, imageCaption, imageUpload, getResponse, ping, authentication"
    if task_type is None:
        return InvalidRequestError(f"taskType is required; this server knows {known}.", code="missingTaskType",
                                   parameter="taskType")
    return InvalidRequestError(f"Unsupported taskType {task_type[:80]!r}; this server knows {known}.",
                               code="unsupportedTaskType", parameter="taskType")
