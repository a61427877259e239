"""Bounded HTTP(S) transfers with the standard library: image fetches now, webhooks and uploads later.

Every transfer has a per-read timeout, a total deadline and a byte cap, and only http(s) URLs are
allowed. ``allowed_hosts`` (when given) limits which hosts may be contacted at all.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

_CHUNK = 64 * 1024


class TransferError(Exception):
    """A URL could not be fetched within the limits; the message says why."""


@dataclass(frozen=True)
class TransferLimits:
    """Limits for one transfer."""

    timeout: float = 10.0
    """Seconds to connect and between reads."""
    deadline: float = 30.0
    """Seconds for the whole transfer, however slowly bytes trickle in."""
    max_bytes: int = 20 * 1024 * 1024
    allowed_hosts: Collection[str] | None = None
    """Host names that may be contacted; ``None`` allows any."""


def check_url(url: str, limits: TransferLimits) -> None:
    """Raise ``TransferError`` unless ``url`` is http(s) with a host the limits allow."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TransferError(f"only http(s) URLs are allowed, got {url[:80]!r}")
    if limits.allowed_hosts is not None and parts.hostname not in limits.allowed_hosts:
        raise TransferError(f"host {parts.hostname!r} is not in the allowed hosts")


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL the same limits allow (no ftp:, no other hosts)."""

    def __init__(self, limits: TransferLimits):
        self.limits = limits

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        try:
            check_url(newurl, self.limits)
        except TransferError as err:
            raise TransferError(f"redirect refused: {err}") from None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open(request: urllib.request.Request, limits: TransferLimits):  # type: ignore[no-untyped-def]
    opener = urllib.request.build_opener(_CheckedRedirects(limits))
    return opener.open(request, timeout=limits.timeout)


def fetch_bytes(url: str, limits: TransferLimits) -> tuple[bytes, str]:
    """GET ``url`` and return ``(body, content_type)``.

    Raises:
        TransferError: bad scheme or host, HTTP error, timeout, deadline or size cap exceeded.
    """
    check_url(url, limits)
    request = urllib.request.Request(url, headers={"User-Agent": "llava-edge", "Accept": "image/*"})
    try:
        with _open(request, limits) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes:
                raise TransferError(f"the body is {int(declared)} bytes; the limit is {limits.max_bytes}")
            body = _read_bounded(response, limits)
            declared_type = response.headers.get("Content-Type")
            return body, response.headers.get_content_type() if declared_type else ""
    except urllib.error.HTTPError as err:
        raise TransferError(f"the server answered HTTP {err.code}") from err
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TransferError(f"the request failed: {reason}") from err


def _read_bounded(response: object, limits: TransferLimits) -> bytes:
    started = time.monotonic()
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = response.read1(_CHUNK)  # type: ignore[attr-defined]  # returns what has arrived, so the deadline holds
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limits.max_bytes:
            raise TransferError(f"the body exceeds the limit of {limits.max_bytes} bytes")
        if time.monotonic() - started > limits.deadline:
            raise TransferError(f"the transfer took longer than {limits.deadline:g} s")
        chunks.append(chunk)


def send_json(url: str, payload: bytes, *, method: str, limits: TransferLimits) -> int:
    """POST or PUT a JSON body and return the HTTP status (an HTTP error status is returned, not raised).

    Raises:
        TransferError: bad scheme or host, connection failure or timeout.
    """
    check_url(url, limits)
    request = urllib.request.Request(
        url, data=payload, method=method, headers={"Content-Type": "application/json", "User-Agent": "llava-edge"}
    )
    try:
        with _open(request, limits) as response:
            response.read(_CHUNK)
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        raise TransferError(f"the request failed: {getattr(err, 'reason', err)}") from err
