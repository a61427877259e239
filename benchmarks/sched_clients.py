"""The pieces of ``scheduling.py``: servers run as whole processes on 127.0.0.1, streamed chat requests
timed at the client from threads, and the resident memory of a server process.

A ``Stream`` is one OpenAI chat completion sent with ``"stream": true`` on its own thread. It stamps when it
was sent, every llava-edge ``event: progress`` (with ``stream_options.include_progress``), the first content
delta and the end, so a caller can wait for a point inside a caption before it sends the next request.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

PRIORITY_HEADER = "X-Llava-Edge-Priority"
"""The header that marks a request as background work (value ``background``)."""


def image_part(data_uri: str, detail: str = "high") -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": data_uri, "detail": detail}}


def user_turn(data_uri: str, text: str, detail: str = "high") -> list[dict[str, Any]]:
    """The first turn about an image: one user message, the question then the image."""
    return [{"role": "user", "content": [{"type": "text", "text": text}, image_part(data_uri, detail)]}]


@dataclass
class Stream:
    """One streamed chat completion on its own thread, timed at the client."""

    url: str
    messages: list[dict[str, Any]]
    max_tokens: int
    background: bool = False
    """Send ``X-Llava-Edge-Priority: background``."""
    sent: float = 0.0
    first_token: float | None = None
    ended: float | None = None
    text: str = ""
    error: str | None = None
    progress: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    """The last data object that carried ``timings`` (llama-server) or ``usage``."""

    def __post_init__(self) -> None:
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Stream:
        self.sent = time.perf_counter()
        self._thread.start()
        return self

    def join(self, timeout: float = 900) -> Stream:
        self._thread.join(timeout)
        if self._thread.is_alive() or self.error:
            raise RuntimeError(f"request failed or hung: {self.error or f'no end after {timeout:.0f} s'}")
        return self

    def wait_for(self, done: Callable[[Stream], bool], timeout: float = 600) -> None:
        """Block until ``done(self)`` holds (checked on each event) or the request ended."""
        with self._changed:
            if not self._changed.wait_for(lambda: done(self) or self.ended is not None, timeout):
                raise RuntimeError("the awaited point of the request never came")

    @property
    def ttft_s(self) -> float:
        return (self.first_token or self.ended or self.sent) - self.sent

    @property
    def total_s(self) -> float:
        return (self.ended or self.sent) - self.sent

    def _body(self) -> dict[str, Any]:
        return {"model": "llava", "messages": self.messages, "max_tokens": self.max_tokens, "temperature": 0,
                "seed": 1, "stream": True, "stream_options": {"include_progress": True, "include_usage": True}}

    def _run(self) -> None:
        headers = {PRIORITY_HEADER: "background"} if self.background else {}
        try:
            with httpx.stream("POST", f"{self.url}/v1/chat/completions", json=self._body(), headers=headers,
                              timeout=900) as response:
                if response.status_code != 200:
                    self.error = f"HTTP {response.status_code}: {response.read()[:300]!r}"
                    return
                self._read(response.iter_lines())
        except httpx.HTTPError as err:
            self.error = repr(err)
        finally:
            with self._changed:
                self.ended = time.perf_counter()
                self._changed.notify_all()

    def _read(self, lines: Any) -> None:
        event = "message"
        for line in lines:
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data: {"):
                self._take(event, json.loads(line[6:]))
                event = "message"

    def _take(self, event: str, data: dict[str, Any]) -> None:
        now = time.perf_counter()
        with self._changed:
            if event == "progress":
                self.progress.append((now - self.sent, data))
            elif "error" in data:
                self.error = json.dumps(data)[:300]
            else:
                for choice in data.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        self.first_token = self.first_token or now
                        self.text += content
                if "timings" in data or "usage" in data:
                    self.final = data
            self._changed.notify_all()


def stage_done(stream: Stream, stage: str) -> int:
    """How far ``stage`` (``encode``: tiles, ``prefill``: tokens) had come at the last progress event."""
    return max((data["done"] for _, data in stream.progress if data.get("stage") == stage), default=0)


def position(stream: Stream) -> dict[str, Any]:
    """Where a llava-edge caption stands, from its progress events: tiles encoded and tokens prefilled."""
    last: dict[str, dict[str, Any]] = {}
    for _, data in stream.progress:
        last[data["stage"]] = data
    return {stage: f"{data['done']}/{data['total']}" for stage, data in last.items()}


class Server:
    """A server process on 127.0.0.1, started and ready on entry, stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, command: Sequence[str], port: int, ready_path: str, *, env: dict[str, str] | None = None,
                 ready_timeout: float = 600) -> None:
        self.command, self.port, self.ready_path = list(command), port, ready_path
        self.env, self.ready_timeout = env, ready_timeout
        self.url = f"http://127.0.0.1:{port}"
        self.log: TextIO = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in __exit__
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited ({self.process.returncode}):\n{self.tail()}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server not ready in {self.ready_timeout:.0f} s:\n{self.tail()}")

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss_bytes(self) -> int:
        """The server process's resident memory now (``VmRSS``; Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS line")

    def tail(self, chars: int = 3000) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-chars:]


def llava_edge_server(model: str, port: int, *, cache: str) -> Server:
    """``llava-edge serve`` for ``model``, with its defaults (prefix cache 1024 MB, keep-alive 5 m)."""
    env = {**os.environ, "LLAVA_EDGE_CACHE": cache}
    return Server([sys.executable, "-m", "llava_edge", "serve", "--model", model, "--port", str(port)], port,
                  "/health", env=env)


def llama_server(binary: str, model: Path, mmproj: Path, port: int, *, threads: int, slots: int = 2,
                 slot_ctx: int = 4096) -> Server:
    """``llama-server -np slots`` on the same GGUF pair: ``slot_ctx`` tokens per slot, flash attention on,
    the built-in llama2 (``[INST]``) chat template (the synthetic GGUFs embed none; through jinja that template
    drops the image marker, so ``--no-jinja``), ``threads`` for both phases."""
    command = [binary, "-m", str(model), "--mmproj", str(mmproj), "--host", "127.0.0.1", "--port", str(port),
               "-np", str(slots), "-c", str(slots * slot_ctx), "-fa", "on", "-t", str(threads), "-tb", str(threads),
               "--chat-template", "llama2", "--no-jinja", "--no-webui"]
    return Server(command, port, "/health")
