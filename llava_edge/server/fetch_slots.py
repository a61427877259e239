"""The server's image fetch slots: a few network fetches at a time, granted round-robin between clients by
``read_policy.next_fetch``. Lives on the event loop (no locks); a waiter that is cancelled (its request's
deadline passed, its client left) leaves the line, and a slot granted to it goes on to the next one."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from llava_edge.server.read_policy import next_fetch


@dataclass(eq=False)
class _Waiter:
    client: str
    order: int
    granted: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class FetchSlots:
    """``slots`` network fetches at a time; see the module docstring."""

    def __init__(self, slots: int):
        self._free = slots
        self._waiting: list[_Waiter] = []
        self._last_served: dict[str, int] = {}
        self._stamps = itertools.count()
        self._arrivals = itertools.count()

    @asynccontextmanager
    async def slot(self, client: str) -> AsyncIterator[None]:
        """Hold one slot for ``client`` (waiting for its turn) while the block runs."""
        await self._acquire(client)
        try:
            yield
        finally:
            self._release()

    @property
    def waiting(self) -> int:
        """Images waiting for a slot."""
        return len(self._waiting)

    def next_in_line(self) -> str | None:
        """The client whose image gets the next free slot; None when nothing waits."""
        waiter = next_fetch(self._waiting, self._last_served)
        return None if waiter is None else waiter.client

    async def _acquire(self, client: str) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            self._last_served[client] = next(self._stamps)
            return
        waiter = _Waiter(client, next(self._arrivals))
        self._waiting.append(waiter)
        try:
            await waiter.granted
        except BaseException:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            elif waiter.granted.done() and not waiter.granted.cancelled():
                self._release()  # granted just as it was cancelled: pass the slot on
            raise

    def _release(self) -> None:
        self._free += 1
        while self._free > 0 and (waiter := next_fetch(self._waiting, self._last_served)) is not None:
            self._waiting.remove(waiter)
            self._free -= 1
            self._last_served[waiter.client] = next(self._stamps)
            waiter.granted.set_result(None)
