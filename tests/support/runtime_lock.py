"""Whether a caption still holds a runtime's model, asked from another thread (its lock is re-entrant, so the
thread that ran the caption would always get it)."""

from __future__ import annotations

import threading
from typing import Any


def model_free(runtime: Any) -> bool:
    """True when no caption holds ``runtime`` (a ``LlavaRuntime``)."""
    got: list[bool] = []

    def try_it() -> None:
        acquired = runtime._lock.acquire(blocking=False)
        got.append(acquired)
        if acquired:
            runtime._lock.release()

    checker = threading.Thread(target=try_it)
    checker.start()
    checker.join(10)
    return got == [True]
