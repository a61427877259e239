"""``llava-edge serve`` as a user runs it: a subprocess on 127.0.0.1 with the synthetic-tiny preset."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from support.images import data_uri
from support.servers import ServeProcess, caption_task

pytestmark = pytest.mark.slow

SERVE = [sys.executable, "-m", "llava_edge", "serve"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_synthetic_tiny_end_to_end(
    serve_process: Callable[..., ServeProcess], make_image: Callable[..., bytes]
) -> None:
    server = serve_process()
    health = httpx.get(f"{server.http}/health", timeout=5).json()
    assert health["model"] == "synthetic-tiny" and health["queueDepth"] == 0
    task = caption_task(data_uri(make_image()), maxTokens=8)
    item = httpx.post(f"{server.http}/v1", json=[task], timeout=60).json()["data"][0]
    assert item["taskUUID"] == task["taskUUID"] and item["text"]
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(20) == 0, server.output
    assert "synthetic-tiny loaded; serving http://127.0.0.1" in server.output


def test_serve_refuses_a_public_bind_without_a_key(tmp_path: Path) -> None:
    command = [*SERVE, "--host", "0.0.0.0", "--model", "synthetic-tiny"]
    cache = tmp_path / "cache"
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LLAVA_EDGE_CACHE": str(cache),
                               "LLAVA_EDGE_HOME": str(tmp_path / "data")})
    assert done.returncode == 1
    assert "--api-key" in done.stderr and "invalidServerConfig" in done.stderr
    assert not cache.exists() and "loaded" not in done.stderr  # refused before any model was built or loaded


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
