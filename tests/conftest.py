"""Shared fixtures: the real tiny synthetic model pair, a session Captioner, and image factories.

Tests write only to temporary folders and to the checkout's git-ignored ``.test-cache/``, where built
synthetic models and test venvs persist between runs (``$LLAVA_EDGE_TEST_CACHE`` moves it). The user's
``~/.cache/llava-edge``, data folder and Hugging Face cache are never touched.
"""

from __future__ import annotations

from support.sandbox import isolate_session_environment

# Set before anything imports huggingface_hub (it reads its variables once, at import), and in
# os.environ itself so that every subprocess a test starts (the CLI, ``llava-edge serve``) inherits it.
isolate_session_environment()

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.images import ImageFactory, encode_image
from support.net_fakes import RawHTTP, Tripwire
from support.servers import LiveServer, LoopbackHTTP, ModelHold, ServeProcess

from llava_edge import Captioner, GenerationOptions
from llava_edge.image_store import ImageStore
from llava_edge.models.catalog import ModelFiles
from llava_edge.models.synthetic import build_synthetic_pair


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


@pytest.fixture
def make_image() -> ImageFactory:
    """Encode a generated picture: ``make_image(width, height, format="PNG", mode="RGB")`` -> bytes."""
    return encode_image


# -- servers (tests/server/) ------------------------------------------------------------------------


@pytest.fixture
def serve(captioner: Captioner) -> Iterator[Callable[..., LiveServer]]:
    """Start servers on the session captioner: ``serve(**ServerSettings fields)``; stopped after the test."""
    from llava_edge.server.settings import ServerSettings

    started: list[LiveServer] = []

    def start(**settings: object) -> LiveServer:
        server = LiveServer(captioner, ServerSettings(**settings))  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    ModelHold.release_all()
    for server in started:
        server.stop()


@pytest.fixture
def own_model() -> Iterator[Callable[..., LiveServer]]:
    """``own_model(**ServerSettings fields)``: a server on a captioner of its own (an unload closes it: never the
    session's)."""
    from llava_edge.server.settings import ServerSettings

    build_synthetic_pair("tiny")
    started: list[tuple[LiveServer, Captioner]] = []

    def start(**settings: Any) -> LiveServer:
        captioner = Captioner("synthetic-tiny", generation=GenerationOptions(max_tokens=4, temperature=0.0))
        started.append((LiveServer(captioner, ServerSettings(**settings)), captioner))
        return started[-1][0]

    yield start
    for server, captioner in started:
        server.stop()
        server.service.resident.close()
        captioner.close()


@pytest.fixture
def loopback_http() -> Iterator[LoopbackHTTP]:
    """A recording HTTP endpoint on 127.0.0.1 (webhook receiver, upload target, slow image host)."""
    endpoint = LoopbackHTTP()
    yield endpoint
    endpoint.close()


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Start ``llava-edge serve`` subprocesses: ``serve_process("--max-queue", "4")``; killed after the test."""
    started: list[ServeProcess] = []

    def start(*options: str, **choice: Any) -> ServeProcess:
        started.append(ServeProcess(tmp_path / f"serve-{len(started)}.log", *options, **choice))
        return started[-1]

    yield start
    for process in started:
        process.close()


# -- network fakes (tests/test_outbound.py, tests/server/test_server_ssrf.py) --------------------------


@pytest.fixture
def tripwire() -> Iterator[Tripwire]:
    """Listeners on 127.0.0.1 and ::1 that record whether anything connected to them."""
    wire = Tripwire()
    yield wire
    wire.close()


@pytest.fixture
def raw_http() -> Iterator[Callable[..., RawHTTP]]:
    """Byte-exact scripted HTTP servers on 127.0.0.1: ``raw_http(answer, **options)``; closed after the test."""
    started: list[RawHTTP] = []

    def start(answer: Any, **options: Any) -> RawHTTP:
        started.append(RawHTTP(answer, **options))
        return started[-1]

    yield start
    for server in started:
        server.close()
