"""Servers for tests, all on 127.0.0.1: the app in a thread, ``llava-edge serve`` as a subprocess, and a
recording HTTP endpoint (webhook receiver, upload target, slow image host)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import httpx

from llava_edge.api import Captioner


class LiveServer:
    """``create_app(captioner, settings)`` served by uvicorn in a thread on a free 127.0.0.1 port."""

    def __init__(self, captioner: Captioner, settings: object) -> None:
        import socket
        import threading
        import time

        import uvicorn

        from llava_edge.server.app import create_app, uvicorn_config

        self.app = create_app(captioner, settings)  # type: ignore[arg-type]
        self.service = self.app.state.service
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets (else Nagle adds ~40 ms per answer)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.server = uvicorn.Server(uvicorn_config(self.app, settings, log_level="warning"))  # type: ignore[arg-type]
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start within 15 s")
            time.sleep(0.02)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(15)
        self._socket.close()


def caption_task(image: str, **fields: object) -> dict[str, object]:
    """A Runware ``caption`` task with a fresh taskUUID for ``image``; ``fields`` add or override."""
    import uuid

    task: dict[str, object] = {"taskType": "caption", "taskUUID": str(uuid.uuid4()), "model": "runware:150@2",
                               "inputs": {"image": image}}
    task.update(fields)
    return task


class LoopbackHTTP:
    """A tiny HTTP server on 127.0.0.1 that records every request and answers from a script.

    ``statuses``: HTTP statuses for the next requests, in order (then 200). ``image``: the body of GET
    answers. After ``hold()``, every answer waits until ``release()`` (at most 30 s).
    """

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[tuple[str, str, bytes]] = []
        self.times: list[float] = []
        """``time.monotonic()`` at each request's arrival."""
        self.statuses: list[int] = []
        self.image = b""
        self.arrived = threading.Condition()
        self._gate: threading.Event | None = None
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner._record(self, b"")
                self._answer(200, owner.image, "image/png")

            def do_POST(self) -> None:
                self._take_body()

            def do_PUT(self) -> None:
                self._take_body()

            def _take_body(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = owner._record(self, body)
                self._answer(status, b"{}", "application/json")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                if owner._gate is not None:
                    owner._gate.wait(30)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _record(self, handler: object, body: bytes) -> int:
        import time

        with self.arrived:
            self.requests.append((handler.command, handler.path, body))  # type: ignore[attr-defined]
            self.times.append(time.monotonic())
            self.arrived.notify_all()
            return self.statuses.pop(0) if self.statuses else 200

    def hold(self) -> None:
        import threading

        self._gate = threading.Event()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()

    def wait_for(self, count: int, timeout: float = 15.0) -> list[tuple[str, str, bytes]]:
        """The first ``count`` requests, waiting up to ``timeout`` seconds for them."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


class ServeProcess:
    """``llava-edge serve --model synthetic-tiny`` (or another ``model`` choice) as a user runs it: a subprocess on a
    free 127.0.0.1 port.
    Its output goes to a file (a pipe nobody reads would fill up and block the server)."""

    def __init__(self, log_path: Path, *options: str, model: tuple[str, ...] = ("--model", "synthetic-tiny")) -> None:
        import socket
        import subprocess
        import sys
        import time

        import httpx

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.log_path = log_path
        command = [sys.executable, "-m", "llava_edge", "serve", *model, "--threads", "1", "--port", str(self.port),
                   *options]
        with log_path.open("w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{self.http}/health", timeout=1)
                return
            except httpx.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"llava-edge serve did not start:\n{self.output}") from None
                time.sleep(0.1)

    http = LiveServer.http
    ws = LiveServer.ws

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(15)


def post(server: LiveServer | ServeProcess, tasks: Any, *, key: str | None = None, **kwargs: Any) -> httpx.Response:
    """POST Runware tasks to the server's /v1, with the key as a Bearer token when given."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.http}/v1", json=tasks, headers=headers, timeout=30, **kwargs)


def poll(server: LiveServer | ServeProcess, task_uuid: str, *, until: str = "success", timeout: float = 30,
         key: str | None = None) -> httpx.Response:
    """getResponse until the status is ``until`` (bounded), answering the last response."""
    deadline = time.monotonic() + timeout
    while True:
        response = post(server, [{"taskType": "getResponse", "taskUUID": task_uuid}], key=key)
        items = response.json().get("data", []) + response.json().get("errors", [])
        if (items and items[0].get("status") == until) or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def wait_until(condition: Callable[[], bool], timeout: float = 15) -> None:
    """Wait (bounded) until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


class ModelHold:
    """Holds a live server's model as a long caption would: the worker blocks at its next caption until
    ``release()``. (The tiny model captions in milliseconds; this is the test's stand-in for a slow one.)"""

    holding: ClassVar[list[ModelHold]] = []

    def __init__(self, server: LiveServer) -> None:
        self._lock = server.service.captioner.runtime._lock
        self._lock.acquire()
        self._held = True
        ModelHold.holding.append(self)

    def release(self) -> None:
        if self._held:
            self._held = False
            self._lock.release()

    @classmethod
    def release_all(cls) -> None:
        """Release every hold a test left (a failed assertion before its release), so teardown can proceed."""
        while cls.holding:
            cls.holding.pop().release()
