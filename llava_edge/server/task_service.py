"""Runware task dispatch for the server: caption, imageUpload, getResponse, ping and authentication.

``TaskService`` admits a bounded number of caption tasks and has ONE worker thread that runs every
caption, so the model is used by one task at a time and the event loop only waits on futures. A full
queue answers ``serviceUnavailable`` at once. A task's image is read first (URL fetches under their own
deadline, base64 decodes), by a small pool outside the model thread: a slow URL never holds the model.
The worker cannot die of a task: whatever a task raises becomes that task's error, and a supervisor loop
restarts the worker should it ever stop. Every caption task is registered by taskUUID (``conflictTaskUUID`` on
reuse while it runs or its result is kept), its outcome is kept for ``ttl`` seconds for
``getResponse``, and, when asked, delivered to ``webhookURL`` / ``uploadEndpoint``. Errors are per
task: each call answers one ``Outcome`` and never raises for a bad task.

Shutdown drains: ``begin_shutdown`` refuses new captions at once, lets the accepted ones finish until
``shutdown_timeout`` passes, then fails the rest with ``serviceUnavailable`` (delivered to their
webhooks like any result); ``stop`` then gives pending deliveries ``delivery_flush_timeout`` seconds.
Every accepted task is completed exactly once, by the worker or by the drain.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from llava_edge.errors import CaptionCancelledError, LlavaEdgeError, ServerBusyError
from llava_edge.events import Progress, TextDelta
from llava_edge.images import read_image_bytes
from llava_edge.schema import RESPONSE_TASK_TYPE, CaptionRequest, parse_caption_request, task_identity
from llava_edge.server.auth import AuthGate
from llava_edge.server.delivery import Deliverer
from llava_edge.server.image_reading import in_daemon_thread, own_image_uuid
from llava_edge.server.resident_model import ChatCall, ResidentModel
from llava_edge.server.settings import AUTH_TASK_TYPE, ServerSettings
from llava_edge.server.task_errors import failure, internal_error, require_task_uuid, shutdown_failure, unknown_task
from llava_edge.server.task_results import Outcome, TaskRegistry
from llava_edge.server.uploads import UPLOAD_TASK_TYPE, ImageUploads

if TYPE_CHECKING:
    from llava_edge.api import Captioner

READS_AT_ONCE = 4
"""Caption images read at the same time (URL fetches, base64 decodes), outside the model thread."""
CANCEL_GRACE = 5.0
"""Seconds a caption cancelled at the shutdown deadline gets to unwind, so the model can be closed."""
_log = logging.getLogger("llava_edge.server.task_service")


@dataclass(eq=False)
class _Job:
    raw: dict[str, Any]
    request: CaptionRequest
    chat: ChatCall | None = None
    """Set for OpenAI/Ollama calls: answered with a CaptionResult, never registered or delivered."""
    future: Future[Outcome] = field(default_factory=Future)
    images: list[bytes] = field(default_factory=list)
    """The image bytes (one for a Runware task, one or more for a chat call), once read; the job enters
    the model queue only then."""
    completed: threading.Event = field(default_factory=threading.Event)
    abandoned: threading.Event = field(default_factory=threading.Event)
    """Set when nobody waits for this sync task any more: its caption stops at the next step."""


class TaskService:
    """Answers Runware tasks with one loaded ``Captioner``; see the module docstring."""

    def __init__(self, captioner: Captioner, settings: ServerSettings):
        self.resident = ResidentModel(captioner, settings)
        self.settings = settings
        self.registry = TaskRegistry(max_kept=settings.max_kept_results)
        self.auth = AuthGate(settings)
        self.deliverer = Deliverer(
            attempts=settings.delivery_attempts, backoff=settings.delivery_backoff,
            limits=settings.outbound(settings.delivery_limits), max_pending=settings.max_pending_deliveries,
        )
        self._queue: queue.Queue[_Job] = queue.Queue()
        """Jobs whose image is read, waiting for the model (admission bounds them, see ``_admit``)."""
        self._jobs: set[_Job] = set()
        """Every admitted job that has no outcome yet: reading its image, queued or running."""
        self._draining = threading.Event()
        """Set by ``begin_shutdown``: new captions are refused."""
        self._stopping = threading.Event()
        """Set when the drain is over: the worker takes no further job."""
        self._hurry = threading.Event()
        """Set by ``hurry``: the drain and the delivery flush end now."""
        self._lock = threading.Lock()
        """Guards the job in hand, the drain deadline and each job's completion."""
        self._running: _Job | None = None
        self._deadline = float("inf")
        self._abandoned = False
        self._drainer: threading.Thread | None = None
        self._worker = threading.Thread(target=self._supervise, name="llava-edge-model", daemon=True)
        self.worker_restarts = 0
        self._read_slots = asyncio.Semaphore(READS_AT_ONCE)
        self._readers: set[asyncio.Task[None]] = set()
        self._handlers: dict[str, Callable[[dict[str, Any], str], Awaitable[Outcome]]] = {
            "caption": self._caption, "imageCaption": self._caption, UPLOAD_TASK_TYPE: ImageUploads(self.resident),
            "getResponse": self._get_response, "ping": self._ping,
        }

    @property
    def captioner(self) -> Captioner:
        """The resident model (it changes when a chat call swaps another in)."""
        return self.resident.captioner

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if not self._worker.is_alive() and not self._stopping.is_set():
            self._worker.start()
            self.deliverer.start()

    def begin_shutdown(self, timeout: float | None = None) -> None:
        """Refuse new captions from now on and give the accepted ones ``timeout`` seconds (default: the
        settings' ``shutdown_timeout``) to finish; a later call may only shorten that. Returns at once."""
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        with self._lock:
            self._deadline = min(self._deadline, time.monotonic() + timeout)
            self._draining.set()
            if self._drainer is None:
                self._drainer = threading.Thread(target=self._drain, name="llava-edge-drain", daemon=True)
                self._drainer.start()

    def hurry(self) -> None:
        """End the drain and the delivery flush now (a second signal). Safe to call from a signal handler:
        it takes no lock the interrupted code could hold."""
        self._hurry.set()

    def stop(self) -> bool:
        """Drain (see ``begin_shutdown``), then deliver what is pending for ``delivery_flush_timeout`` seconds.

        Returns:
            True when the model is idle; False when a caption still runs in it past the deadline (its
            task was already reported failed), so the captioner must not be closed under it.
        """
        self.begin_shutdown()
        if self._drainer is not None:
            self._drainer.join()  # returns by the deadline: the drain never waits on the model itself
        self._wait_for_model(CANCEL_GRACE)  # a cancelled caption unwinds at its next llama.cpp batch
        self.deliverer.close(self.settings.delivery_flush_timeout, cancel=self._hurry)
        if self.model_idle:
            self.resident.close()
        return self.model_idle

    def _wait_for_model(self, seconds: float) -> None:
        """Give the model worker up to ``seconds`` to finish, unless a second signal says hurry."""
        deadline = time.monotonic() + seconds
        while self._worker.is_alive() and time.monotonic() < deadline and not self._hurry.is_set():
            self._worker.join(0.1)

    @property
    def model_idle(self) -> bool:
        """True unless the model worker is running (or inside a caption past the shutdown deadline)."""
        return not self._worker.is_alive()

    def health(self) -> dict[str, Any]:
        live, kept = self.registry.counts()
        with self._lock:
            waiting = self._waiting()
        status = "ok" if self._worker.is_alive() else "stopped"
        return {
            "status": "draining" if self._draining.is_set() and status == "ok" else status,
            "model": self.captioner.model_name,
            "queueDepth": waiting,
            "queueLimit": self.settings.max_queue,
            "running": self._running is not None,
            "liveTasks": live,
            "keptResults": kept,
            "pendingDeliveries": self.deliverer.pending,
            "workerRestarts": self.worker_restarts,
        }

    def _waiting(self) -> int:
        """Admitted caption tasks not running yet (reading their image or queued), under the lock. The running job
        counts off only while it is one of them: a drain completes it before the model is done with it."""
        return len(self._jobs) - (self._running in self._jobs)

    def _drain(self) -> None:
        """Wait until every admitted caption is done or the deadline passes; then fail the rest."""
        while time.monotonic() < self._deadline and not self._hurry.is_set():
            with self._lock:
                if not self._jobs:
                    break
            time.sleep(0.05)
        with self._lock:
            self._abandoned = True
            running = self._running
            leftovers = list(self._jobs)
        self._stopping.set()
        failed = sum(self._complete(job, shutdown_failure(job.request, started=job is running)) for job in leftovers)
        if running is not None:  # its task has its outcome: now llama.cpp may drop the rest of the caption
            self.captioner.runtime.cancel()
        if failed:
            _log.warning("shutdown: %d accepted caption tasks did not finish by the deadline and were failed "
                         "(serviceUnavailable)", failed)

    # -- dispatch -------------------------------------------------------------------------------

    async def run(self, raw: Any, *, base_url: str) -> Outcome:
        """Answer one task (any type but authentication). ``base_url`` roots the ``imageURL`` of uploads."""
        task_type, task_uuid = task_identity(raw)
        try:
            handler = self._handlers.get(task_type or "")
            if not isinstance(raw, dict) or handler is None:
                raise unknown_task(raw, task_type)
            return await handler(raw, base_url)
        except LlavaEdgeError as err:
            err.task_type = err.task_type or task_type
            err.task_uuid = err.task_uuid or task_uuid  # echoed as sent, so the client can route the error
            return Outcome.failure(err)
        except Exception:  # every task is answered, whatever it raised
            _log.exception("task %s failed unexpectedly", task_uuid)
            return Outcome.failure(internal_error(task_type, task_uuid))

    def authenticate(self, raw: dict[str, Any], client: str) -> Outcome:
        """Check an ``authentication`` task from ``client`` (an address); success answers a fresh
        ``connectionSessionUUID``."""
        try:
            self.auth.verify(client, raw.get("apiKey"))
        except LlavaEdgeError as err:
            return Outcome.failure(err)
        except Exception:
            _log.exception("authentication task failed unexpectedly")
            return Outcome.failure(internal_error(AUTH_TASK_TYPE, None))
        return Outcome({"taskType": AUTH_TASK_TYPE, "connectionSessionUUID": str(uuid.uuid4())})

    async def _ping(self, raw: dict[str, Any], base_url: str) -> Outcome:
        return Outcome({"taskType": "ping", "pong": True})

    async def _get_response(self, raw: dict[str, Any], base_url: str) -> Outcome:
        task_uuid = require_task_uuid(raw)
        outcome = self.registry.lookup(task_uuid)
        if outcome is None:
            return Outcome({"taskType": RESPONSE_TASK_TYPE, "taskUUID": task_uuid, "status": "processing"})
        return outcome.with_status()

    async def _caption(self, raw: dict[str, Any], base_url: str) -> Outcome:
        request = parse_caption_request(raw)
        job = self._admit(raw, request)
        self._start_reading(job, base_url)
        if request.delivery_method == "async":
            return Outcome({"taskType": RESPONSE_TASK_TYPE, "taskUUID": request.task_uuid})
        return await asyncio.shield(asyncio.wrap_future(job.future))

    async def chat(self, call: ChatCall, *, base_url: str) -> Outcome:
        """Caption for the OpenAI or Ollama API through the same queue, image reading and model worker as
        Runware tasks. The outcome's ``result`` is the ``CaptionResult``; errors come as a failed outcome."""
        request = CaptionRequest(task_type="chat", task_uuid=str(uuid.uuid4()), model="",
                                 image=call.images[0] if call.images else "")
        try:
            job = self._admit({}, request, chat=call)
        except LlavaEdgeError as err:
            return Outcome.failure(err)
        self._start_reading(job, base_url)
        return await asyncio.shield(asyncio.wrap_future(job.future))

    async def chat_stream(self, call: ChatCall, *, base_url: str) -> AsyncIterator[Progress | TextDelta | Outcome]:
        """``chat`` as it happens: progress events and text deltas, then the outcome. Leaving the iteration
        early (the client disconnected) cancels the caption at its next step."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Progress | TextDelta | Outcome] = asyncio.Queue()

        def forward(event: Progress | TextDelta) -> None:  # from the model thread
            loop.call_soon_threadsafe(events.put_nowait, event)

        streamed = replace(call, on_event=forward)
        answer = asyncio.ensure_future(self.chat(streamed, base_url=base_url))
        answer.add_done_callback(lambda done: events.put_nowait(done.result()))
        try:
            while not isinstance(item := await events.get(), Outcome):
                yield item
            yield item
        finally:
            streamed.cancelled.set()
            self._cancel_if_running(lambda job: job.chat is streamed)  # stops a llama.cpp batch under way

    def _admit(self, raw: dict[str, Any], request: CaptionRequest, *, chat: ChatCall | None = None) -> _Job:
        """Register the task and take it in, unless the queue is full or the server is shutting down."""
        ttl = request.ttl if request.ttl is not None else self.settings.result_ttl
        if chat is None:
            self.registry.begin(request.task_uuid, ttl, task_type=request.task_type)
        job = _Job(raw, request, chat)
        with self._lock:  # the drain collects leftovers under this lock: no job slips in after it
            if self._draining.is_set() or self._waiting() >= self.settings.max_queue:
                refused = ServerBusyError(
                    "The server is shutting down; send the task again when it is back." if self._draining.is_set()
                    else f"The server is busy: {self.settings.max_queue} caption tasks are already waiting. "
                    "Retry in a few seconds."
                )
            else:
                self._jobs.add(job)
                return job
        if chat is None:
            self.registry.discard(request.task_uuid)
        raise refused

    def _start_reading(self, job: _Job, base_url: str) -> None:
        """Read the job's image in the background (kept referenced until done), then queue it."""
        reader = asyncio.create_task(self._read_then_queue(job, base_url))
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)

    async def _read_then_queue(self, job: _Job, base_url: str) -> None:
        """Read the job's image outside the model thread (bounded pool), then queue it for the model."""
        try:
            async with self._read_slots:
                sources = job.chat.images if job.chat is not None else (job.request.image,)
                for source in sources:
                    job.images.append(await in_daemon_thread(self._read_image, source, base_url))
        except LlavaEdgeError as err:
            self._complete(job, failure(err, job.request))
            return
        except Exception:
            _log.exception("reading the image of task %s failed unexpectedly", job.request.task_uuid)
            self._complete(job, Outcome.failure(internal_error(job.request.task_type, job.request.task_uuid)))
            return
        with self._lock:
            if not job.completed.is_set():  # else the drain already failed it
                self._queue.put_nowait(job)

    def _read_image(self, image: str, base_url: str) -> bytes:
        """The bytes of a caption image; this server's own ``/images/<uuid>.<ext>`` URLs are read from the
        image store, not fetched (the fetch policy refuses the server's own, private, address)."""
        limits = replace(self.captioner.image_limits, allow_paths=False)
        source = own_image_uuid(image, base_url) or image
        return read_image_bytes(source, limits=limits, store=self.captioner.image_store)

    # -- the model worker -----------------------------------------------------------------------

    def _supervise(self) -> None:
        """The model thread: runs the worker loop, and restarts it should it ever stop unexpectedly."""
        while not self._stopping.is_set():
            try:
                self._work()
            except BaseException:
                self.worker_restarts += 1
                _log.exception("the model worker stopped unexpectedly; restarting it")

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                job = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                with self._lock:
                    skip = self._abandoned or job.completed.is_set()
                    self._running = None if skip else job
                if not skip:
                    self._complete(job, self._caption_now(job))
            except Exception:
                _log.exception("caption task %s failed unexpectedly", job.request.task_uuid)
                self._complete(job, Outcome.failure(internal_error(job.request.task_type, job.request.task_uuid)))
            finally:
                with self._lock:
                    self._running = None
                self._queue.task_done()

    def _caption_now(self, job: _Job) -> Outcome:
        if job.chat is not None:
            return self.resident.run_chat(job.chat, job.images)
        try:
            return Outcome(self.captioner.run_task(job.raw, allow_local_files=False, image=job.images[0],
                                                   cancelled=job.abandoned))
        except LlavaEdgeError as err:
            return Outcome.failure(err)
        except Exception:  # its text stays in the log: it may name the server's files
            _log.exception("caption task %s failed unexpectedly", job.request.task_uuid)
            return failure(internal_error(job.request.task_type, job.request.task_uuid), job.request)

    def abandon(self, task_uuid: str) -> None:
        """Nobody waits for this sync task any more (its WebSocket closed): stop it. A queued task is failed
        without running; a running one is cancelled inside llama.cpp. Async tasks and tasks with a webhook or
        uploadEndpoint are never abandoned: their results are still wanted."""
        with self._lock:
            job = next((job for job in self._jobs if job.request.task_uuid == task_uuid), None)
            running = job is not None and job is self._running
        if job is None or job.request.delivery_method == "async" or job.request.webhook_url \
                or job.request.upload_endpoint:
            return
        job.abandoned.set()
        if running:
            self._cancel_if_running(lambda running_job: running_job is job)  # also stops a llama.cpp batch
        else:
            self._complete(job, failure(CaptionCancelledError("The client left before this task ran."),
                                         job.request))

    def _cancel_if_running(self, which: Callable[[_Job], bool]) -> None:
        """Cancel the caption in the model if the running job is ``which`` one, inside llama.cpp (the batch
        under way stops). Under the lock, so a job that just ended cannot have its successor cancelled."""
        with self._lock:
            if self._running is not None and not self._running.completed.is_set() and which(self._running):
                self.captioner.runtime.cancel()

    def _complete(self, job: _Job, outcome: Outcome) -> bool:
        """Keep, deliver and answer a job's outcome, once: ``False`` when it was already completed (a caption
        that ends after the drain failed it)."""
        with self._lock:
            if job.completed.is_set():
                _log.info("task %s already has an outcome (the shutdown deadline passed); this one is dropped",
                          job.request.task_uuid)
                return False
            job.completed.set()
            self._jobs.discard(job)
        if job.chat is None:  # chat calls are answered only; Runware tasks are kept and delivered too
            self._keep_and_deliver(job.request, outcome)
        try:
            job.future.set_result(outcome)
        except InvalidStateError:
            pass  # the caller went away; the outcome is still kept for getResponse
        return True

    def _keep_and_deliver(self, request: CaptionRequest, outcome: Outcome) -> None:
        """Keep the outcome for getResponse and send it to the task's webhook and uploadEndpoint."""
        try:
            self.registry.finish(request.task_uuid, outcome)
            for url, method in ((request.webhook_url, "POST"), (request.upload_endpoint, "PUT")):
                if url is not None:
                    self.deliverer.submit(url, method, outcome.with_status().item)
        except Exception:  # the task is still answered
            _log.exception("keeping or delivering the outcome of task %s failed", request.task_uuid)
