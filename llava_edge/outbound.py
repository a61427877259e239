"""Bounded, address-checked HTTP(S) transfers with the standard library: image fetches, webhooks and uploads.

Every transfer has one deadline that covers resolving the name, connecting, the TLS handshake, the
headers, the body and every redirect; a watchdog shuts the socket down when it passes, so a server that
trickles bytes (header bytes included) cannot outlast it. Each read also has an idle timeout, the body a
byte cap. Only http(s) URLs are allowed; ``allowed_hosts`` (when given) limits the hosts contacted at all.

Addresses (no SSRF when ``allow_private`` is off): a name is resolved once, every address it resolves to is checked
with ``address_class``, and the connection goes to a checked address, never through a second resolution; the ``Host``
header, TLS SNI and the certificate check use the name from the URL. Hosts in ``private_hosts`` are exempt.
``fetch_bytes`` checks every redirect hop the same way; ``send_json`` never follows redirects. Messages never carry
remote bytes (body, reason phrase, redirect target, errno text): a coarse reason, at most the status; no proxy.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias
from urllib.parse import urljoin, urlsplit

from llava_edge.host.tls import tls_context

_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


class TransferError(Exception):
    """A URL could not be fetched within the limits; the message says why."""


class RefusedAddressError(TransferError):
    """The host is, or resolves to, an address the limits refuse (loopback, private, ...); retrying cannot help."""


@dataclass(frozen=True)
class TransferLimits:
    """Limits for one transfer."""

    timeout: float = 10.0
    """Seconds to connect and between reads."""
    deadline: float = 30.0
    """Seconds for the whole transfer (resolving, connecting, headers, body, redirects), however slowly
    bytes trickle in."""
    max_bytes: int = 20 * 1024 * 1024
    allowed_hosts: Collection[str] | None = None
    """Host names that may be contacted; ``None`` allows any."""
    allow_private: bool = True
    """Contact non-public addresses (loopback, private, link-local, ...: see ``address_class``). The
    Python API allows them (a captioner's owner reads from their own network); the server turns this off
    unless its operator passes ``--allow-private-fetch``."""
    private_hosts: Collection[str] = frozenset()
    """Hosts (as written in URLs) that may resolve to non-public addresses even when ``allow_private`` is off."""
    max_redirects: int = 5
    """Redirects ``fetch_bytes`` follows at most, each hop checked like the first URL."""


# -- addresses ----------------------------------------------------------------------------------------

_IPV4 = tuple((ipaddress.IPv4Network(net), kind) for net, kind in (
    ("0.0.0.0/8", "unspecified"), ("10.0.0.0/8", "private"), ("100.64.0.0/10", "shared (CGNAT)"),
    ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local"), ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"), ("192.0.2.0/24", "reserved"), ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"), ("198.18.0.0/15", "reserved"), ("198.51.100.0/24", "reserved"),
    ("203.0.113.0/24", "reserved"), ("224.0.0.0/4", "multicast"), ("240.0.0.0/4", "reserved"),
))
_IPV6 = tuple((ipaddress.IPv6Network(net), kind) for net, kind in (
    ("::/128", "unspecified"), ("::1/128", "loopback"), ("::ffff:0:0/96", "IPv4-mapped"),
    ("::/96", "IPv4-compatible"), ("64:ff9b:1::/48", "local-use NAT64"), ("100::/64", "reserved"),
    ("2001:db8::/32", "reserved"), ("fc00::/7", "private"), ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"), ("ff00::/8", "multicast"),
))
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+")


def address_class(address: IPAddress) -> str | None:
    """The kind of non-public address ``address`` is (``"loopback"``, ``"private"``, ``"link-local"``,
    ``"shared (CGNAT)"``, ``"multicast"``, ``"reserved"``, ``"unspecified"``, ``"IPv4-mapped"``,
    ``"IPv4-compatible"``, ...), or ``None`` for a public one.

    NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses are judged by the IPv4 address they embed:
    ``64:ff9b::8.8.8.8`` is public, ``64:ff9b::10.0.0.1`` is private, so IPv6-only networks with DNS64 keep
    working. The local-use NAT64 prefix 64:ff9b:1::/48 and IPv4-mapped/compatible addresses are refused
    whatever they embed. Anything else Python does not call global counts as reserved.
    """
    if isinstance(address, ipaddress.IPv4Address):
        kind = next((kind for net, kind in _IPV4 if address in net), None)
    else:
        embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if address in _NAT64 else address.sixtofour
        if embedded is not None:
            inner = address_class(embedded)
            return None if inner is None else f"{inner}, through {'NAT64' if address in _NAT64 else '6to4'}"
        kind = next((kind for net, kind in _IPV6 if address in net), None)
    return kind if kind is not None or address.is_global else "reserved"


def _literal(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is one, in any form a resolver accepts (2130706433, 0x7f.1, 0177.0.0.1)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


# -- URLs -----------------------------------------------------------------------------------------------


class _Target(NamedTuple):
    url: str
    scheme: str
    host: str
    port: int
    path: str
    label: str | None
    """The host as messages show it; ``None`` for a redirect target (remote bytes are never echoed)."""

    @property
    def host_header(self) -> str:
        name = self.host.encode("idna").decode("ascii") if not self.host.isascii() else self.host
        shown = f"[{name}]" if ":" in name else name
        return shown if self.port == (443 if self.scheme == "https" else 80) else f"{shown}:{self.port}"


def check_url(url: str, limits: TransferLimits) -> None:
    """Raise ``TransferError`` unless ``url`` is http(s) with a host the limits allow. A host written as an
    IP address (in any form) is checked here; a name is checked when a transfer resolves it."""
    _target(url, limits, redirect=False)


def _target(url: str, limits: TransferLimits, *, redirect: bool) -> _Target:
    prefix = "redirect refused: it leads to " if redirect else ""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise TransferError(f"{prefix or 'the URL is '}not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise TransferError(f"{prefix}a URL that is not http(s)" if redirect
                            else f"only http(s) URLs are allowed, got {url[:80]!r}")
    if limits.allowed_hosts is not None and host not in limits.allowed_hosts:
        raise TransferError(f"{prefix}a host that is not in the allowed hosts" if redirect
                            else f"host {host!r} is not in the allowed hosts")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    target = _Target(url, parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path,
                     None if redirect else host)
    literal = _literal(host)
    if literal is not None:
        _check_address(target, literal, limits, resolved=False)
    return target


def _check_address(target: _Target, address: IPAddress, limits: TransferLimits, *, resolved: bool) -> None:
    if limits.allow_private or target.host in limits.private_hosts:
        return
    kind = address_class(address)
    if kind is None:
        return
    if target.label is None:
        raise RefusedAddressError(
            f"redirect refused: it leads to a non-public address ({kind}); the server operator can allow its "
            "host with --allow-fetch-host HOST or --allow-private-fetch"
        )
    verb = "resolves to" if resolved else "is"
    raise RefusedAddressError(
        f"host {target.label!r} {verb} a non-public address ({kind}); the server operator can allow it with "
        f"--allow-fetch-host {target.label} or --allow-private-fetch"
    )


# -- the deadline, resolving and connecting ---------------------------------------------------------------


class _Deadline:
    """One clock for a whole transfer. A watchdog timer shuts the watched socket down when it runs out, which
    ends any read, write or handshake in progress, however slowly the other side trickles bytes."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._timer = threading.Timer(max(seconds, 0.0), self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        self.watch(None)

    def error(self) -> TransferError:
        return TransferError(f"the transfer took longer than {self.seconds:g} s")

    def timeout(self, idle: float) -> float:
        """``idle``, or less when the deadline is nearer; raises when it has passed."""
        left = self._end - time.monotonic()
        if left <= 0 or self.expired:
            raise self.error()
        return min(idle, left)

    def watch(self, sock: socket.socket | None) -> None:
        """Make ``sock`` the socket shut down at the deadline (``None``: none, before closing it)."""
        with self._lock:
            self._sock = sock
        if sock is not None and self.expired:
            raise self.error()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                try:
                    socket.socket.shutdown(self._sock, socket.SHUT_RDWR)  # the plain call, also for TLS sockets
                except OSError:
                    pass


def _resolve(target: _Target, deadline: _Deadline) -> list[tuple[int, IPAddress]]:
    """The addresses to try, resolved once, in a thread so the deadline bounds a slow resolver."""
    literal = _literal(target.host)
    if literal is not None:
        return [(socket.AF_INET if literal.version == 4 else socket.AF_INET6, literal)]
    answers: list[Any] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            answers.append(socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as err:
            answers.append(err)
        done.set()

    threading.Thread(target=lookup, name="llava-edge-resolve", daemon=True).start()
    if not done.wait(deadline.timeout(float("inf"))):
        raise deadline.error()
    if isinstance(answers[0], BaseException):
        raise TransferError(f"could not resolve {_shown(target)}")
    found: dict[IPAddress, int] = {}
    for family, _, _, _, sockaddr in answers[0]:
        if family in (socket.AF_INET, socket.AF_INET6):
            found.setdefault(ipaddress.ip_address(sockaddr[0]), family)
    return [(family, address) for address, family in found.items()]


def _connect(target: _Target, limits: TransferLimits, deadline: _Deadline) -> socket.socket:
    """A connected (and for https, TLS-verified) socket to a checked address of the target's host."""
    addresses = _resolve(target, deadline)
    for _, address in addresses:  # all of them, so a name with one private address among public ones is refused
        _check_address(target, address, limits, resolved=True)
    for family, address in addresses:
        timeout = deadline.timeout(limits.timeout)
        sock = socket.socket(family, socket.SOCK_STREAM)
        deadline.watch(sock)
        try:
            sock.settimeout(timeout)
            sock.connect((str(address), target.port))
            break
        except OSError:
            deadline.watch(None)
            sock.close()
            if deadline.expired:
                raise deadline.error() from None
    else:
        raise TransferError(f"could not connect to {_shown(target)}")
    try:
        if target.scheme == "https":
            sock = _tls_context().wrap_socket(sock, server_hostname=target.host, do_handshake_on_connect=False)
            deadline.watch(sock)
            sock.do_handshake()
        sock.settimeout(limits.timeout)
    except BaseException:
        deadline.watch(None)
        sock.close()
        raise
    return sock


_tls_context = functools.cache(tls_context)  # the OS trust store and hostname checks (host.tls), made once


def _shown(target: _Target) -> str:
    return "the redirect's host" if target.label is None else repr(target.label)


@contextmanager
def _exchange(
    target: _Target, method: str, body: bytes | None, headers: Mapping[str, str], limits: TransferLimits,
    deadline: _Deadline,
) -> Iterator[http.client.HTTPResponse]:
    """Send one request and yield the response (headers read); every failure becomes a coarse ``TransferError``."""
    connection: http.client.HTTPConnection | None = None
    try:
        connection = http.client.HTTPConnection(target.host, target.port)
        connection.sock = _connect(target, limits, deadline)
        connection.request(method, target.path, body=body, headers={"Host": target.host_header, **headers})
        response = connection.getresponse()
        if deadline.expired:  # the watchdog's shutdown can make a trickled head look complete
            raise deadline.error()
        yield response
    except TransferError:
        raise
    except ssl.SSLCertVerificationError:
        raise TransferError(f"the TLS certificate of {_shown(target)} could not be verified") from None
    except ssl.SSLError:
        raise deadline.error() if deadline.expired else TransferError("the TLS connection failed") from None
    except TimeoutError:
        raise deadline.error() if deadline.expired else TransferError(
            f"timed out: the server sent nothing for {limits.timeout:g} s") from None
    except (OSError, http.client.HTTPException, ValueError, UnicodeError):
        raise deadline.error() if deadline.expired else TransferError(
            "the connection failed or the answer was not valid HTTP") from None
    finally:
        deadline.watch(None)
        if connection is not None:
            connection.close()


# -- transfers ------------------------------------------------------------------------------------------


def fetch_bytes(url: str, limits: TransferLimits) -> tuple[bytes, str]:
    """GET ``url`` and return ``(body, content_type)``, following checked redirects.

    Raises:
        TransferError: bad scheme, host or address (``RefusedAddressError``), HTTP error, timeout, deadline
            or size cap exceeded.
    """
    headers = {"User-Agent": "llava-edge", "Accept": "image/*"}
    with _Deadline(limits.deadline) as deadline:
        status = 0
        for hop in range(limits.max_redirects + 1):
            target = _target(url, limits, redirect=hop > 0)
            with _exchange(target, "GET", None, headers, limits, deadline) as response:
                status = response.status
                location = response.getheader("Location")
                if status in _REDIRECTS and location:
                    url = urljoin(url, location)
                    continue
                if not 200 <= status < 300:
                    raise TransferError(f"the server answered HTTP {status}")
                declared = response.getheader("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes:
                    raise TransferError(f"the body is {int(declared)} bytes; the limit is {limits.max_bytes}")
                body = _read_bounded(response, limits, deadline)
                content_type = response.headers.get_content_type() if response.getheader("Content-Type") else ""
                return body, content_type
        raise TransferError(f"too many redirects: the server answered HTTP {status} more than "
                            f"{limits.max_redirects} times in a row")


def _read_bounded(response: http.client.HTTPResponse, limits: TransferLimits, deadline: _Deadline) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = response.read1(_CHUNK)  # returns what has arrived
        deadline.timeout(float("inf"))  # raises once the deadline has passed (a watchdog shutdown reads as EOF)
        if not chunk:
            break
        total += len(chunk)
        if total > limits.max_bytes:
            raise TransferError(f"the body exceeds the limit of {limits.max_bytes} bytes")
        chunks.append(chunk)
    if response.length:  # Content-Length promised more than arrived
        raise TransferError("the connection closed before the whole body arrived")
    return b"".join(chunks)


def send_json(url: str, payload: bytes, *, method: str, limits: TransferLimits) -> int:
    """POST or PUT a JSON body and return the HTTP status: an error status is returned, not raised, and a
    redirect is never followed (its 3xx status is returned). The whole attempt ends at ``limits.deadline``.

    Raises:
        TransferError: bad scheme, host or address (``RefusedAddressError``), connection failure, timeout or
            deadline exceeded.
    """
    headers = {"Content-Type": "application/json", "User-Agent": "llava-edge"}
    with _Deadline(limits.deadline) as deadline:
        target = _target(url, limits, redirect=False)
        with _exchange(target, method, payload, headers, limits, deadline) as response:
            return int(response.status)
