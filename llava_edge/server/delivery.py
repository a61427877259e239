"""Deliver finished results to ``webhookURL`` (POST) and ``uploadEndpoint`` (PUT) in the background.

A delivery is retried with exponential back-off until the endpoint answers 2xx or the attempts run out.
Waiting for a retry blocks nothing: due deliveries sit in a time-ordered heap served by a few threads,
so one slow or dead endpoint never delays captioning or other endpoints; each attempt ends at the limits'
deadline (resolving, connecting, sending and the answer's headers together). A delivery that finally fails
is logged (without the URL's query, which often holds a token) and never fails its task; so is one to a
host or address the limits do not allow (``outbound``: private addresses unless the operator allows them),
which is not attempted again. Redirects are never followed: a 3xx answer is a final failure.
``close`` keeps delivering for a bounded time.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from llava_edge.outbound import RefusedAddressError, TransferError, TransferLimits, check_url, send_json

MAX_BACKOFF_S = 30.0
_log = logging.getLogger("llava_edge.server.delivery")


@dataclass(frozen=True)
class _Delivery:
    url: str
    method: str
    body: bytes
    attempt: int = 1


class Deliverer:
    """Background sender of JSON bodies with retries.

    Args:
        attempts: tries per delivery (the first one included).
        backoff: seconds before the first retry; doubled after each failure, capped at 30 s.
        limits: deadline, timeouts, allowed hosts and address policy for each attempt.
        max_pending: deliveries waiting at most; more are dropped and logged.
        threads: senders working at once (the bound on concurrent attempts).
    """

    def __init__(
        self, *, attempts: int, backoff: float, limits: TransferLimits, max_pending: int = 1000, threads: int = 2
    ):
        self.attempts = attempts
        self.backoff = backoff
        self.limits = limits
        self.max_pending = max_pending
        self._heap: list[tuple[float, int, _Delivery]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._stopping = False
        self._in_flight = 0
        self._threads = [
            threading.Thread(target=self._serve, name=f"llava-edge-delivery-{n}", daemon=True) for n in range(threads)
        ]
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()

    def close(self, timeout: float, *, cancel: threading.Event | None = None) -> None:
        """Keep delivering (retries included) until nothing is pending, ``timeout`` seconds pass or ``cancel``
        is set; then stop."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._started and (self._heap or self._in_flight) and not (cancel and cancel.is_set()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(min(left, 0.1))
        self.stop()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the senders; deliveries still waiting are dropped and attempts in flight abandoned (logged).
        Waits at most ``timeout`` seconds in all for the sender threads (they are daemons)."""
        with self._wake:
            self._stopping = True
            dropped, in_flight = len(self._heap), self._in_flight
            self._heap.clear()
            self._wake.notify_all()
        if dropped or in_flight:
            _log.warning("server stopping: %d result deliveries dropped, %d abandoned in flight", dropped, in_flight)
        deadline = time.monotonic() + timeout
        if self._started:
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def pending(self) -> int:
        """Deliveries waiting or being attempted."""
        with self._wake:
            return len(self._heap) + self._in_flight

    def submit(self, url: str, method: str, item: dict[str, Any]) -> bool:
        """Queue ``item`` as JSON for ``url``; ``False`` when it was dropped (host not allowed, queue full
        or stopping)."""
        try:
            check_url(url, self.limits)
        except TransferError as err:
            _log.warning("%s to %s refused: %s", method, _redact(url), err)
            return False
        body = json.dumps(item).encode()
        return self._schedule(_Delivery(url, method, body), time.monotonic())

    def _schedule(self, delivery: _Delivery, due: float) -> bool:
        with self._wake:
            if self._stopping or len(self._heap) >= self.max_pending:
                reason = "the server is stopping" if self._stopping else f"{len(self._heap)} deliveries already wait"
                _log.warning("%s to %s dropped: %s", delivery.method, _redact(delivery.url), reason)
                return False
            heapq.heappush(self._heap, (due, next(self._order), delivery))
            self._wake.notify_all()  # all: close() may wait on the same condition
            return True

    def _serve(self) -> None:
        while True:
            delivery = self._next_due()
            if delivery is None:
                return
            try:
                self._attempt(delivery)
            finally:
                with self._wake:
                    self._in_flight -= 1
                    self._wake.notify_all()

    def _next_due(self) -> _Delivery | None:
        with self._wake:
            while not self._stopping:
                if self._heap and self._heap[0][0] <= time.monotonic():
                    self._in_flight += 1
                    return heapq.heappop(self._heap)[2]
                wait = self._heap[0][0] - time.monotonic() if self._heap else None
                self._wake.wait(wait)
            return None

    def _attempt(self, delivery: _Delivery) -> None:
        final = False  # a failure that retrying cannot mend
        try:
            status = send_json(delivery.url, delivery.body, method=delivery.method, limits=self.limits)
            problem = None if 200 <= status < 300 else f"HTTP {status}"
            if 300 <= status < 400:
                problem, final = f"HTTP {status}: redirects are not followed; give the final URL", True
        except RefusedAddressError as err:
            problem, final = f"refused: {err}", True
        except TransferError as err:
            problem = str(err)
        except Exception as err:
            problem = f"unexpected {type(err).__name__}: {err}"
        if problem is None:
            _log.info("%s to %s delivered (attempt %d)", delivery.method, _redact(delivery.url), delivery.attempt)
            return
        if final or delivery.attempt >= self.attempts:
            _log.warning("%s to %s failed after %d attempts: %s", delivery.method, _redact(delivery.url),
                         delivery.attempt, problem)
            return
        delay = min(self.backoff * 2 ** (delivery.attempt - 1), MAX_BACKOFF_S)
        _log.info("%s to %s failed (%s); retry in %.1f s", delivery.method, _redact(delivery.url), problem, delay)
        retry = _Delivery(delivery.url, delivery.method, delivery.body, delivery.attempt + 1)
        self._schedule(retry, time.monotonic() + delay)


def _redact(url: str) -> str:
    """The URL without query and fragment, for logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
