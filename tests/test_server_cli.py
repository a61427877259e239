"""``llava-edge serve`` as a user runs it: a subprocess on 127.0.0.1 with the synthetic-tiny preset."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from conftest import caption_task, data_uri

SERVE = [sys.executable, "-m", "llava_edge", "serve"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served() -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    process = subprocess.Popen([*SERVE, "--model", "synthetic-tiny", "--port", str(port), "--threads", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        try:
            httpx.get(f"{root}/health", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    try:
        yield process, root
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=15)


def test_serve_synthetic_tiny_end_to_end(
    served: tuple[subprocess.Popen[str], str], make_image: Callable[..., bytes]
) -> None:
    process, root = served
    health = httpx.get(f"{root}/health", timeout=5).json()
    assert health["model"] == "synthetic-tiny" and health["queueDepth"] == 0
    task = caption_task(data_uri(make_image()), maxTokens=8)
    item = httpx.post(f"{root}/v1", json=[task], timeout=60).json()["data"][0]
    assert item["taskUUID"] == task["taskUUID"] and item["text"]
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert "synthetic-tiny loaded; serving http://127.0.0.1" in output


def test_serve_refuses_a_public_bind_without_a_key() -> None:
    started = time.monotonic()
    command = [*SERVE, "--host", "0.0.0.0", "--model", "synthetic-tiny"]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 1
    assert "--api-key" in done.stderr and "invalidServerConfig" in done.stderr
    assert time.monotonic() - started < 30  # refused before any model is loaded


def test_serve_without_the_server_extra_names_the_install_command() -> None:
    script = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("fastapi", "uvicorn"):
                    raise ImportError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, Block())
        from llava_edge.cli import main
        main(["serve", "--model", "synthetic-tiny"])
    """)
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert 'pip install "llava-edge[server]"' in done.stderr
