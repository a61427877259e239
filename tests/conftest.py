"""Shared fixtures: the real tiny synthetic model pair, a session Captioner, and image factories.

Synthetic models are cached outside the repo (``~/.cache/llava-edge/synthetic`` or
``$LLAVA_EDGE_CACHE``), so only the first run builds them.
"""

from __future__ import annotations

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
