"""Graceful shutdown under uvicorn: the first signal starts the task service's drain, a second one stops
all waiting, and the signal uvicorn re-raises after it stopped is absorbed (exit status 0)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn

from llava_edge.server.task_service import TaskService

_log = logging.getLogger("llava_edge.server.app")


class DrainingServer(uvicorn.Server):
    """uvicorn's server that starts the task service's drain as soon as it decides to exit (from the
    event loop, not inside the signal handler), and stops all waiting on a second signal (uvicorn itself
    only cuts its own wait short, and only on a second Ctrl-C)."""

    def __init__(self, config: uvicorn.Config, service: TaskService):
        super().__init__(config)
        self.service = service

    async def on_tick(self, counter: int) -> bool:
        should_exit = await super().on_tick(counter)
        if should_exit:
            self.service.begin_shutdown()
        return should_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            self.force_exit = True
            self.service.hurry()
        super().handle_exit(sig, frame)


@contextmanager
def signals_absorbed() -> Iterator[None]:
    """uvicorn re-raises the signal that stopped it once it has shut down, which would kill the process
    with SIGTERM (exit -15) or raise KeyboardInterrupt. Ignore that re-raise; restore the handlers after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    numbers = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, _ignore) for number in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _ignore(signum: int, frame: FrameType | None) -> None:
    _log.debug("signal %d after shutdown ignored", signum)
