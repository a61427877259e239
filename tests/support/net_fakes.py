"""Fakes for outbound-request tests, all on loopback: a tripwire that counts connections, a scripted HTTP
server that answers with exact bytes at any pace (trickling, lying, redirecting), and a fake resolver."""

from __future__ import annotations

import itertools
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

Answer = Callable[[socket.socket, bytes], None]
"""Writes the answer to a connection, given the request head it sent."""


class _Listener:
    """Accepts connections on ``host`` in a thread and hands each to ``handle`` in its own thread."""

    def __init__(self, host: str, handle: Callable[[socket.socket], None]) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.bind((host, 0))
        self.socket.listen(32)
        self.port = int(self.socket.getsockname()[1])
        self._handle = handle
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.socket.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self.socket.close()


class Tripwire:
    """Listeners on 127.0.0.1 and (when the machine has IPv6) ::1 that answer nothing and count every
    connection: a refused URL pointing at them must leave ``connections`` at 0."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._listeners = [_Listener("127.0.0.1", self._record)]
        self.port = self._listeners[0].port
        self.port6: int | None = None
        try:
            self._listeners.append(_Listener("::1", self._record))
            self.port6 = self._listeners[-1].port
        except OSError:
            pass

    def _record(self, conn: socket.socket) -> None:
        with self._lock:
            self._count += 1
        conn.close()

    @property
    def connections(self) -> int:
        with self._lock:
            return self._count

    def close(self) -> None:
        for listener in self._listeners:
            listener.close()


class RawHTTP:
    """A server on 127.0.0.1 that reads each request head and lets ``answer`` write the reply byte by byte.
    ``heads`` keeps the request heads in arrival order; ``closed_after`` the seconds each connection lasted
    until ``answer`` returned (an answer that writes until the client hangs up measures the client's patience).
    ``tls``: serve HTTPS with this context."""

    def __init__(self, answer: Answer, *, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.heads: list[bytes] = []
        self.closed_after: list[float] = []
        self.arrived = threading.Condition()
        self._tls = tls
        self._listener = _Listener("127.0.0.1", self._serve)
        self.port = self._listener.port
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    def _serve(self, conn: socket.socket) -> None:
        started = time.monotonic()
        conn.settimeout(10)
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                head += chunk
            with self.arrived:
                self.heads.append(head)
                self.arrived.notify_all()
            self.answer(conn, head)
        except OSError:
            pass
        finally:
            with self.arrived:
                self.closed_after.append(time.monotonic() - started)
                self.arrived.notify_all()
            conn.close()

    def wait_closed(self, count: int, timeout: float = 10.0) -> list[float]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.closed_after) >= count, timeout)
            return list(self.closed_after)

    def close(self) -> None:
        self._listener.close()


def reply(status: str, headers: dict[str, str] | None = None, body: bytes = b"") -> Answer:
    """An answer with exactly this status line (``"200 OK"``), headers and body."""

    def answer(conn: socket.socket, head: bytes) -> None:
        lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    return answer


def trickle(prefix: bytes, every: float, limit: float = 8.0) -> Answer:
    """Send ``prefix`` and then ``a`` after ``a``, one byte every ``every`` seconds, until the client hangs up
    or ``limit`` seconds pass: never idle long enough for a read timeout, never finished."""
    def answer(conn: socket.socket, head: bytes) -> None:
        end = time.monotonic() + limit
        for byte in itertools.chain(prefix, itertools.repeat(ord("a"))):
            if time.monotonic() > end:
                return
            conn.sendall(bytes([byte]))
            time.sleep(every)

    return answer


class FakeDNS:
    """Names added with ``add`` resolve to the next list of addresses given (the last one repeats), after
    ``delay`` seconds; ``calls`` records each lookup of them. Other names resolve as usual."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.calls: list[str] = []
        self.delay = 0.0
        self.real = socket.getaddrinfo

    def add(self, name: str, *answers: list[str]) -> None:
        self.answers[name] = list(answers)

    def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        """Stands in for ``socket.getaddrinfo`` (patch it in with monkeypatch)."""
        if host not in self.answers:
            return self.real(host, port, *args, **kwargs)
        self.calls.append(host)
        time.sleep(self.delay)
        queue = self.answers[host]
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0)) if ":" in a
                else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]
