"""Ctrl-C and SIGTERM for a batch run: stop at the image in hand's next step, not mid-write."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Ctrl-C or SIGTERM ends a run at the image in hand's next step (a CLIP tile, a prefill batch or a
    token; that image gets no record), every record written complete and synced; a second one ends the
    process at once. (A handler that raises could fire inside llama.cpp's log callback, where ctypes
    swallows the exception.)"""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, signal.SIG_DFL)

    previous = {number: signal.signal(number, request_stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
