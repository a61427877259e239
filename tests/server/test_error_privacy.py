"""No error body names the server's folders: a damaged model file on a swap, the image store on a 507 and an
unexpected exception are answered with file names or a generic message, and the whole text goes to the log."""

from __future__ import annotations

import copy
import logging
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from support.damaged_models import cache_with_damaged_small
from support.images import data_uri, encode_image
from support.servers import LiveServer, caption_task, post

from llava_edge import Captioner, GenerationOptions
from llava_edge.image_store import ImageStore
from llava_edge.server.public_errors import public_message
from llava_edge.server.settings import ServerSettings

ABSOLUTE_PATH = re.compile(r"(?<![\w:/\]])/(?:[\w.-]+/)+[\w.-]+")


def assert_no_path(body: str, root: Path) -> None:
    """``body`` names no file under ``root`` (the test's temporary folder) and no absolute path at all."""
    assert str(root) not in body and root.name not in body, body
    assert ABSOLUTE_PATH.search(body) is None, body


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="llava_edge")
    return caplog


@pytest.fixture
def broken_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model cache in ``tmp_path`` with the tiny pair and a ``kquant-small`` pair whose text model is damaged."""
    damaged = cache_with_damaged_small(tmp_path)
    monkeypatch.setenv("LLAVA_EDGE_CACHE", str(tmp_path / "cache"))
    return damaged


@pytest.fixture
def swapping_server(broken_small: Path) -> Iterator[LiveServer]:
    captioner = Captioner("synthetic-tiny", generation=GenerationOptions(max_tokens=4))
    live = LiveServer(captioner, ServerSettings())
    yield live
    live.stop()
    live.service.captioner.close()
    captioner.close()


def test_a_damaged_model_on_a_swap_is_named_by_its_file_only(
    swapping_server: LiveServer, broken_small: Path, tmp_path: Path, logged: pytest.LogCaptureFixture,
) -> None:
    image = data_uri(encode_image(40, 30))
    openai_body = {"model": "synthetic-kquant-small", "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Hi"}, {"type": "image_url", "image_url": {"url": image}}]}]}
    ollama_body = {"model": "synthetic-kquant-small", "prompt": "Hi", "images": [image.split(",", 1)[1]],
                   "stream": False}

    openai = httpx.post(f"{swapping_server.http}/v1/chat/completions", json=openai_body, timeout=60)
    ollama = httpx.post(f"{swapping_server.http}/api/generate", json=ollama_body, timeout=60)

    for answer in (openai, ollama):
        assert answer.status_code == 500 and "model.gguf" in answer.text, answer.text
        assert_no_path(answer.text, tmp_path)
    assert str(broken_small) in logged.text  # the operator still learns which file


def test_a_full_image_store_answers_507_without_its_folder(
    captioner: Captioner, tmp_path: Path, logged: pytest.LogCaptureFixture,
) -> None:
    full = copy.copy(captioner)
    full.image_store = ImageStore(tmp_path / "images", min_free_bytes=shutil.disk_usage(tmp_path).total)
    live = LiveServer(full, ServerSettings())
    try:
        upload = {"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": data_uri(encode_image(20, 20))}
        answer = post(live, [upload])
    finally:
        live.stop()
    assert answer.status_code == 507 and "Not enough free disk space" in answer.text, answer.text
    assert_no_path(answer.text, tmp_path)
    assert str(tmp_path / "images") in logged.text


def test_an_unexpected_exception_is_a_generic_internal_error(
    serve: Callable[..., LiveServer], tmp_path: Path, logged: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = serve()
    secret = tmp_path / "private" / "weights.bin"

    def failing(*args: object, **kwargs: object) -> None:
        raise OSError(5, "Input/output error", str(secret))

    monkeypatch.setattr(server.service.resident.captioner, "run_task", failing)
    answer = post(server, [caption_task(data_uri(encode_image(20, 20)))])

    assert answer.status_code == 500, answer.text
    error = answer.json()["errors"][0]
    assert error["code"] == "internalServerError" and "logged on the server" in error["message"]
    assert_no_path(answer.text, tmp_path)
    assert str(secret) in logged.text


@pytest.mark.parametrize(("message", "shown"), [
    ("The text model /home/ann/models/x/model.gguf is truncated.", "The text model model.gguf is truncated."),
    ("Cannot read '/home/Ann Smith/p/x.png': denied", "Cannot read 'x.png': denied"),
    (r"Failed to load C:\Users\ann\x.gguf", "Failed to load x.gguf"),
    ("(/opt/m/x.gguf)", "(x.gguf)"),
    ("Could not fetch the image at http://127.0.0.1:9/a/b.png.", "Could not fetch the image at http://127.0.0.1:9/a/b.png."),
    ("Could not fetch http://[::1]/a/b or https://h:8080/x/y?z=1", "Could not fetch http://[::1]/a/b or https://h:8080/x/y?z=1"),
    ("Send it to /v1 as JSON.", "Send it to /v1 as JSON."),
])
def test_public_messages_keep_file_names_and_urls(message: str, shown: str) -> None:
    assert public_message(message) == shown
