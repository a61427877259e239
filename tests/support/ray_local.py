"""A local Ray instance for tests that SIGTERM still stops cleanly."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


@contextmanager
def local_ray(**init_options: Any) -> Iterator[str]:
    """``ray.init(**init_options)`` for the block; yields the GCS address (a CLI process can join it).

    ``ray.init`` replaces the SIGTERM handler with one that raises ``SystemExit`` wherever the main thread
    is: pytest records that as one failed test and runs on (and Ray's core worker may then abort). While
    Ray is up, SIGTERM raises ``KeyboardInterrupt`` instead, so pytest stops the run and its teardown shuts
    Ray down (its helper processes would outlive a process killed outright); the previous handler comes
    back after ``ray.shutdown``.
    """
    import ray

    previous = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(**init_options)
        signal.signal(signal.SIGTERM, _interrupt)
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
