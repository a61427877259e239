"""Shared fixtures: the real tiny synthetic model pair, a session Captioner, and image factories.

Synthetic models are cached outside the repo (``~/.cache/llava-edge/synthetic`` or
``$LLAVA_EDGE_CACHE``), so only the first run builds them.
"""

from __future__ import annotations

import os

# huggingface_hub reads these once, at import: set them before anything imports it, so no test ever
# reaches for the real hub (its telemetry registry fetch included).
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")

import base64
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from llava_edge import Captioner, GenerationOptions
from llava_edge.image_store import ImageStore
from llava_edge.registry import ModelFiles
from llava_edge.synthetic import build_synthetic_pair


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own data directory and Hugging Face home; no test touches the user's."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("LLAVA_EDGE_HOME", str(home / "llava-edge"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("LLAVA_EDGE_MODELS", raising=False)
    return home


@pytest.fixture(scope="session")
def tiny_files() -> ModelFiles:
    """The tiny synthetic LLaVA-1.6 pair (real GGUF structure, random weights)."""
    return build_synthetic_pair("tiny")


@pytest.fixture(scope="session")
def captioner(tiny_files: ModelFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Captioner]:
    """One Captioner on the tiny model for the whole session, with short deterministic answers."""
    store = ImageStore(tmp_path_factory.mktemp("store"))
    with Captioner(
        model_path=tiny_files.model_path,
        mmproj_path=tiny_files.mmproj_path,
        generation=GenerationOptions(max_tokens=24, seed=7),
        image_store=store,
    ) as loaded:
        yield loaded


ImageFactory = Callable[..., bytes]


@pytest.fixture
def make_image() -> ImageFactory:
    """Encode a generated picture: ``make_image(width, height, format="PNG", mode="RGB")`` -> bytes."""

    def encode(width: int = 64, height: int = 48, format: str = "PNG", mode: str = "RGB", **save: object) -> bytes:
        image = Image.new(mode, (width, height))
        image.putdata([_pixel(mode, x, y) for y in range(height) for x in range(width)])
        buffer = io.BytesIO()
        image.save(buffer, format=format, **save)
        return buffer.getvalue()

    return encode


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def _pixel(mode: str, x: int, y: int) -> object:
    value = (x * 7 + y * 3) % 256
    if mode in ("L", "P"):
        return value
    if mode == "I;16":
        return (x * 1000 + y * 10) % 65536
    if mode == "RGBA":
        return (value, 255 - value, (x * y) % 256, 128)
    if mode == "CMYK":
        return (value, 0, 255 - value, 10)
    return (value, 255 - value, (x * y) % 256)


# -- server fixtures (tests/test_server*.py) -------------------------------------------------------


class LiveServer:
    """``create_app(captioner, settings)`` served by uvicorn in a thread on a free 127.0.0.1 port."""

    def __init__(self, captioner: Captioner, settings: object) -> None:
        import socket
        import threading
        import time

        import uvicorn

        from llava_edge.server import create_app, uvicorn_config

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


@pytest.fixture
def serve(captioner: Captioner) -> Iterator[Callable[..., LiveServer]]:
    """Start servers on the session captioner: ``serve(**ServerSettings fields)``; stopped after the test."""
    from llava_edge.server_settings import ServerSettings

    started: list[LiveServer] = []

    def start(**settings: object) -> LiveServer:
        server = LiveServer(captioner, ServerSettings(**settings))  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


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


@pytest.fixture
def loopback_http() -> Iterator[LoopbackHTTP]:
    """A recording HTTP endpoint on 127.0.0.1 (webhook receiver, upload target, slow image host)."""
    endpoint = LoopbackHTTP()
    yield endpoint
    endpoint.close()


class ServeProcess:
    """``llava-edge serve --model synthetic-tiny`` as a user runs it: a subprocess on a free 127.0.0.1 port.
    Its output goes to a file (a pipe nobody reads would fill up and block the server)."""

    def __init__(self, log_path: Path, *options: str) -> None:
        import socket
        import subprocess
        import sys
        import time

        import httpx

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.log_path = log_path
        command = [sys.executable, "-m", "llava_edge", "serve", "--model", "synthetic-tiny", "--threads", "1",
                   "--port", str(self.port), *options]
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


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Start ``llava-edge serve`` subprocesses: ``serve_process("--max-queue", "4")``; killed after the test."""
    started: list[ServeProcess] = []

    def start(*options: str) -> ServeProcess:
        started.append(ServeProcess(tmp_path / f"serve-{len(started)}.log", *options))
        return started[-1]

    yield start
    for process in started:
        process.close()
