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
MIN_LAN_KEY_CHARS = 16


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
    """HTTP requests in progress plus open WebSocket sessions at most; more are answered 503. Idle sockets
    do not count (see ``head_timeout`` and ``max_sockets``)."""
    max_queue: int = 32
    """Caption jobs waiting for the model, per priority class (``work_options``); one more of a class is answered
    ``serviceUnavailable``."""
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
    written in URLs (``normalise_host``), compared exactly; they are not resolved. A listed host may
    resolve to a private address (the operator named it)."""
    allow_private_fetch: bool = False
    """Let requests make the server contact non-public addresses (loopback, private, link-local, CGNAT,
    ...: ``outbound.address_class``). Off by default: a request cannot reach this machine or its network."""
    shutdown_timeout: float = 20.0
    """On SIGTERM or Ctrl-C: seconds the accepted captions (queued and running) get to finish; the
    ones still unfinished then are failed with ``serviceUnavailable`` (and delivered as such)."""
    delivery_flush_timeout: float = 5.0
    """After the captions: seconds pending webhook/uploadEndpoint deliveries get before they are dropped."""
    allow_origins: frozenset[str] = frozenset()
    """Browser origins (``scheme://host[:port]``) besides the server's own that may send requests; a request
    or WebSocket upgrade from any other ``Origin`` is refused (403), so web pages cannot drive the server."""
    allow_hosts: frozenset[str] = frozenset()
    """``Host`` names accepted besides IP literals, ``localhost`` and ``*.localhost`` (and, on a LAN bind,
    this machine's name, ``*.local`` and ``*.internal``): other names are refused (DNS rebinding)."""
    no_auth: bool = False
    """Serve a non-loopback address without a key (for clients that cannot send one); warned about at start."""
    head_timeout: float = 5.0
    """Seconds a new connection gets to send a complete request head; idle or trickling ones are closed."""
    max_sockets: int = 512
    """Open sockets at most, idle ones included; more are closed at once (before any byte is read)."""
    preauth_body_bytes: int = 64 * 1024
    """Without an ``Authorization`` header, the bytes read to find the authentication task before the key
    is checked; the rest of the body is read only after."""
    ws_max_in_flight: int = 8
    """Tasks one WebSocket may have running; its further frames wait (backpressure) until one finishes."""
    auth_failures_per_minute: int = 10
    """Failed key attempts per client address per minute; beyond it the client is answered 429."""
    fetch_deadline: float = 30.0
    """Seconds ONE request's image URLs get to be read, all of them together, waits for a fetch slot included
    (each fetch also keeps its own ``TransferLimits``)."""
    max_request_pixels: int = 50_000_000
    """Decoded pixels of one request's images together, checked on their headers before any is decoded (one
    image may have up to ``ImageLimits.max_pixels``, 40 MP)."""
    min_residency: float = 30.0
    """Seconds a loaded model stays while it is being asked for before a request for another model swaps it
    out (a job that waits longer than this is served anyway): see ``queue_policy``."""
    keep_alive: float = 300.0
    """``--keep-alive``: seconds the model stays loaded after an answer when the request sets no ``keep_alive``
    (``math.inf``: never unloaded; 0: unloaded after each answer); see ``keep_alive``."""
    max_keep_alive: float | None = None
    """``--max-keep-alive``: the most a request's ``keep_alive`` may keep the model loaded; None: no cap."""
    pin_model: bool = False
    """``--no-swap``: only the start model answers; a request naming another installed model is refused."""
    offline: bool = False
    """Started with ``--offline``: ``/api/pull`` downloads nothing (nor does anything else)."""
    allow_pull: bool = False
    """Let ``/api/pull`` download on a non-loopback bind without a key (``--no-auth``); with a key it needs the
    key, on loopback it is allowed."""

    def check(self) -> None:
        """Refuse settings that would expose the model or break the server.

        Raises:
            ServerConfigError: a non-loopback bind without an API key, a bound that is not positive, or a
                fetch host that is not a bare host name.
        """
        self._check_key()
        bounds = ("max_body_bytes", "max_tasks_per_request", "max_connections", "max_queue", "result_ttl",
                  "delivery_attempts", "max_sockets", "preauth_body_bytes", "ws_max_in_flight",
                  "auth_failures_per_minute", "max_request_pixels", "fetch_deadline")
        for name in bounds:
            if getattr(self, name) < 1:
                raise ServerConfigError(f"{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("shutdown_timeout", "delivery_flush_timeout", "head_timeout", "min_residency", "keep_alive"):
            if getattr(self, name) < 0:
                raise ServerConfigError(f"{name} must not be negative, got {getattr(self, name)}.")
        for host in self.fetch_hosts or ():
            if normalise_host(host) != host:
                raise ServerConfigError(f"Fetch host {host!r} is not normalised; pass it through normalise_host().")

    def _check_key(self) -> None:
        if self.no_auth and self.api_key:
            raise ServerConfigError("Give either --api-key or --no-auth, not both.")
        if is_loopback(self.host) or self.no_auth:
            return
        if not self.api_key or len(self.api_key) < MIN_LAN_KEY_CHARS:
            raise ServerConfigError(
                f"Binding {self.host} exposes the server beyond this machine; give --api-key with a key of at "
                f"least {MIN_LAN_KEY_CHARS} characters (or LLAVA_EDGE_API_KEY; e.g. from "
                "`python -c \"import secrets; print(secrets.token_urlsafe())\"`), bind 127.0.0.1, or pass --no-auth "
                "for clients that cannot send a key."
            )

    def outbound(self, limits: TransferLimits) -> TransferLimits:
        """``limits`` restricted to ``fetch_hosts`` (intersected with any allow-list ``limits`` already has)
        and, unless ``allow_private_fetch``, to public addresses; hosts in ``fetch_hosts`` may be private."""
        allowed = limits.allowed_hosts
        if self.fetch_hosts is not None:
            allowed = frozenset(self.fetch_hosts if allowed is None else self.fetch_hosts & set(allowed))
        return replace(limits, allowed_hosts=allowed, allow_private=limits.allow_private and self.allow_private_fetch,
                       private_hosts=frozenset(limits.private_hosts) | (self.fetch_hosts or frozenset()))


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
    given = presented.encode("utf-8", "surrogatepass")  # a lone surrogate is valid JSON: refuse it, don't crash
    if not hmac.compare_digest(given, settings.api_key.encode("utf-8", "surrogatepass")):
        raise AuthenticationError(
            "Invalid API key: use the key the server was started with (--api-key).", task_type=AUTH_TASK_TYPE
        )
