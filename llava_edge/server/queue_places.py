"""Queue places shared between clients, a pure policy (no clock, no locks): when a priority class is full, a
client holding fewer of its places than another still gets one, and the newest waiting job of the client holding
the most gives up its place (answered ``serviceUnavailable``, as if it had come a moment too late). Places even out
between clients this way, one at a time, so one client (a batch on one connection or key) cannot keep everybody
else out; alone it may use every place. A client is a WebSocket connection, an API key or an address
(``read_policy.client_key``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class Placed(Protocol):
    """What the policy reads of a waiting job."""

    @property
    def client(self) -> str:
        """Whose it is."""

    @property
    def admitted(self) -> float:
        """When it was admitted (a monotonic clock's seconds)."""


Job = TypeVar("Job", bound=Placed)


@dataclass(frozen=True)
class Place(Generic[Job]):
    """The answer to a request for a place: admitted or not, and the job that gives up its place for it."""

    admitted: bool
    pushed_out: Job | None = None


def place_for(waiting: Sequence[Job], client: str, limit: int) -> Place[Job]:
    """Whether ``client`` gets a place in a class where ``waiting`` jobs (not started) hold places out of ``limit``.

    A full class admits ``client`` only when another client holds at least two more places than it does; that
    client's newest job is pushed out.
    """
    if len(waiting) < limit:
        return Place(True)
    holding = Counter(job.client for job in waiting)
    heaviest = max(holding, key=lambda name: (holding[name], _newest(waiting, name).admitted), default=None)
    if heaviest is None or heaviest == client or holding[heaviest] < holding[client] + 2:
        return Place(False)
    return Place(True, _newest(waiting, heaviest))


def _newest(waiting: Sequence[Job], client: str) -> Job:
    return max((job for job in waiting if job.client == client), key=lambda job: job.admitted)
