"""What the server knows about caption tasks: live ones (for ``conflictTaskUUID``) and finished ones
(for ``getResponse``), each finished result kept for its ttl. Thread-safe; pure Python."""

from __future__ import annotations

import heapq
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llava_edge.errors import ConflictTaskUUIDError, LlavaEdgeError, TaskNotFoundError
from llava_edge.server.public_errors import for_client, public_message


@dataclass(frozen=True)
class Outcome:
    """The answer to one task: a ``data`` item, or an ``errors`` item with the error behind it.

    The error is kept ``detached``: outcomes outlive their caption (a Runware result for the task's ttl, a chat
    failure until its answer is sent), and an error with its traceback would keep that caption's frames alive,
    decoded pictures included. Its message is the one a client may see (``public_errors.for_client``: file names,
    no folders), in the error and in the item.
    """

    item: dict[str, Any]
    error: LlavaEdgeError | None = None
    result: Any = None
    """For a chat call (OpenAI, Ollama): the ``CaptionResult`` with its timings."""

    def __post_init__(self) -> None:
        if self.error is not None:
            for_client(detached(self.error))
            if isinstance(self.item.get("message"), str):
                self.item["message"] = public_message(self.item["message"])

    @classmethod
    def failure(cls, error: LlavaEdgeError) -> Outcome:
        return cls(for_client(error).to_runware(), error)

    @property
    def ok(self) -> bool:
        return self.error is None

    def frame(self) -> dict[str, list[dict[str, Any]]]:
        """The envelope of a single answer: ``{"data": [item]}`` or ``{"errors": [item]}``."""
        return {"data" if self.ok else "errors": [self.item]}

    def with_status(self) -> Outcome:
        """The item as ``getResponse`` and deliveries show a finished task: with ``status``."""
        return Outcome({**self.item, "status": "success" if self.ok else "error"}, self.error)


def detached(error: LlavaEdgeError) -> LlavaEdgeError:
    """``error`` without what ties it to the code that raised it, for keeping: its traceback (whose frames hold
    their locals: image bytes, decoded pictures) and the exceptions it was raised from or while handling (each
    with a traceback of its own). The message, code and fields stay. Returns the same error."""
    error.__traceback__ = None
    error.__cause__ = None  # also sets __suppress_context__
    error.__context__ = None
    return error


_EXPIRY_SLACK = 64
"""Stale expiry entries tolerated beyond one per kept result before the heap is rebuilt."""


@dataclass
class _Record:
    ttl: float
    outcome: Outcome | None = None
    expires_at: float = float("inf")


class TaskRegistry:
    """Caption tasks by taskUUID: running until ``finish``, then kept for ``ttl`` seconds.

    Args:
        max_kept: finished results kept at most; beyond it the oldest finished ones are dropped.
        clock: seconds, monotonic (injectable for tests of expiry).

    Expiry times sit in a heap; an entry whose result was dropped, discarded or finished again stays there
    until it comes due, so the heap is rebuilt from the kept results whenever it holds more than twice as
    many entries as results (plus a little slack): it never outgrows ``2 * max_kept + 64``.
    """

    def __init__(self, *, max_kept: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._expiry: list[tuple[float, str]] = []
        self._max_kept = max_kept
        self._clock = clock

    def begin(self, task_uuid: str, ttl: float, *, task_type: str | None = None) -> None:
        """Register a new task.

        Raises:
            ConflictTaskUUIDError: the taskUUID belongs to a task that runs or whose result is still kept.
        """
        with self._lock:
            self._purge()
            if task_uuid in self._records:
                raise ConflictTaskUUIDError(
                    f"taskUUID {task_uuid} is already in use by a task that is running or whose result is "
                    "still kept. Send a fresh UUID v4, or poll it with getResponse.",
                    task_type=task_type,
                    task_uuid=task_uuid,
                )
            self._records[task_uuid] = _Record(ttl)

    def discard(self, task_uuid: str) -> None:
        """Forget a task that was registered but never started (for example when the queue was full)."""
        with self._lock:
            self._records.pop(task_uuid, None)
            self._finished.pop(task_uuid, None)

    def finish(self, task_uuid: str, outcome: Outcome) -> None:
        """Keep a task's outcome for its ttl, from now."""
        with self._lock:
            record = self._records.get(task_uuid)
            if record is None:
                return
            record.outcome = outcome
            record.expires_at = self._clock() + record.ttl
            heapq.heappush(self._expiry, (record.expires_at, task_uuid))
            self._finished[task_uuid] = None
            while len(self._finished) > self._max_kept:
                oldest, _ = self._finished.popitem(last=False)
                self._records.pop(oldest, None)
            if len(self._expiry) > 2 * len(self._finished) + _EXPIRY_SLACK:
                self._compact()

    def lookup(self, task_uuid: str) -> Outcome | None:
        """The outcome of a finished task, or ``None`` while it is still queued or running.

        Raises:
            TaskNotFoundError: no task has this UUID, or its result has expired.
        """
        with self._lock:
            self._purge()
            record = self._records.get(task_uuid)
        if record is None:
            raise TaskNotFoundError(
                f"No task {task_uuid} is running or kept here; results are kept for the task's ttl "
                "after it finishes. Submit the task again.",
                task_uuid=task_uuid,
            )
        return record.outcome

    def counts(self) -> tuple[int, int]:
        """``(live, finished)``: tasks queued or running, and finished results kept."""
        with self._lock:
            self._purge()
            return len(self._records) - len(self._finished), len(self._finished)

    def _compact(self) -> None:
        """Rebuild the expiry heap from the kept results alone, leaving out the stale entries."""
        self._expiry = [(self._records[task_uuid].expires_at, task_uuid) for task_uuid in self._finished]
        heapq.heapify(self._expiry)

    def _purge(self) -> None:
        now = self._clock()
        while self._expiry and self._expiry[0][0] <= now:
            expires_at, task_uuid = heapq.heappop(self._expiry)
            record = self._records.get(task_uuid)
            if record is not None and record.expires_at == expires_at:
                del self._records[task_uuid]
                self._finished.pop(task_uuid, None)
