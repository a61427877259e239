"""A Hugging Face hub-compatible HTTP server on 127.0.0.1, for download tests.

It serves ``HEAD`` and ``GET /{org}/{repo}/resolve/{revision}/{file}`` the way the hub does for LFS
files (see /work/shared/hub-client.md §1): ``X-Repo-Commit`` echoes the pinned commit,
``X-Linked-Etag`` is the sha256, ``X-Linked-Size`` the size, ``ETag`` the git sha1 of the LFS pointer,
``Accept-Ranges: bytes``, ``206`` + ``Content-Range`` for ``Range: bytes=N-``, and errors carry
``X-Error-Code`` (``EntryNotFound``, ``RevisionNotFound``, ``RepoNotFound``). ``/api/agent-harnesses``
answers 404. Nothing else exists.

Fault knobs per file (``Faults``): drop the connection at a byte offset, flip bytes while
advertising the true hash, stall at an offset until released, or advertise a size that differs
from the content. Every request and every body byte sent is recorded.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)$")
_RANGE = re.compile(r"^bytes=(\d+)-$")
_CHUNK = 16 * 1024


@dataclass
class Faults:
    """What goes wrong when a file is served."""

    cut_at: int | None = None
    """Drop the connection once the body reaches this byte offset of the file..."""
    cut_times: int = 1
    """...for this many GET responses (later ones are healthy)."""
    corrupt: bool = False
    """Flip one byte in the middle of the body; headers still advertise the true sha256 and size."""
    stall_at: int | None = None
    """Stop sending at this offset until ``HubServer.release`` is set."""
    advertised_size: int | None = None
    """Claim this size in X-Linked-Size instead of the real one."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None

    @property
    def file(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class _Repo:
    revision: str
    files: dict[str, bytes]
    token: str | None


@dataclass
class HubServer:
    """Serve repos of in-memory files; ``url`` is the endpoint to put in ``HF_ENDPOINT``."""

    repos: dict[str, _Repo] = field(default_factory=dict)
    faults: dict[str, Faults] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    bytes_sent: dict[str, int] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def add_repo(self, repo: str, revision: str, files: dict[str, bytes], *, token: str | None = None) -> None:
        """Serve ``files`` from ``repo`` at commit ``revision``; with ``token``, the repo is private."""
        self.repos[repo] = _Repo(revision, dict(files), token)

    def file_requests(self, method: str | None = None) -> list[Request]:
        """Requests for repo files (not the telemetry endpoint), optionally of one method."""
        return [r for r in self.requests if "/resolve/" in r.path and method in (None, r.method)]

    def get_ranges(self, file: str) -> list[str | None]:
        """The Range header of every GET of ``file``, in order (None: the whole file)."""
        return [r.range for r in self.file_requests("GET") if r.file == file]

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.bytes_sent.clear()

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _count(self, file: str, sent: int) -> None:
        with self._lock:
            self.bytes_sent[file] = self.bytes_sent.get(file, 0) + sent

    def _take_cut(self, faults: Faults) -> int | None:
        with self._lock:
            if faults.cut_at is None or faults.cut_times <= 0:
                return None
            faults.cut_times -= 1
            return faults.cut_at


def _handler_for(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_HubHandler):
        server_state = hub

    return Handler


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: HubServer

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        hub = self.server_state
        hub._record(Request(self.command, self.path, self.headers.get("Range"), self.headers.get("Authorization")))
        match = _RESOLVE.match(self.path)
        if match is None:
            return self._error(404, None, None)
        repo = hub.repos.get(match["repo"])
        if repo is None or (repo.token is not None and self.headers.get("Authorization") != f"Bearer {repo.token}"):
            return self._error(401, "RepoNotFound", None)
        if unquote(match["revision"]) not in (repo.revision, "main"):
            return self._error(404, "RevisionNotFound", None)
        name = unquote(match["file"])
        if name not in repo.files:
            return self._error(404, "EntryNotFound", repo.revision)
        self._send_file(name, repo.files[name], repo.revision, body)

    def _send_file(self, name: str, data: bytes, revision: str, body: bool) -> None:
        hub = self.server_state
        faults = hub.faults.get(name, Faults())
        start = self._range_start()
        self.send_response(206 if start else 200)
        self._file_headers(data, revision, faults)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if not body:
            return
        content = _corrupted(data) if faults.corrupt else data
        stop = self._stop_offset(faults, len(data))
        try:
            self._stream(name, content, start, stop)
            if faults.stall_at is not None and stop == faults.stall_at:
                hub.release.wait(timeout=60)
                self._stream(name, content, stop, len(data))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _file_headers(self, data: bytes, revision: str, faults: Faults) -> None:
        sha256 = hashlib.sha256(data).hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
        git_sha1 = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()
        self.send_header("X-Repo-Commit", revision)
        self.send_header("X-Linked-Etag", f'"{sha256}"')
        self.send_header("X-Linked-Size", str(faults.advertised_size or len(data)))
        self.send_header("ETag", f'"{git_sha1}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")

    def _stop_offset(self, faults: Faults, size: int) -> int:
        cut = self.server_state._take_cut(faults)
        if cut is not None:
            self.close_connection = True
            return min(cut, size)
        if faults.stall_at is not None and not self.server_state.release.is_set():
            return min(faults.stall_at, size)
        return size

    def _stream(self, name: str, content: bytes, start: int, stop: int) -> None:
        for offset in range(start, stop, _CHUNK):
            chunk = content[offset:min(offset + _CHUNK, stop)]
            self.wfile.write(chunk)
            self.wfile.flush()
            self.server_state._count(name, len(chunk))

    def _range_start(self) -> int:
        match = _RANGE.match(self.headers.get("Range", ""))
        return int(match.group(1)) if match else 0

    def _error(self, status: int, code: str | None, revision: str | None) -> None:
        self.send_response(status)
        if code is not None:
            self.send_header("X-Error-Code", code)
        if revision is not None:
            self.send_header("X-Repo-Commit", revision)
        self.send_header("Content-Length", "0")
        self.end_headers()


def _corrupted(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
