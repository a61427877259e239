"""API-key checks with a brake: failed attempts are counted per client address over a sliding minute, and
an address over the limit is answered ``tooManyRequests`` without its key being checked. Also where a key is
found: the ``Authorization`` header, or the first task of a Runware body (read before the rest)."""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from llava_edge.errors import AuthenticationError, TooManyAttemptsError
from llava_edge.server.settings import AUTH_TASK_TYPE, ServerSettings, check_api_key

WINDOW_S = 60.0
MAX_TRACKED_CLIENTS = 10_000
"""Addresses whose failures are remembered at most; the least recently failing are forgotten first."""


class AuthGate:
    """``verify(client, key)``: the server's one place where keys are checked (REST and WebSocket)."""

    def __init__(self, settings: ServerSettings, *, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def verify(self, client: str, presented: object) -> None:
        """Accept the key or raise.

        Raises:
            TooManyAttemptsError: ``client`` failed too often in the last minute (the key is not checked).
            AuthenticationError: the key is missing or wrong (and the failure is counted).
        """
        if self.settings.api_key is None:
            return
        self._check_rate(client)
        try:
            check_api_key(self.settings, presented)
        except AuthenticationError:
            self._count_failure(client)
            raise

    def _check_rate(self, client: str) -> None:
        with self._lock:
            recent = self._recent(client, create=False)
            if recent and len(recent) >= self.settings.auth_failures_per_minute:
                wait = max(1, round(recent[0] + WINDOW_S - self._clock()))
                raise TooManyAttemptsError(
                    f"Too many wrong API keys from {client}; wait {wait} s, then use the key the server was "
                    "started with.", task_type=AUTH_TASK_TYPE,
                )

    def _count_failure(self, client: str) -> None:
        with self._lock:
            self._recent(client, create=True).append(self._clock())
            self._failures.move_to_end(client)
            while len(self._failures) > MAX_TRACKED_CLIENTS:
                self._failures.popitem(last=False)

    def _recent(self, client: str, *, create: bool) -> deque[float]:
        """The client's failures within the window (older ones dropped); an entry is made only on ``create``."""
        failures = self._failures.setdefault(client, deque()) if create else self._failures.get(client, deque())
        horizon = self._clock() - WINDOW_S
        while failures and failures[0] <= horizon:
            failures.popleft()
        return failures


def bearer_key(authorization: str) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, else None."""
    return authorization[7:].strip() if authorization[:7].lower() == "bearer " else None


def first_task(prefix: bytes) -> Any:
    """The first task of a (possibly cut) JSON array of tasks, or the object itself; None if unreadable."""
    text = prefix.decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    index = len(text) - len(text.lstrip())
    if text[index:index + 1] == "[":
        index += 1
        index += len(text[index:]) - len(text[index:].lstrip())
    try:
        return decoder.raw_decode(text, index)[0]
    except (ValueError, RecursionError):
        return None
