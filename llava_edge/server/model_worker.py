"""The one model worker: every kind of caption work (a Runware caption task, a chat or Responses call, a page
request) is a ``Job`` submitted here, and the worker owns it from admission to its one outcome.

Admission is bounded per priority class (``--max-queue``); a job's images are read outside the model thread
(``image_intake``: fetch slots shared between clients, one deadline per request, sizes checked before decoding);
then it waits in the queue (``job_queue`` over ``queue_policy``) for the model thread (``model_thread``), which
runs it on its model, swapping, reloading and unloading as needed. A job whose caller left is cancelled: at its
next step when it runs, at once when it waits. Shutdown drains: ``begin_shutdown`` refuses new jobs, lets the
admitted ones finish until the deadline, then fails the rest. Every admitted job is completed exactly once, by the
model, the drain or a cancel; its ``on_outcome`` (a Runware task's keeping and delivery) runs before its caller
hears.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import InvalidStateError

from llava_edge.errors import CaptionCancelledError, LlavaEdgeError, ServerBusyError
from llava_edge.server.image_intake import ImageIntake
from llava_edge.server.job_queue import JobQueue
from llava_edge.server.jobs import Job
from llava_edge.server.model_thread import ModelThread
from llava_edge.server.resident_model import ChatCall, ResidentModel
from llava_edge.server.settings import ServerSettings
from llava_edge.server.task_errors import shutdown_error
from llava_edge.server.task_results import Outcome
from llava_edge.server.work_options import PRIORITIES

_log = logging.getLogger("llava_edge.server.model_worker")


class ModelWorker:
    """Admits, reads, queues, runs, cancels and completes every caption job; see the module docstring."""

    def __init__(self, resident: ResidentModel, settings: ServerSettings):
        self.resident, self.settings = resident, settings
        self.intake = ImageIntake(settings)
        self._queue = JobQueue(resident.start_model, settings.min_residency)
        """Jobs whose images are read, waiting for the model (admission bounds them, see ``admit``)."""
        self._jobs: set[Job] = set()
        """Every admitted job that has no outcome yet: reading its images, queued, running or set aside."""
        self.draining = threading.Event()
        """Set by ``begin_shutdown``: new jobs are refused."""
        self.hurried = threading.Event()
        """Set by ``hurry``: the drain ends now."""
        self._lock = threading.Lock()
        """Guards the job in hand, the drain deadline and each job's completion."""
        self._running: Job | None = None
        self._parked: Job | None = None
        """A background job set aside while ``_running`` runs in its place."""
        self._deadline = float("inf")
        self._abandoned = False
        self._drainer: threading.Thread | None = None
        self.thread = ModelThread(self._queue, resident, self._run_job, wanted=lambda: self.wanted)
        self._readers: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if not self.thread.thread.is_alive() and not self.thread.stopping.is_set():
            self.thread.thread.start()

    @property
    def alive(self) -> bool:
        """True while the model thread runs (it may be inside a caption past the shutdown deadline)."""
        return self.thread.thread.is_alive()

    def begin_shutdown(self, timeout: float | None = None) -> None:
        """Refuse new jobs from now on and give the admitted ones ``timeout`` seconds (default: the settings'
        ``shutdown_timeout``) to finish; a later call may only shorten that. Returns at once."""
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        with self._lock:
            self._deadline = min(self._deadline, time.monotonic() + timeout)
            self.draining.set()
            if self._drainer is None:
                self._drainer = threading.Thread(target=self._drain, name="llava-edge-drain", daemon=True)
                self._drainer.start()

    def hurry(self) -> None:
        """End the drain now (a second signal). Safe from a signal handler: it takes no lock."""
        self.hurried.set()

    def stop(self, grace: float) -> None:
        """Drain (``begin_shutdown``), then give a caption cancelled at the deadline ``grace`` seconds to unwind."""
        self.begin_shutdown()
        if self._drainer is not None:
            self._drainer.join()  # returns by the deadline: the drain never waits on the model itself
        deadline = time.monotonic() + grace
        while self.alive and time.monotonic() < deadline and not self.hurried.is_set():
            self.thread.thread.join(0.1)

    def _drain(self) -> None:
        """Wait until every admitted job is done or the deadline passes; then fail the rest."""
        while time.monotonic() < self._deadline and not self.hurried.is_set():
            with self._lock:
                if not self._jobs:
                    break
            time.sleep(0.05)
        with self._lock:
            self._abandoned = True
            running = self._running
            leftovers, started = list(self._jobs), (self._running, self._parked)
        self.thread.stopping.set()
        failed = sum(self.complete(job, job.failed(shutdown_error(started=job in started))) for job in leftovers)
        for job in leftovers:  # answered: whatever runs or is set aside stops at its next step
            job.abandoned.set()
            if job.chat is not None:
                job.chat.cancelled.set()
        if running is not None:  # its job has its outcome: now llama.cpp may drop the rest of the caption
            self.resident.captioner.runtime.cancel()
        if failed:
            _log.warning("shutdown: %d accepted caption tasks did not finish by the deadline and were failed "
                         "(serviceUnavailable)", failed)

    # -- state ----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running is not None

    @property
    def wanted(self) -> bool:
        """True while an admitted job (reading its images, queued or running) wants the model."""
        return bool(self._jobs)

    def queue_depths(self) -> dict[str, int]:
        """Admitted jobs not started yet (reading their images or queued), by priority class."""
        with self._lock:
            return {priority: len(self._waiting(priority)) for priority in PRIORITIES}

    def _waiting(self, priority: str) -> list[Job]:
        """Admitted jobs of a class not started yet, under the lock. The running (or parked) job counts off only
        while it is one of them: a drain completes it before the model is done with it."""
        started = (self._running, self._parked)
        return [job for job in self._jobs if job.priority == priority and job not in started]

    # -- admission ------------------------------------------------------------------------------

    def admit(self, job: Job, base_url: str) -> None:
        """Take ``job`` in and start reading its images, unless its model is pinned out, its class is full or the
        server is shutting down.

        Raises:
            InvalidRequestError: the model is pinned out (``--no-swap``); ServerBusyError: no place.
        """
        self.resident.refuse_unpinned(job.model)
        with self._lock:  # the drain collects leftovers under this lock: no job slips in after it
            admitted = not self.draining.is_set() and len(self._waiting(job.priority)) < self.settings.max_queue
            if admitted:
                self._jobs.add(job)
        if not admitted:
            raise ServerBusyError(
                "The server is shutting down; send the task again when it is back." if self.draining.is_set()
                else f"The server is busy: {self.settings.max_queue} {job.priority} caption tasks are already "
                "waiting. Retry in a few seconds.")
        reader = asyncio.create_task(self._read_then_queue(job, base_url))
        self._readers.add(reader)  # kept referenced until done
        reader.add_done_callback(self._readers.discard)

    async def chat(self, call: ChatCall, *, base_url: str, client: str = "") -> Outcome:
        """A chat call (OpenAI, Responses, Ollama, the page) through the same admission, image reading and model
        as Runware tasks: its outcome's ``result`` is the ``CaptionResult``; errors come as a failed outcome.
        ``cancel_chat`` stops it (its client left)."""
        job = Job(chat=call, model=call.model or self.resident.start_model, client=client)
        try:
            self.admit(job, base_url)
        except LlavaEdgeError as err:
            return Outcome.failure(err)
        return await asyncio.shield(asyncio.wrap_future(job.future))

    async def _read_then_queue(self, job: Job, base_url: str) -> None:
        """Read the job's images outside the model thread (``ImageIntake``), then queue it for the model."""
        try:
            job.images = [] if job.load_only else await self.intake.read(job, self.resident.captioner, base_url)
        except LlavaEdgeError as err:
            self.complete(job, job.failed(err))
            return
        except Exception:
            _log.exception("reading the images of %s failed unexpectedly", job.label)
            self.complete(job, job.failed_unexpectedly())
            return
        with self._lock:
            if not job.completed.is_set():  # else the drain (or the client's leaving) already answered it
                self._queue.put(job)

    # -- the model thread -----------------------------------------------------------------------

    def _run_job(self, job: Job) -> None:
        """In the model thread: run one job the queue handed out, unless it was answered meanwhile. An interactive
        job may run while a background one is parked (``model_thread``): that one is the running job again after."""
        with self._lock:
            parked = self._running  # a background job this one runs in the place of
        try:
            with self._lock:
                skip = self._abandoned or job.completed.is_set()
                self._running, self._parked = (None if skip else job), parked
            if not skip:
                self.complete(job, self.thread.caption(job))
        except Exception:
            _log.exception("%s failed unexpectedly", job.label)
            self.complete(job, job.failed_unexpectedly())
        finally:
            with self._lock:
                self._running, self._parked = parked, None

    # -- cancellation and completion ------------------------------------------------------------

    def abandon(self, which: Callable[[Job], bool], reason: str) -> None:
        """Nobody waits for the job ``which`` picks any more: a job running stops at its next step (a llama.cpp
        batch under way included); one not running yet is answered cancelled at once. A Runware task whose
        result is wanted unattended (async, webhook, upload) is never abandoned."""
        with self._lock:
            job = next((job for job in self._jobs if which(job)), None)
            running = job is not None and job is self._running
        if job is None or job.wanted_unattended:
            return
        job.abandoned.set()
        if job.chat is not None:
            job.chat.cancelled.set()
        if running:
            self._cancel_if_running(lambda running_job: running_job is job)
        else:
            self._queue.remove(job)
            self.complete(job, job.failed(CaptionCancelledError(reason)))

    def cancel_chat(self, call: ChatCall) -> None:
        """Nobody waits for this chat call's answer any more (its client left): see ``abandon``."""
        call.cancelled.set()
        self.abandon(lambda job: job.chat is call, "The client left before this call ran.")

    def _cancel_if_running(self, which: Callable[[Job], bool]) -> None:
        """Cancel the caption in the model if the running job is ``which`` one (and not answered yet), inside
        llama.cpp. Under the lock, so a job that just ended cannot have its successor cancelled."""
        with self._lock:
            job = self._running
            if job is not None and not job.completed.is_set() and which(job):
                self.resident.captioner.runtime.cancel()

    def complete(self, job: Job, outcome: Outcome) -> bool:
        """Answer a job once (its ``on_outcome`` first): ``False`` when it was already completed (a caption that
        ends after the drain failed it)."""
        with self._lock:
            if job.completed.is_set():
                _log.info("%s already has an outcome (the shutdown deadline passed); this one is dropped", job.label)
                return False
            job.completed.set()
            self._jobs.discard(job)
        if job.on_outcome is not None:
            try:
                job.on_outcome(outcome)
            except Exception:  # the job is still answered
                _log.exception("keeping or delivering the outcome of %s failed", job.label)
        try:
            job.future.set_result(outcome)
        except InvalidStateError:
            pass  # the caller went away; a Runware outcome is still kept for getResponse
        return True
