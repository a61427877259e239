"""How long the model stays loaded after an answer (Ollama's ``keep_alive``): parsing a value as Ollama does, the
timer a request sets, and the clock the model worker reads to unload an idle model.

A value is a JSON number of seconds, a numeric string, or a Go duration (``"5m"``, ``"1h30m"``, ``"300ms"``,
``"-1s"``). Any negative value means forever; ``0`` unloads right after the answer. A request's value sets the
timer (Ollama's rule: the last answer decides), capped by ``--max-keep-alive`` when the operator set one; a
request without one gets the server's ``--keep-alive``.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from llava_edge.errors import InvalidRequestError

FOREVER = math.inf
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_FAR_FUTURE_YEARS = 292
"""Ollama's forever is Go's largest duration (about 292 years): ``/api/ps`` shows an expiry that far away."""


def parse_keep_alive(value: object, *, parameter: str = "keep_alive") -> float:
    """Seconds the model stays loaded for ``value`` (``FOREVER`` for any negative value).

    Raises:
        InvalidRequestError: not a number, a numeric string or a Go duration; the message shows the forms.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _invalid(value, parameter)
    seconds = _duration(value.strip(), parameter) if isinstance(value, str) else float(value)
    if math.isnan(seconds):
        raise _invalid(value, parameter)
    return FOREVER if seconds < 0 else seconds


def requested_keep_alive(body: Mapping[str, Any], name: str = "keep_alive") -> float | None:
    """A request body's own keep-alive (field ``name``) in seconds; None when it sets none.

    Raises:
        InvalidRequestError: the value is not a duration (the API answers 400 in its own shape).
    """
    value = body.get(name)
    return None if value is None else parse_keep_alive(value, parameter=name)


def _duration(text: str, parameter: str) -> float:
    """A numeric string (seconds) or a Go duration."""
    try:
        return float(text)
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    parts = _PART.findall(body)
    if not body or "".join(number + unit for number, unit in parts) != body:
        raise _invalid(text, parameter)
    return sign * sum(float(number) * _UNITS[unit] for number, unit in parts)


def _invalid(value: object, parameter: str) -> InvalidRequestError:
    shown = repr(value)[:40]
    return InvalidRequestError(
        f"{parameter} {shown} is not a duration: send seconds (300), a duration such as \"5m\", \"1h30m\" or "
        "\"300ms\", 0 to unload after the answer, or a negative value to keep the model loaded.",
        parameter=parameter)


def describe(seconds: float) -> str:
    """``seconds`` for the log and the docs: ``forever``, or seconds."""
    return "forever" if seconds == FOREVER else f"{seconds:g} s"


def timer_for(requested: float | None, default: float, maximum: float | None) -> float:
    """Seconds the model stays loaded after an answer: the request's own value, else the server's default; at
    most ``maximum`` when the operator set one."""
    seconds = default if requested is None else requested
    return seconds if maximum is None else min(seconds, maximum)


class IdleClock:
    """When the resident model's keep-alive expires. Set after each answer (and at the start); the model worker
    unloads the model once it has expired and no admitted job wants it."""

    def __init__(self, seconds: float):
        self._lock = threading.Lock()
        self._seconds = seconds
        self._since = time.monotonic()
        self._wall_since = time.time()

    def restart(self, seconds: float) -> None:
        """The model was just used (or loaded): it stays loaded ``seconds`` from now."""
        with self._lock:
            self._seconds, self._since, self._wall_since = seconds, time.monotonic(), time.time()

    @property
    def seconds(self) -> float:
        """The keep-alive last set."""
        return self._seconds

    def expired(self) -> bool:
        """True once the keep-alive has run out (at once for ``0``; never for ``FOREVER``)."""
        with self._lock:
            return time.monotonic() - self._since >= self._seconds

    def idle_for(self) -> float:
        """Seconds since the model was last used."""
        with self._lock:
            return time.monotonic() - self._since

    def expires_at(self) -> str:
        """When it expires, as ``/api/ps`` shows it (ISO 8601, UTC; about 292 years away for forever)."""
        with self._lock:
            since, seconds = self._wall_since, self._seconds
        start = datetime.fromtimestamp(since, UTC)
        when = start + (timedelta(days=365.25 * _FAR_FUTURE_YEARS) if seconds == FOREVER
                        else timedelta(seconds=seconds))
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
