"""The official Runware SDKs, unchanged, captioning through the server on the real tiny model.

``runware`` 0.5.24 (legacy: WebSocket, uploads a local file with imageUpload first) and ``runware-sdk``
1.8.0 (WebSocket and REST, ``deliveryMethod: "async"`` by default) install the same import name, so
each gets its own venv, built once and cached in the test cache, ``.test-cache/test-venvs/<pkg>-<version>``
(``$LLAVA_EDGE_TEST_VENVS`` overrides). The client scripts in ``tests/sdk_clients/`` only set the URL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.images import data_uri
from support.sandbox import persistent_cache_dir
from support.servers import LiveServer

from llava_edge import Captioner
from llava_edge.server.settings import ServerSettings

pytestmark = pytest.mark.slow

SDKS = {"legacy": ("runware", "0.5.24"), "new": ("runware-sdk", "1.8.0")}
CLIENTS = Path(__file__).parent / "sdk_clients"
KEY = "sdk-test-key"
PROMPT = "Describe this image in one sentence."


def venv_root() -> Path:
    explicit = os.environ.get("LLAVA_EDGE_TEST_VENVS")
    return Path(explicit) if explicit else persistent_cache_dir() / "test-venvs"


def sdk_python(which: str) -> Path:
    """The interpreter of a venv holding only one SDK; built on first use (skips with the reason if it can't)."""
    package, version = SDKS[which]
    root = venv_root() / f"{package}-{version}"
    python = root / "bin" / "python"
    marker = root / ".llava-edge-ready"
    if marker.exists() and python.exists():
        return python
    steps = [[sys.executable, "-m", "venv", "--clear", str(root)],
             [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{package}=={version}"],
             [str(python), "-c",
              f"import runware, importlib.metadata as m; assert m.version({package!r}) == {version!r}"]]
    for step in steps:
        try:
            subprocess.run(step, check=True, capture_output=True, text=True, timeout=600)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
            detail = getattr(err, "stderr", None) or err
            pytest.skip(f"cannot build the {package}=={version} venv at {root}: {str(detail)[-500:]}")
    marker.write_text(f"{package}=={version}\n")
    return python


def run_client(which: str, script: str, url: str, key: str, image: Path, modes: list[str]) -> dict[str, dict[str, Any]]:
    """Run an SDK client script in its venv; its JSON lines by mode."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("RUNWARE_")}
    done = subprocess.run([str(sdk_python(which)), str(CLIENTS / script), url, key, str(image), PROMPT, *modes],
                          check=False, capture_output=True, text=True, timeout=240, env=env)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [line["mode"] for line in lines] == modes, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    return {line["mode"]: line for line in lines}


@pytest.fixture(scope="module")
def sdk_server(captioner: Captioner) -> Iterator[LiveServer]:
    server = LiveServer(captioner, ServerSettings(api_key=KEY))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("sdk") / "picture.png"
    Image.new("RGB", (48, 32), (30, 140, 200)).save(path)
    return path


@pytest.fixture(scope="module")
def reference(captioner: Captioner, picture: Path) -> dict[str, Any]:
    """The in-process answer for the picture and prompt (deterministic: seed 7)."""
    return captioner.run_task({"taskType": "caption", "taskUUID": str(uuid.uuid4()), "model": "runware:150@2",
                               "prompt": PROMPT, "inputs": {"image": data_uri(picture.read_bytes())},
                               "includeCost": True})


@pytest.fixture(scope="module")
def legacy_results(sdk_server: LiveServer, captioner: Captioner, picture: Path) -> dict[str, Any]:
    store = captioner.image_store.root
    before = len(list(store.glob("*"))) if store.exists() else 0
    results = run_client("legacy", "legacy_runware.py", sdk_server.ws, KEY, picture, ["upload", "datauri"])
    return {"results": results, "stored": len(list(store.glob("*"))) - before}


@pytest.fixture(scope="module")
def new_results(sdk_server: LiveServer, picture: Path) -> dict[str, dict[str, Any]]:
    modes = ["ws-default", "ws-sync", "rest-default", "rest-sync"]
    return run_client("new", "runware_sdk.py", sdk_server.http, KEY, picture, modes)


@pytest.mark.parametrize("mode", ["upload", "datauri"])
def test_legacy_sdk_captions(legacy_results: dict[str, Any], reference: dict[str, Any], mode: str) -> None:
    result = legacy_results["results"][mode]
    assert "error" not in result, result
    assert result["taskType"] == "imageCaption"
    assert uuid.UUID(result["taskUUID"]).version == 4
    assert result["text"] == reference["text"]
    assert result["cost"] == reference["cost"]


def test_legacy_sdk_uploaded_the_local_file_first(legacy_results: dict[str, Any]) -> None:
    assert legacy_results["stored"] == 1  # the "upload" mode stored the file; the data URI went inline


@pytest.mark.parametrize("mode", ["ws-default", "ws-sync", "rest-default", "rest-sync"])
def test_new_sdk_captions(new_results: dict[str, dict[str, Any]], reference: dict[str, Any], mode: str) -> None:
    result = new_results[mode]
    assert "error" not in result, result
    [item] = result["items"]
    assert item["taskUUID"] == result["sentTaskUUID"]
    assert item["text"] == reference["text"] and item["cost"] == reference["cost"]
    # the SDK's default is async: its answer comes from getResponse (status), a sync one comes inline
    assert item.get("status") == ("success" if mode.endswith("default") else None)


def test_wrong_key_fails_cleanly_in_both_sdks(sdk_server: LiveServer, picture: Path) -> None:
    legacy = run_client("legacy", "legacy_runware.py", sdk_server.ws, "wrong-key", picture, ["datauri"])["datauri"]
    assert legacy["error"] == "ConnectionError" and "Invalid API key" in legacy["message"]
    new = run_client("new", "runware_sdk.py", sdk_server.http, "wrong-key", picture, ["ws-sync", "rest-sync"])
    for mode in ("ws-sync", "rest-sync"):
        assert new[mode]["error"] == "RunwareError" and new[mode]["code"] == "auth", new[mode]
    assert new["rest-sync"]["taskType"] == "authentication"
