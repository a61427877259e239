"""Settings of ``llava-edge serve`` and the checks made on them: safe binding and API keys.

Pure Python (no web framework), so the CLI can refuse unsafe settings before loading a model.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from dataclasses import dataclass, field, replace

from llava_edge.errors import AuthenticationError, ServerConfigError
from llava_edge.outbound import TransferLimits

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
AUTH_TASK_TYPE = "authentication"


@dataclass(frozen=True)
class ServerSettings:
    """Everything ``create_app`` and ``run_server`` need besides the model."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = None
    """The key clients must present. ``None``: any key is accepted (allowed on loopback only)."""
    max_body_bytes: int = 32 * 1024 * 1024
    """Cap on a REST body or WebSocket frame: room for a 20 MiB image as base64 plus JSON."""
    max_tasks_per_request: int = 100
    max_connections: int = 64
    """Open HTTP + WebSocket connections at most; uvicorn answers 503 beyond it."""
    max_queue: int = 32
    """Caption tasks waiting for the model; one more is answered ``serviceUnavailable``."""
    result_ttl: int = 3600
    """Seconds a finished result stays available to ``getResponse`` when the task sets no ``ttl``."""
    max_kept_results: int = 10_000
    """Finished results kept at most; the oldest go first beyond this."""
    ws_idle_timeout: float = 120.0
    """A WebSocket that sends nothing (not even a ping) for this long is closed."""
    delivery_attempts: int = 5
    """Tries per webhook POST / uploadEndpoint PUT before giving up (logged)."""
    delivery_backoff: float = 0.5
    """Seconds before the first retry; doubled after each failure, capped at 30 s."""
    delivery_limits: TransferLimits = field(
        default_factory=lambda: TransferLimits(timeout=5.0, deadline=10.0, max_bytes=1024 * 1024)
    )
    """Per-attempt limits for webhook and uploadEndpoint requests (``allowed_hosts`` restricts targets)."""
    max_pending_deliveries: int = 1000
    fetch_hosts: frozenset[str] | None = None
    """Hosts a request may make the server contact: image URLs (inputs and imageUpload), webhookURL and
    uploadEndpoint share this one list. ``None``: any host; an empty set: no host at all. Names as
    written in URLs (``normalise_host``), compared exactly; they are not resolved."""
    shutdown_timeout: float = 20.0
    """On SIGTERM or Ctrl-C: seconds the accepted captions (queued and running) get to finish; the
    ones still unfinished then are failed with ``serviceUnavailable`` (and delivered as such)."""
    delivery_flush_timeout: float = 5.0
    """After the captions: seconds pending webhook/uploadEndpoint deliveries get before they are dropped."""

    def check(self) -> None:
        """Refuse settings that would expose the model or break the server.

        Raises:
            ServerConfigError: a non-loopback bind without an API key, a bound that is not positive, or a
                fetch host that is not a bare host name.
        """
        if not is_loopback(self.host) and not self.api_key:
            raise ServerConfigError(
                f"Binding {self.host} exposes the server beyond this machine; give --api-key KEY "
                "(or LLAVA_EDGE_API_KEY), or bind 127.0.0.1."
            )
        bounds = ("max_body_bytes", "max_tasks_per_request", "max_connections", "max_queue", "result_ttl",
                  "delivery_attempts")
        for name in bounds:
            if getattr(self, name) < 1:
                raise ServerConfigError(f"{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("shutdown_timeout", "delivery_flush_timeout"):
            if getattr(self, name) < 0:
                raise ServerConfigError(f"{name} must not be negative, got {getattr(self, name)}.")
        for host in self.fetch_hosts or ():
            if normalise_host(host) != host:
                raise ServerConfigError(f"Fetch host {host!r} is not normalised; pass it through normalise_host().")

    def outbound(self, limits: TransferLimits) -> TransferLimits:
        """``limits`` restricted to ``fetch_hosts`` (intersected with any allow-list ``limits`` already has)."""
        if self.fetch_hosts is None:
            return limits
        allowed = self.fetch_hosts if limits.allowed_hosts is None else self.fetch_hosts & set(limits.allowed_hosts)
        return replace(limits, allowed_hosts=frozenset(allowed))


_HOST_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")


def normalise_host(text: str) -> str:
    """A host name or IP address as ``urlsplit(url).hostname`` spells it: lower case, IPv6 without brackets.
    Hosts are compared as written, never resolved: ``127.0.0.1`` does not allow ``localhost``.

    Raises:
        ServerConfigError: a URL, a port, a path, a wildcard or anything else that is not a bare host.
    """
    host = text.strip().lower()
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
        return bare
    except ValueError:
        pass
    if not _HOST_NAME.match(host):
        raise ServerConfigError(
            f"{text!r} is not a host name or IP address; give bare hosts such as example.com or 192.168.1.20 "
            "(no scheme, port, path or wildcard), one per --allow-fetch-host."
        )
    return host


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_api_key(settings: ServerSettings, presented: object) -> None:
    """Accept ``presented`` or raise; any key passes when the server has none configured.

    Raises:
        AuthenticationError: ``missingApiKey`` or ``invalidApiKey``, as an ``authentication`` task error.
    """
    if settings.api_key is None:
        return
    if not isinstance(presented, str) or not presented:
        raise AuthenticationError(
            "An API key is required: send an authentication task with apiKey, or 'Authorization: Bearer <key>'.",
            code="missingApiKey",
            task_type=AUTH_TASK_TYPE,
        )
    if not hmac.compare_digest(presented.encode(), settings.api_key.encode()):
        raise AuthenticationError(
            "Invalid API key: use the key the server was started with (--api-key).", task_type=AUTH_TASK_TYPE
        )
