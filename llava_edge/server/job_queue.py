"""The jobs waiting for the model, taken in the order ``queue_policy.next_job`` decides, and the interactive jobs a
parked background job lets run in its place (``take_between``). Thread-safe: the event loop puts jobs in, the model
worker takes them out."""

from __future__ import annotations

import threading
import time

from llava_edge.server.jobs import Job
from llava_edge.server.queue_policy import Residency, background_turn, next_job, wait_before_swap
from llava_edge.server.work_options import INTERACTIVE


class JobQueue:
    """Jobs whose images are read; see the module docstring."""

    def __init__(self, resident_model: str, min_residency: float):
        self._jobs: list[Job] = []
        self._ready = threading.Condition()
        self._residency = Residency(resident_model, float("-inf"), min_residency)  # nobody asked for it yet
        self._streak = 0
        """Interactive jobs taken in a row while background work waited (``queue_policy.BACKGROUND_SHARE``)."""

    def put(self, job: Job) -> None:
        """Queue ``job`` (stamped with its arrival); a job for the resident model counts as asking for it."""
        with self._ready:
            job.arrived = time.monotonic()
            self._asked(job)
            self._jobs.append(job)
            self._ready.notify()

    def take(self, timeout: float) -> Job | None:
        """The next job by the policy, waiting up to ``timeout`` seconds for one; None when none is due."""
        deadline = time.monotonic() + timeout
        with self._ready:
            while True:
                now = time.monotonic()
                job = next_job(self._jobs, self._residency, now, self._streak)
                if job is not None:
                    if job.priority == INTERACTIVE:  # a background job's share is served by its first step
                        waits = any(other.priority != INTERACTIVE for other in self._jobs if other is not job)
                        self._streak = self._streak + 1 if waits else 0
                    self._jobs.remove(job)
                    self._asked(job)
                    return job
                due = wait_before_swap(self._jobs, self._residency, now)
                pause = min(deadline - now, timeout if due is None else due)
                if pause <= 0:
                    return None
                self._ready.wait(pause)

    def background_served(self) -> None:
        """A background job ended: whatever share it was owed, it had (even one that failed before a step)."""
        with self._ready:
            self._streak = 0

    def wanted_between(self, stepped: bool) -> bool:
        """Asked before each step of a running background job (``stepped``: it has taken one since it started or
        was last asked, which serves background work's share): True when an interactive job for the resident
        model waits to run in its place and background work is not owed the model."""
        with self._ready:
            if stepped:
                self._streak = 0
            return not background_turn(self._streak) and any(self._between())

    def take_between(self) -> Job | None:
        """The next interactive job for the resident model, to run while a background job is parked; None when
        there is none, or background work is owed the model (``BACKGROUND_SHARE`` ran in a row)."""
        with self._ready:
            jobs = self._between()
            if not jobs or background_turn(self._streak):
                return None
            job = min(jobs, key=lambda waiting: waiting.arrived)
            self._jobs.remove(job)
            self._asked(job)
            self._streak += 1
            return job

    def _between(self) -> list[Job]:
        return [job for job in self._jobs if job.priority == INTERACTIVE and job.model == self._residency.model]

    def unloaded(self) -> None:
        """The resident model was unloaded when idle: nobody is asking for it, so a job for another model need not
        wait out the minimum residency."""
        with self._ready:
            self._residency = Residency(self._residency.model, float("-inf"), self._residency.min_residency)
            self._ready.notify()

    def loaded(self, model: str) -> None:
        """``model`` is resident now (a swap loaded it for a job: that counts as asking for it)."""
        with self._ready:
            self._residency = Residency(model, time.monotonic(), self._residency.min_residency)

    def remove(self, job: Job) -> bool:
        """Take ``job`` out without running it (its client left); False when it is not queued."""
        with self._ready:
            if job not in self._jobs:
                return False
            self._jobs.remove(job)
            return True

    def __len__(self) -> int:
        with self._ready:
            return len(self._jobs)

    def _asked(self, job: Job) -> None:
        if job.model == self._residency.model:
            self._residency = Residency(job.model, time.monotonic(), self._residency.min_residency)
