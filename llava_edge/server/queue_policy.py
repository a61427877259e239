"""Which queued caption job the model takes next: a pure policy (no clock, no locks, no I/O), so the model worker
and its tests share it.

Interactive jobs come before background ones (``work_options``), except that background work keeps a minimum
share: once ``BACKGROUND_SHARE`` interactive jobs have run in a row while background work waited, background work
gets the model next (a queued background job starts, or a parked one goes on for at least one step). Within a
class, jobs for the resident model come before jobs that need a swap, then arrival order. A swap-needing job is taken
once nothing queued wants the resident model AND the resident model has not been asked for within the minimum
residency (``min_residency`` seconds), or once that job has waited longer than the minimum residency. So a client
that alternates models one request at a time causes at most one swap per minimum residency, while a model nobody
asks for any more is swapped out at once, and no job waits for a swap much longer than the residency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from llava_edge.server.work_options import INTERACTIVE

BACKGROUND_SHARE = 4
"""Interactive jobs that may run in a row while background work waits; then background work gets the model."""

class Queued(Protocol):
    """What the policy reads of a queued job."""

    @property
    def model(self) -> str:
        """The id of the model that must answer it."""

    @property
    def arrived(self) -> float:
        """When it was queued (a monotonic clock's seconds)."""

    @property
    def priority(self) -> str:
        """``interactive`` or ``background``."""


Job = TypeVar("Job", bound=Queued)


@dataclass(frozen=True)
class Residency:
    """The resident model as the policy sees it."""

    model: str
    """Its id."""
    last_asked: float
    """When a job last asked for it (arrived for it, or was taken by it; its load counts too)."""
    min_residency: float
    """Seconds it stays while it is being asked for (``ServerSettings.min_residency``)."""


def next_job(queued: Sequence[Job], resident: Residency, now: float, streak: int = 0) -> Job | None:
    """The job to run now, or None to wait (nothing queued, or only swap-needing jobs whose time has not come).

    Args:
        queued: the waiting jobs, in any order.
        resident: the loaded model, when it was last asked for, and the minimum residency.
        now: the current time on the clock of ``arrived`` and ``last_asked``.
        streak: interactive jobs run in a row while background work waited (``BACKGROUND_SHARE``).
    """
    interactive = [job for job in queued if job.priority == INTERACTIVE]
    background = [job for job in queued if job.priority != INTERACTIVE]
    classes = (background, interactive) if background_turn(streak) else (interactive, background)
    for jobs in classes:
        job = _next_in_class(jobs, resident, now)
        if job is not None:
            return job
    return None


def background_turn(streak: int) -> bool:
    """True when background work is owed the model: ``streak`` interactive jobs ran in a row while it waited."""
    return streak >= BACKGROUND_SHARE


def _next_in_class(queued: Sequence[Job], resident: Residency, now: float) -> Job | None:
    in_order = sorted(queued, key=lambda job: job.arrived)
    for job in in_order:
        if job.model == resident.model:
            return job
    if not in_order:
        return None
    oldest = in_order[0]
    idle = now - resident.last_asked >= resident.min_residency
    waited_long = now - oldest.arrived >= resident.min_residency
    return oldest if idle or waited_long else None


def wait_before_swap(queued: Sequence[Queued], resident: Residency, now: float) -> float | None:
    """Seconds until ``next_job`` could take a swap-needing job, when it takes nothing now; None when nothing
    waits. The worker sleeps at most this long (new arrivals wake it earlier)."""
    if not queued:
        return None
    oldest = min(job.arrived for job in queued)
    due = min(resident.last_asked, oldest) + resident.min_residency
    return max(0.0, due - now)
