"""The ONE model thread: it takes the next job the queue policy picks (``job_queue``), makes the job's model
the resident one (a swap, or a reload after an idle unload), and runs the caption. A background job's caption
steps aside between two of its steps (``runtime.parking``) for interactive jobs on the resident model, which run
in its place on this thread; then it goes on where it was. Between jobs it unloads the
model once its keep-alive has expired and no admitted job wants it (``keep_alive``). A supervisor loop restarts
the worker should its loop ever raise, so no job can stop the model thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from llava_edge.errors import CaptionCancelledError, LlavaEdgeError
from llava_edge.server.job_queue import JobQueue
from llava_edge.server.jobs import Job
from llava_edge.server.resident_model import ResidentModel
from llava_edge.server.task_results import Outcome
from llava_edge.server.work_options import INTERACTIVE

_log = logging.getLogger("llava_edge.server.model_worker")


class ModelThread:
    """Runs ``handle(job)`` for each job ``queue`` hands out, in one daemon thread, until ``stopping`` is set."""

    def __init__(self, queue: JobQueue, resident: ResidentModel, handle: Callable[[Job], None],
                 wanted: Callable[[], bool]):
        self.queue = queue
        self.resident = resident
        self.stopping = threading.Event()
        """Set when the drain is over: the worker takes no further job."""
        self.restarts = 0
        """Times the supervisor restarted the worker loop (``/health``'s ``workerRestarts``)."""
        self._handle = handle
        self._wanted = wanted
        """True while an admitted job (reading its images, queued or running) wants the model."""
        self.thread = threading.Thread(target=self._supervise, name="llava-edge-model", daemon=True)

    def _supervise(self) -> None:
        """The model thread: runs the worker loop, and restarts it should it ever stop unexpectedly."""
        while not self.stopping.is_set():
            try:
                self._work()
            except BaseException:
                self.restarts += 1
                _log.exception("the model worker stopped unexpectedly; restarting it")

    def _work(self) -> None:
        while not self.stopping.is_set():
            job = self.queue.take(timeout=0.2)
            if job is not None:
                self._handle(job)
            self._unload_if_idle()

    def _unload_if_idle(self) -> None:
        """Unload the resident model when its keep-alive has expired and no admitted job wants it."""
        if self.resident.loaded and self.resident.idle.expired() and not self._wanted():
            self.resident.unload_idle()
            self.queue.unloaded()

    def caption(self, job: Job) -> Outcome:
        """Run ``job`` on its model (swapped in first when another is resident); its outcome, never raising for
        a bad job."""
        if job.load_only and job.keep_alive == 0:  # an unload request: the loop unloads once no job wants it
            self.resident.used(0.0, job.admitted)
            return Outcome({})
        try:
            if self.resident.ensure(job.model, job.chat.on_event if job.chat is not None else None):
                self.queue.loaded(job.model)
        except LlavaEdgeError as err:
            return job.failed(err)
        try:
            if job.load_only:
                return Outcome({})
            with self._interleaving(job):
                return self._run(job)
        finally:
            self.resident.used(job.keep_alive, job.admitted)
            if job.priority != INTERACTIVE:
                self.queue.background_served()

    def _interleaving(self, job: Job) -> AbstractContextManager[None]:
        """For a background job: interactive jobs may run between two of its steps."""
        if job.priority == INTERACTIVE:
            return nullcontext()
        return self.resident.captioner.runtime.interleaving(_Between(self.queue, job, self._handle))

    def _run(self, job: Job) -> Outcome:
        if job.chat is not None:
            return self.resident.run_chat(job.chat, job.images)
        captioner = self.resident.captioner
        try:  # the task's model name was resolved at admission: the resident model is the one it named
            raw = {**job.raw, "model": captioner.model_name}
            return Outcome(captioner.run_task(raw, allow_local_files=False, image=job.images[0],
                                              cancelled=job.abandoned))
        except LlavaEdgeError as err:
            return Outcome.failure(err)
        except Exception:  # its text stays in the log: it may name the server's files
            _log.exception("%s failed unexpectedly", job.label)
            return job.failed_unexpectedly()


class _Between:
    """The interactive jobs a running background job lets run in its place (``runtime.parking.Interleave``)."""

    def __init__(self, queue: JobQueue, parked: Job, handle: Callable[[Job], None]):
        self.queue, self.parked, self.handle = queue, parked, handle
        self.asked = 0

    def wanted(self) -> bool:
        """Asked before each of the job's steps: from the second on, it has taken a step since the last ask."""
        self.asked += 1
        return self.queue.wanted_between(stepped=self.asked > 1)

    def run(self) -> None:
        """Run the waiting interactive jobs (at most ``BACKGROUND_SHARE`` in a row); the parked job stops here
        when its client left meanwhile."""
        while (job := self.queue.take_between()) is not None:
            self.handle(job)
        chat = self.parked.chat
        if self.parked.completed.is_set() or self.parked.abandoned.is_set() or (chat and chat.cancelled.is_set()):
            raise CaptionCancelledError("The caption was stopped while it was set aside: its client left.")
