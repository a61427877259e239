"""Several installed models behind one server (127.0.0.1): both chat APIs list them, the resident one
first, and a request naming another swaps it in; one model is resident at a time."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from support.images import data_uri, encode_image
from support.servers import LiveServer

from llava_edge import Captioner, GenerationOptions, RuntimeOptions
from llava_edge.models.synthetic import build_synthetic_pair
from llava_edge.runtime.quantize import quantize_gguf
from llava_edge.server.settings import ServerSettings

pytestmark = pytest.mark.slow

OPTIONS = GenerationOptions(max_tokens=6, temperature=0.0)
TINY, SMALL = "synthetic-tiny", "synthetic-kquant-small"


@pytest.fixture(scope="module")
def installed() -> None:
    """Both synthetic pairs built, so both count as installed."""
    build_synthetic_pair("tiny")
    build_synthetic_pair("kquant-small", quantize=quantize_gguf)


@pytest.fixture
def server(installed: None) -> Iterator[LiveServer]:
    """A server on its own captioner (a swap closes the resident model: never the session's), swapping at once:
    these tests are about what a swap does; test_swap_policy.py is about when one happens."""
    captioner = Captioner(TINY, generation=OPTIONS)
    live = LiveServer(captioner, ServerSettings(min_residency=0))
    yield live
    live.stop()
    live.service.captioner.close()
    captioner.close()


def ask(question: str = "Describe this image.") -> list[dict[str, object]]:
    image = {"type": "image_url", "image_url": {"url": data_uri(encode_image(40, 30)), "detail": "low"}}
    return [{"role": "user", "content": [{"type": "text", "text": question}, image]}]


def test_installed_models_are_listed_once_each_resident_first(server: LiveServer) -> None:
    models = httpx.get(f"{server.http}/v1/models").json()["data"]
    tags = httpx.get(f"{server.http}/api/tags").json()["models"]

    ours = (TINY, SMALL)  # other synthetic models other tests built may be listed too
    assert [(model["id"], model["resident"]) for model in models if model["id"] in ours] == [(TINY, True),
                                                                                              (SMALL, False)]
    assert models[0]["id"] == TINY
    assert [model.model for model in ollama.Client(host=server.http).list().models if model.model in ours] == [TINY,
                                                                                                           SMALL]
    for listing in (models, tags):  # the generic names are the start model's aliases, not more models
        assert "llava:7b" in listing[0]["aliases"] and "runware:150@2" in listing[0]["aliases"]
        assert all("llava" not in entry["aliases"] for entry in listing[1:])
        assert all(entry["capabilities"] == ["completion", "vision"] for entry in listing)


def test_naming_another_installed_model_swaps_it_in(server: LiveServer) -> None:
    client = openai.OpenAI(base_url=f"{server.http}/v1", api_key="unused")
    before = server.service.captioner

    answer = client.chat.completions.create(model=SMALL, messages=ask(), max_tokens=6, temperature=0)  # type: ignore[arg-type]

    with Captioner(SMALL) as alone:
        expected = alone.describe(encode_image(40, 30), "Describe this image.", detail="low", options=OPTIONS)
    assert answer.choices[0].message.content == expected.text and answer.model == SMALL
    assert server.service.captioner.model_name == SMALL and server.service.health()["model"] == SMALL
    assert [model.model for model in ollama.Client(host=server.http).ps().models] == [SMALL]
    with pytest.raises(Exception, match="closed"):  # one model resident at a time: the first was freed
        before.describe(encode_image(), "Hi")


def test_a_generic_name_means_the_start_model_and_swaps_it_back(server: LiveServer) -> None:
    client = ollama.Client(host=server.http)
    client.generate(model=SMALL, prompt="Hi", images=[encode_image()], options={"num_predict": 2})
    assert [model.model for model in client.list().models if model.model in (TINY, SMALL)] == [SMALL, TINY]

    reply = client.generate(model="llava:7b", prompt="Hi", images=[encode_image()], options={"num_predict": 2})
    assert reply.done and server.service.captioner.model_name == TINY  # llava:7b names the start model
    assert reply.model == "llava:7b"
    assert client.show(SMALL).details is not None and client.show(SMALL).details.quantization_level == "unknown"


def test_a_model_that_fails_to_load_leaves_the_previous_one_resident(
    installed: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = tmp_path / "cache"
    real = build_synthetic_pair("tiny").model_path.parent
    shutil.copytree(real, cache / "synthetic" / real.name)
    broken = cache / "synthetic" / real.name.replace("tiny", "kquant-small")
    shutil.copytree(real, broken)
    (broken / build_synthetic_pair("tiny").model_path.name).write_bytes(b"GGUF" + b"\0" * 64)
    monkeypatch.setenv("LLAVA_EDGE_CACHE", str(cache))
    captioner = Captioner(TINY, generation=OPTIONS)
    live = LiveServer(captioner, ServerSettings())
    try:
        client = openai.OpenAI(base_url=f"{live.http}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model=SMALL, messages=ask(), max_tokens=4)  # type: ignore[arg-type]
        answer = client.chat.completions.create(model=TINY, messages=ask(), max_tokens=4)  # type: ignore[arg-type]
    finally:
        live.stop()
        live.service.captioner.close()
        captioner.close()
    assert failed.value.status_code == 500 and "Delete it and download it again" in failed.value.message
    assert answer.choices[0].message.content is not None and live.service.captioner.model_name == TINY


def test_a_swap_frees_the_first_models_prefix_cache(installed: None) -> None:
    captioner = Captioner(TINY, generation=OPTIONS, runtime=RuntimeOptions(prefix_cache_bytes=256 * 2**20))
    live = LiveServer(captioner, ServerSettings(min_residency=0))
    try:
        client = openai.OpenAI(base_url=f"{live.http}/v1", api_key="unused", max_retries=0)
        client.chat.completions.create(model=TINY, messages=ask(), max_tokens=2)  # type: ignore[arg-type]
        cached = captioner.runtime.prefix_cache.size
        client.chat.completions.create(model=SMALL, messages=ask(), max_tokens=2)  # type: ignore[arg-type]
    finally:
        live.stop()
        live.service.captioner.close()
        captioner.close()
    assert cached > 0  # the image prefix was kept while TINY was resident
    assert captioner.runtime.prefix_cache.size == 0 and captioner.runtime.prefix_cache.get("any") is None
