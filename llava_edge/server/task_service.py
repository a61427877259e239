"""Runware task dispatch for the server (caption, imageUpload, getResponse, ping and authentication), and the
chat calls of the OpenAI, Ollama and Responses APIs, through one queue and ONE model thread.

``TaskService`` admits a bounded number of caption jobs; a full queue answers ``serviceUnavailable`` at once. A
job's images are read first, outside the model thread (``image_intake``: fetch slots shared between clients, one
fetch deadline per request, sizes checked before decoding), then it queues for the model, which takes jobs in
the order ``queue_policy`` decides and swaps models as they need (``model_worker``, ``resident_model``).
Whatever a job raises becomes that job's error. Every caption task is registered by taskUUID
(``conflictTaskUUID`` on reuse while it runs or its result is kept), its outcome is kept for ``ttl`` seconds for
``getResponse``, and, when asked, delivered to ``webhookURL`` / ``uploadEndpoint``. A chat call whose client
left is cancelled (``cancel_chat``), like a Runware task whose WebSocket closed (``abandon``).

Shutdown drains: ``begin_shutdown`` refuses new captions at once, lets the accepted ones finish until
``shutdown_timeout`` passes, then fails the rest with ``serviceUnavailable`` (delivered to their
webhooks like any result); ``stop`` then gives pending deliveries ``delivery_flush_timeout`` seconds.
Every accepted task is completed exactly once, by the worker or by the drain.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import InvalidStateError
from typing import TYPE_CHECKING, Any

from llava_edge.errors import CaptionCancelledError, LlavaEdgeError, ServerBusyError
from llava_edge.schema import RESPONSE_TASK_TYPE, CaptionRequest, parse_caption_request, task_identity
from llava_edge.server.auth import AuthGate
from llava_edge.server.chat import refuse_unpinned, task_model
from llava_edge.server.delivery import Deliverer
from llava_edge.server.image_intake import ImageIntake
from llava_edge.server.job_queue import JobQueue
from llava_edge.server.jobs import Job
from llava_edge.server.model_worker import ModelWorker
from llava_edge.server.queue_places import Place, place_for
from llava_edge.server.resident_model import ChatCall, ResidentModel
from llava_edge.server.session_tasks import ResponseLookup, authenticate, ping
from llava_edge.server.settings import ServerSettings
from llava_edge.server.task_errors import failure, internal_error, shutdown_failure, unknown_task
from llava_edge.server.task_results import Outcome, TaskRegistry
from llava_edge.server.uploads import UPLOAD_TASK_TYPE, ImageUploads
from llava_edge.server.work_options import PRIORITIES, runware_work

if TYPE_CHECKING:
    from llava_edge.api import Captioner

CANCEL_GRACE = 5.0
"""Seconds a caption cancelled at the shutdown deadline gets to unwind, so the model can be closed."""
_log = logging.getLogger("llava_edge.server.task_service")


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
        self._queue = JobQueue(self.resident.start_model, settings.min_residency)
        """Jobs whose images are read, waiting for the model (admission bounds them, see ``_admit``)."""
        self._jobs: set[Job] = set()
        """Every admitted job that has no outcome yet: reading its image, queued or running."""
        self._draining = threading.Event()
        """Set by ``begin_shutdown``: new captions are refused."""
        self._hurry = threading.Event()
        """Set by ``hurry``: the drain and the delivery flush end now."""
        self._lock = threading.Lock()
        """Guards the job in hand, the drain deadline and each job's completion."""
        self._running: Job | None = None
        self._parked: Job | None = None
        """A background job set aside while ``_running`` runs in its place."""
        self._deadline = float("inf")
        self._abandoned = False
        self._drainer: threading.Thread | None = None
        self._worker = ModelWorker(self._queue, self.resident, self._run_job, wanted=lambda: bool(self._jobs))
        self.intake = ImageIntake(settings)
        self._readers: set[asyncio.Task[None]] = set()
        self._handlers: dict[str, Callable[[dict[str, Any], str], Awaitable[Outcome]]] = {
            "caption": self._caption, "imageCaption": self._caption, UPLOAD_TASK_TYPE: ImageUploads(self.resident),
            "getResponse": ResponseLookup(self.registry), "ping": ping,
        }

    @property
    def worker_restarts(self) -> int:
        """Times the model worker's loop was restarted."""
        return self._worker.restarts

    @property
    def captioner(self) -> Captioner:
        """The resident model (it changes when a chat call swaps another in)."""
        return self.resident.captioner

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if not self._worker.thread.is_alive() and not self._worker.stopping.is_set():
            self._worker.thread.start()
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
        while self._worker.thread.is_alive() and time.monotonic() < deadline and not self._hurry.is_set():
            self._worker.thread.join(0.1)

    @property
    def model_idle(self) -> bool:
        """True unless the model worker is running (or inside a caption past the shutdown deadline)."""
        return not self._worker.thread.is_alive()

    def health(self) -> dict[str, Any]:
        live, kept = self.registry.counts()
        depths = self.queue_depths()
        waiting = sum(depths.values())
        status = ("degraded" if self.resident.failed else "ok") if self._worker.thread.is_alive() else "stopped"
        return {
            "status": "draining" if self._draining.is_set() and status == "ok" else status,
            "model": self.captioner.model_name,
            "loaded": self.resident.loaded,
            "queueDepth": waiting,
            "queueDepths": depths,
            "queueLimit": self.settings.max_queue,
            "running": self._running is not None,
            "liveTasks": live,
            "keptResults": kept,
            "pendingDeliveries": self.deliverer.pending,
            "workerRestarts": self._worker.restarts,
            "lastLoadError": self.resident.last_load_error,
        }

    def queue_depths(self) -> dict[str, int]:
        """Admitted jobs not running yet (reading their images or queued), by priority class."""
        with self._lock:
            return {priority: self._waiting(priority) for priority in PRIORITIES}

    def _waiting(self, priority: str) -> int:
        return len(self._waiting_jobs(priority))

    def _waiting_jobs(self, priority: str) -> list[Job]:
        """Admitted jobs of a class not started yet, under the lock. The running (or parked) job counts off only
        while it is one of them: a drain completes it before the model is done with it."""
        started = (self._running, self._parked)
        return [job for job in self._jobs if job.priority == priority and job not in started]

    def _push_out(self, job: Job) -> None:
        """``job`` gives up its place to another client's (``queue_places``): answered busy, never run."""
        self._queue.remove(job)
        busy = ServerBusyError("The server is busy: another client needed a place in the queue. Retry in a few "
                               "seconds.")
        if self._complete(job, failure(busy, job.request)):
            with self._lock:
                if self._running is job:  # the model took it a moment ago: stop it at its next step
                    self.captioner.runtime.cancel()

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
            leftovers, started = list(self._jobs), (self._running, self._parked)
        self._worker.stopping.set()
        failed = sum(self._complete(job, shutdown_failure(job.request, started=job in started)) for job in leftovers)
        for job in leftovers:  # answered: whatever runs or is set aside stops at its next step
            job.abandoned.set()
            if job.chat is not None:
                job.chat.cancelled.set()
        if running is not None:  # its task has its outcome: now llama.cpp may drop the rest of the caption
            self.captioner.runtime.cancel()
        if failed:
            _log.warning("shutdown: %d accepted caption tasks did not finish by the deadline and were failed "
                         "(serviceUnavailable)", failed)

    # -- dispatch -------------------------------------------------------------------------------

    async def run(self, raw: Any, *, base_url: str, client: str = "", background: bool = False) -> Outcome:
        """Answer one task (any type but authentication). ``base_url`` roots the ``imageURL`` of uploads;
        ``client`` is whose it is (``read_policy.client_key``); ``background``: the request's header asks for
        background priority (``work_options``)."""
        task_type, task_uuid = task_identity(raw)
        try:
            handler = self._handlers.get(task_type or "")
            if not isinstance(raw, dict) or handler is None:
                raise unknown_task(raw, task_type)
            if handler == self._caption:
                return await self._caption(raw, base_url, client, background)
            return await handler(raw, base_url)
        except LlavaEdgeError as err:
            err.task_type = err.task_type or task_type
            err.task_uuid = err.task_uuid or task_uuid  # echoed as sent, so the client can route the error
            return Outcome.failure(err)
        except Exception:  # every task is answered, whatever it raised
            _log.exception("task %s failed unexpectedly", task_uuid)
            return Outcome.failure(internal_error(task_type, task_uuid))

    def authenticate(self, raw: dict[str, Any], client: str) -> Outcome:
        """Check an ``authentication`` task from ``client`` (an address) (``session_tasks.authenticate``)."""
        return authenticate(self.auth, raw, client)

    async def _caption(self, raw: dict[str, Any], base_url: str, client: str = "",
                       background: bool = False) -> Outcome:
        request = parse_caption_request(raw)
        model, work = runware_work(request, raw, background=background)
        job = self._admit(Job(raw, request, model=task_model(model, self), client=client, work=work))
        self._start_reading(job, base_url)
        if request.delivery_method == "async":
            return Outcome({"taskType": RESPONSE_TASK_TYPE, "taskUUID": request.task_uuid})
        return await asyncio.shield(asyncio.wrap_future(job.future))

    async def chat(self, call: ChatCall, *, base_url: str, client: str = "") -> Outcome:
        """Caption for the OpenAI, Ollama or Responses API through the same queue, image reading and model worker
        as Runware tasks. The outcome's ``result`` is the ``CaptionResult``; errors come as a failed outcome.
        ``cancel_chat`` stops it (its client left)."""
        request = CaptionRequest(task_type="chat", task_uuid=str(uuid.uuid4()), model="",
                                 image=call.images[0] if call.images else "")
        try:
            job = self._admit(Job({}, request, call, model=call.model or self.resident.start_model, client=client))
        except LlavaEdgeError as err:
            return Outcome.failure(err)
        self._start_reading(job, base_url)
        return await asyncio.shield(asyncio.wrap_future(job.future))

    def cancel_chat(self, call: ChatCall) -> None:
        """Nobody waits for this chat call's answer any more (its client left): a caption under way stops at its
        next step (a llama.cpp batch under way included); one not running yet is answered cancelled at once."""
        call.cancelled.set()
        with self._lock:
            job = next((job for job in self._jobs if job.chat is call), None)
            running = job is not None and job is self._running
        if running:
            self._cancel_if_running(lambda running_job: running_job.chat is call)
        elif job is not None:
            self._queue.remove(job)
            self._complete(job, Outcome.failure(CaptionCancelledError("The client left before this call ran.")))

    def _admit(self, job: Job) -> Job:
        """Register the task and take it in, unless its model is pinned out, the queue is full or the server is
        shutting down."""
        request = job.request
        refuse_unpinned(job.model, self)
        ttl = request.ttl if request.ttl is not None else self.settings.result_ttl
        if job.chat is None:
            self.registry.begin(request.task_uuid, ttl, task_type=request.task_type)
        with self._lock:  # the drain collects leftovers under this lock: no job slips in after it
            place = Place[Job](False) if self._draining.is_set() else place_for(
                self._waiting_jobs(job.priority), job.client, self.settings.max_queue)
            if place.admitted:
                self._jobs.add(job)
        if place.admitted:
            if place.pushed_out is not None:
                self._push_out(place.pushed_out)
            return job
        refused = ServerBusyError(
            "The server is shutting down; send the task again when it is back." if self._draining.is_set()
            else f"The server is busy: {self.settings.max_queue} {job.priority} caption tasks are already waiting. "
            "Retry in a few seconds.")
        if job.chat is None:
            self.registry.discard(request.task_uuid)
        raise refused

    def _start_reading(self, job: Job, base_url: str) -> None:
        """Read the job's image in the background (kept referenced until done), then queue it."""
        reader = asyncio.create_task(self._read_then_queue(job, base_url))
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)

    async def _read_then_queue(self, job: Job, base_url: str) -> None:
        """Read the job's images outside the model thread (``ImageIntake``), then queue it for the model."""
        try:
            job.images = [] if job.load_only else await self.intake.read(job, self.captioner, base_url)
        except LlavaEdgeError as err:
            self._complete(job, failure(err, job.request))
            return
        except Exception:
            _log.exception("reading the image of task %s failed unexpectedly", job.request.task_uuid)
            self._complete(job, Outcome.failure(internal_error(job.request.task_type, job.request.task_uuid)))
            return
        with self._lock:
            if not job.completed.is_set():  # else the drain (or the client's leaving) already answered it
                self._queue.put(job)

    # -- the model worker -----------------------------------------------------------------------

    def _run_job(self, job: Job) -> None:
        """In the model thread: run one job the queue handed out, unless it was answered meanwhile. An interactive
        job may run while a background one is parked (``model_worker``): that one is the running job again after."""
        with self._lock:
            parked = self._running  # a background job this one runs in the place of (``model_worker``)
        try:
            with self._lock:
                skip = self._abandoned or job.completed.is_set()
                self._running, self._parked = (None if skip else job), parked
            if not skip:
                self._complete(job, self._worker.caption(job))
        except Exception:
            _log.exception("caption task %s failed unexpectedly", job.request.task_uuid)
            self._complete(job, Outcome.failure(internal_error(job.request.task_type, job.request.task_uuid)))
        finally:
            with self._lock:
                self._running, self._parked = parked, None

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

    def _cancel_if_running(self, which: Callable[[Job], bool]) -> None:
        """Cancel the caption in the model if the running job is ``which`` one, inside llama.cpp (the batch
        under way stops). Under the lock, so a job that just ended cannot have its successor cancelled."""
        with self._lock:
            if self._running is not None and not self._running.completed.is_set() and which(self._running):
                self.captioner.runtime.cancel()

    def _complete(self, job: Job, outcome: Outcome) -> bool:
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
