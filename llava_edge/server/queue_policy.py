"""Which queued caption job the model takes next: a pure policy (no clock, no locks, no I/O), so the model worker
and its tests share it.

Jobs for the resident model come before jobs that need a swap, then arrival order. A swap-needing job is taken
once nothing queued wants the resident model AND the resident model has not been asked for within the minimum
residency (``min_residency`` seconds), or once that job has waited longer than the minimum residency. So a client
that alternates models one request at a time causes at most one swap per minimum residency, while a model nobody
asks for any more is swapped out at once, and no job waits for a swap much longer than the residency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar


class Queued(Protocol):
    """What the policy reads of a queued job."""

    @property
    def model(self) -> str:
        """The id of the model that must answer it."""

    @property
    def arrived(self) -> float:
        """When it was queued (a monotonic clock's seconds)."""


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


def next_job(queued: Sequence[Job], resident: Residency, now: float) -> Job | None:
    """The job to run now, or None to wait (nothing queued, or only swap-needing jobs whose time has not come).

    Args:
        queued: the waiting jobs, in any order.
        resident: the loaded model, when it was last asked for, and the minimum residency.
        now: the current time on the clock of ``arrived`` and ``last_asked``.
    """
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
