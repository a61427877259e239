"""The Responses API's store: answers kept (``store: true``, OpenAI's default) so a later request can go on
from one (``previous_response_id``) and ``GET``/``DELETE /v1/responses/{id}`` can find it.

It lives in memory, bounded three ways: at most ``max_entries`` responses, their conversations at most
``max_bytes`` together (images included), and each for ``ttl_s`` seconds. The oldest go first; an expired or
evicted id reads as unknown (404), as a deleted one does.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from llava_edge.server.conversation import Turn

MAX_STORED_RESPONSES = 512
MAX_STORED_BYTES = 128 * 1024 * 1024
STORED_RESPONSE_TTL_S = 3600.0


@dataclass(frozen=True)
class StoredResponse:
    """A kept answer: the response object as it was sent, and the whole conversation up to and including
    its answer (what ``previous_response_id`` continues)."""

    response: dict[str, Any]
    turns: tuple[Turn, ...]
    expires_at: float
    size: int


class ResponseStore:
    """Thread-safe, bounded, expiring (see the module docstring)."""

    def __init__(self, max_entries: int = MAX_STORED_RESPONSES, max_bytes: int = MAX_STORED_BYTES,
                 ttl_s: float = STORED_RESPONSE_TTL_S):
        self.max_entries, self.max_bytes, self.ttl_s = max_entries, max_bytes, ttl_s
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, response: dict[str, Any], turns: tuple[Turn, ...]) -> None:
        """Keep ``response`` (by its ``id``) with its conversation, counted in bytes (the response object as sent,
        the conversation's text and images); one larger than the whole store is not kept."""
        size = len(json.dumps(response).encode()) + sum(
            len(turn.text.encode()) + sum(len(image) for image in turn.images) for turn in turns)
        if size > self.max_bytes:
            return
        entry = StoredResponse(response, turns, time.monotonic() + self.ttl_s, size)
        with self._lock:
            self._drop(response["id"])
            self._entries[response["id"]] = entry
            self._bytes += size
            self._evict()

    def get(self, response_id: str) -> StoredResponse | None:
        """The kept response, or None when unknown, expired or deleted."""
        with self._lock:
            self._evict()
            return self._entries.get(response_id)

    def delete(self, response_id: str) -> bool:
        """Forget a response; False when it was not kept."""
        with self._lock:
            return self._drop(response_id)

    def _drop(self, response_id: str) -> bool:
        entry = self._entries.pop(response_id, None)
        if entry is not None:
            self._bytes -= entry.size
        return entry is not None

    def _evict(self) -> None:
        now = time.monotonic()
        while self._entries:
            oldest_id, oldest = next(iter(self._entries.items()))
            over = len(self._entries) > self.max_entries or self._bytes > self.max_bytes
            if not over and oldest.expires_at > now:
                return
            self._drop(oldest_id)
