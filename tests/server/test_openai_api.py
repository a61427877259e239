"""The OpenAI Chat Completions API on the real server (127.0.0.1, tiny model): the official ``openai``
client unchanged (sync, async, streaming), and the wire shapes pinned with raw HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import openai
import pytest
from support.images import data_uri
from support.servers import LiveServer

from llava_edge import Captioner, GenerationOptions, RuntimeOptions
from llava_edge.models.catalog import ModelFiles
from llava_edge.server.settings import ServerSettings

KEY = "sixteen-char-key-0"


@pytest.fixture
def png(make_image: Callable[..., bytes]) -> str:
    return data_uri(make_image(40, 30))


def ask(png: str, question: str = "Describe this image.", detail: str = "low") -> list[dict[str, object]]:
    return [{"role": "user", "content": [{"type": "text", "text": question},
                                         {"type": "image_url", "image_url": {"url": png, "detail": detail}}]}]


def test_the_openai_client_captions(serve: Callable[..., LiveServer], png: str) -> None:
    server = serve(api_key=KEY)
    client = openai.OpenAI(base_url=f"{server.http}/v1", api_key=KEY)

    answer = client.chat.completions.create(model="llava", messages=ask(png), max_tokens=8, seed=3)  # type: ignore[arg-type]

    assert answer.object == "chat.completion" and answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content and answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage is not None and answer.usage.completion_tokens <= 8
    assert answer.usage.prompt_tokens > 576  # the image's tokens count as prompt tokens


def test_the_async_client_streams_with_usage(serve: Callable[..., LiveServer], png: str) -> None:
    server = serve()

    async def run() -> tuple[str, object, list[str | None]]:
        client = openai.AsyncOpenAI(base_url=f"{server.http}/v1", api_key="unused")
        stream = await client.chat.completions.create(
            model="llava", messages=ask(png), max_tokens=6, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
        text, usage, reasons = "", None, []
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                reasons.append(chunk.choices[0].finish_reason)
            usage = chunk.usage or usage
        return text, usage, reasons

    text, usage, reasons = asyncio.run(run())
    client = openai.OpenAI(base_url=f"{server.http}/v1", api_key="unused")
    whole = client.chat.completions.create(model="llava", messages=ask(png), max_tokens=6)  # type: ignore[arg-type]
    assert text == whole.choices[0].message.content
    assert usage is not None and reasons[-1] in ("stop", "length") and reasons[0] is None


def test_models_are_listed(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    models = openai.OpenAI(base_url=f"{server.http}/v1", api_key="x").models.list()
    names = [model.id for model in models]
    assert names[0] == server.service.captioner.model_name and len(names) == len(set(names))
    assert "llava" not in names and "llava" in models.data[0].model_extra["aliases"]  # type: ignore[index]
    assert models.data[0].model_extra["capabilities"] == ["completion", "vision"]  # type: ignore[index]


WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                                 "parameters": {"type": "object",
                                                                "properties": {"city": {"type": "string"}}}}}


def test_errors_take_openai_s_shape_and_statuses(serve: Callable[..., LiveServer], png: str) -> None:
    server = serve(api_key=KEY)
    client = openai.OpenAI(base_url=f"{server.http}/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.http}/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError, match="not on this machine"):
        client.chat.completions.create(model="gpt-4o", messages=ask(png))  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        client.chat.completions.create(model="llava", messages=ask(png), n=2)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.chat.completions.create(model="llava", messages=ask(png),  # type: ignore[arg-type]
                                       response_format={"type": "grammar"})  # type: ignore[typeddict-item]
    with pytest.raises(openai.BadRequestError, match="cannot call tools"):
        client.chat.completions.create(model="llava", messages=ask(png), tools=[WEATHER_TOOL],  # type: ignore[arg-type]
                                       tool_choice="required")
    with pytest.raises(openai.BadRequestError, match="Log probabilities"):
        client.chat.completions.create(model="llava", messages=ask(png), logprobs=True)  # type: ignore[arg-type]
    raw = httpx.post(f"{server.http}/v1/chat/completions", json={"model": "llava", "messages": ask(png),
                                                                 "max_tokens": 0},
                     headers={"Authorization": f"Bearer {KEY}"})
    assert raw.status_code == 400 and raw.json()["error"] | {"message": ""} == {
        "message": "", "type": "invalid_request_error", "param": "max_tokens", "code": "invalid_value"}


def test_sse_framing_ends_with_done(serve: Callable[..., LiveServer], png: str) -> None:
    server = serve()
    body = {"model": "llava", "messages": ask(png), "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{server.http}/v1/chat/completions", json=body, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in events)
    chunks = [json.loads(line[6:]) for line in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.fixture
def encodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per image encoded by the runtime (the real encoder runs; this only counts the calls)."""
    from llava_edge.runtime import engine

    calls: list[int] = []
    real_eval_image = engine.eval_image

    def counted(*args: object, **kwargs: object) -> int:
        calls.append(1)
        return real_eval_image(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "eval_image", counted)
    return calls


def test_a_follow_up_turn_reuses_the_image(serve: Callable[..., LiveServer], make_image: Callable[..., bytes],
                                          encodes: list[int]) -> None:
    """Chat UIs resend the history: the second turn about the same image does not encode it again."""
    png = data_uri(make_image(52, 39))  # an image no other test used: the first turn must encode it
    server = serve()
    client = openai.OpenAI(base_url=f"{server.http}/v1", api_key="x")
    first = client.chat.completions.create(model="llava", messages=ask(png, detail="high"), max_tokens=4)  # type: ignore[arg-type]
    assert encodes
    encodes.clear()
    history = [*ask(png, detail="high"), {"role": "assistant", "content": first.choices[0].message.content},
               {"role": "user", "content": "What colours stand out?"}]
    second = client.chat.completions.create(model="llava", messages=history, max_tokens=4)  # type: ignore[arg-type]
    assert second.choices[0].message.content and encodes == []


def test_a_page_on_another_origin_cannot_call_it(serve: Callable[..., LiveServer], png: str) -> None:
    server = serve()
    answer = httpx.post(f"{server.http}/v1/chat/completions", json={"model": "llava", "messages": ask(png)},
                        headers={"Origin": "http://evil.example"})
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "invalidOrigin"


def test_interleaved_conversations_keep_their_image_prefixes(
    tiny_files: ModelFiles, make_image: Callable[..., bytes], encodes: list[int]
) -> None:
    """Two clients take turns; with the server's prefix cache (serve --prefix-cache-mb) each follow-up is
    answered without encoding its image again."""
    runtime = RuntimeOptions(prefix_cache_bytes=64 * 2**20)
    with Captioner(model_path=tiny_files.model_path, mmproj_path=tiny_files.mmproj_path, runtime=runtime,
                   generation=GenerationOptions(max_tokens=4, seed=1)) as captioner:
        server = LiveServer(captioner, ServerSettings())
        try:
            client = openai.OpenAI(base_url=f"{server.http}/v1", api_key="x")
            images = [data_uri(make_image(60 + n, 45)) for n in range(2)]
            firsts = [client.chat.completions.create(model="llava", messages=ask(image), max_tokens=4)  # type: ignore[arg-type]
                      for image in images]
            assert len(encodes) == 2
            for image, first in zip(images, firsts, strict=True):
                history = [*ask(image), {"role": "assistant", "content": first.choices[0].message.content},
                           {"role": "user", "content": "And the colours?"}]
                client.chat.completions.create(model="llava", messages=history, max_tokens=4)  # type: ignore[arg-type]
            assert len(encodes) == 2  # both follow-ups came from the cache
        finally:
            server.stop()


def test_the_stream_carries_one_delta_per_token(serve: Callable[..., LiveServer], png: str) -> None:
    server = serve()
    body = {"model": "llava", "messages": ask(png), "max_tokens": 8, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server.http}/v1/chat/completions", json=body, timeout=30) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line and line != "data: [DONE]"]
    pieces = [chunk["choices"][0]["delta"].get("content", "") for chunk in chunks]
    whole = httpx.post(f"{server.http}/v1/chat/completions", json={**body, "stream": False}, timeout=30).json()
    assert len([piece for piece in pieces if piece]) > 1  # generated text arrives token by token
    assert "".join(pieces) == whole["choices"][0]["message"]["content"]
