"""Ollama's API on the real server (127.0.0.1, tiny model): the official ``ollama`` client unchanged
(generate and chat, streaming and not), and the wire shapes pinned with raw HTTP."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import httpx
import ollama
import pytest
from support.servers import LiveServer, wait_until


@pytest.fixture
def png(make_image: Callable[..., bytes]) -> bytes:
    return make_image(40, 30)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_generate_with_the_ollama_client(serve: Callable[..., LiveServer], png: bytes) -> None:
    server = serve()
    client = ollama.Client(host=server.http)

    answer = client.generate(model="llava", prompt="Describe this image.", images=[png],
                             options={"num_predict": 6, "seed": 1, "temperature": 0}, stream=False)

    assert answer.done and answer.done_reason in ("stop", "length") and answer.response
    assert answer.eval_count is not None and 0 < answer.eval_count <= 6
    assert answer.prompt_eval_count is not None and answer.prompt_eval_count > 576
    assert answer.total_duration is not None and answer.total_duration > 1_000  # nanoseconds


def test_streamed_generate_joins_to_the_whole_answer(serve: Callable[..., LiveServer], png: bytes) -> None:
    server = serve()
    client = ollama.Client(host=server.http)
    options = {"num_predict": 6, "seed": 1, "temperature": 0}
    parts = list(client.generate(model="llava:7b", prompt="Describe it.", images=[png], options=options,
                                 stream=True))
    whole = client.generate(model="llava:7b", prompt="Describe it.", images=[png], options=options, stream=False)
    assert "".join(part.response for part in parts) == whole.response
    assert [part.done for part in parts][-1] is True and not any(part.done for part in parts[:-1])


def test_chat_with_the_ollama_client(serve: Callable[..., LiveServer], png: bytes) -> None:
    server = serve()
    client = ollama.Client(host=server.http)
    messages = [{"role": "user", "content": "What is in this picture?", "images": [png]}]
    answer = client.chat(model="llava", messages=messages, options={"num_predict": 5}, stream=False)
    assert answer.message.role == "assistant" and answer.message.content
    streamed = "".join(part.message.content or "" for part in
                       client.chat(model="llava", messages=messages, options={"num_predict": 5, "seed": 0},
                                   stream=True))
    assert streamed


def test_tags_show_version_and_ps(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    client = ollama.Client(host=server.http)
    names = [model.model for model in client.list().models]
    assert names[0] == server.service.captioner.model_name and len(names) == len(set(names))
    first = httpx.get(f"{server.http}/api/tags").json()["models"][0]
    assert "llava:7b" in first["aliases"] and first["capabilities"] == ["completion", "vision"]
    shown = client.show("llava")
    assert shown.capabilities is not None and set(shown.capabilities) == {"completion", "vision"}
    assert shown.details is not None and shown.details.format == "gguf"
    assert httpx.get(f"{server.http}/api/version").json()["version"]
    assert [model.model for model in client.ps().models] == [server.service.captioner.model_name]
    assert httpx.get(f"{server.http}/").text == "Ollama is running"


def test_errors_are_ollama_s(serve: Callable[..., LiveServer], png: bytes) -> None:
    server = serve()
    client = ollama.Client(host=server.http)
    with pytest.raises(ollama.ResponseError) as unknown:
        client.generate(model="mistral", prompt="hi", images=[png], stream=False)
    assert unknown.value.status_code == 404 and "not on this machine" in unknown.value.error
    with pytest.raises(ollama.ResponseError) as structured:
        client.generate(model="llava", prompt="hi", images=[png], format={"type": "integer", "multipleOf": 3},
                        stream=False)
    assert structured.value.status_code == 400 and "format" in structured.value.error
    too_big = httpx.post(f"{server.http}/api/generate", json={"model": "llava", "prompt": "hi", "images": [b64(png)],
                                                              "options": {"num_predict": 4096}, "stream": False})
    assert too_big.status_code == 400 and "more than n_ctx 4096" in too_big.json()["error"]


def test_curl_style_form_bodies_are_read_as_json(serve: Callable[..., LiveServer], png: bytes) -> None:
    """Ollama's docs use ``curl -d '{...}'``, which declares a form body: it must still work."""
    server = serve()
    body = json.dumps({"model": "llava", "prompt": "Describe.", "images": [b64(png)], "stream": False,
                       "options": {"num_predict": 3}})
    answer = httpx.post(f"{server.http}/api/generate", content=body,
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 200 and answer.json()["done"] is True


def test_ndjson_lines_and_nanosecond_durations(serve: Callable[..., LiveServer], png: bytes) -> None:
    server = serve()
    body = {"model": "llava", "prompt": "Describe.", "images": [b64(png)], "options": {"num_predict": 3}}
    with httpx.stream("POST", f"{server.http}/api/generate", json=body, timeout=30) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    final = lines[-1]
    assert final["done"] is True and all(line["done"] is False for line in lines[:-1])
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int)
    assert final["total_duration"] >= final["eval_duration"]


def test_a_page_on_another_origin_cannot_call_it(serve: Callable[..., LiveServer], png: bytes) -> None:
    server = serve()
    answer = httpx.post(f"{server.http}/api/generate", json={"model": "llava", "prompt": "x"},
                        headers={"Origin": "http://evil.example"})
    assert answer.status_code == 403 and "evil.example" in answer.json()["error"]


def test_tokens_stream_as_they_are_generated_and_a_closed_stream_stops_the_caption(
    serve: Callable[..., LiveServer], png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve()
    service = server.service
    outcomes: list[object] = []
    real_complete = service.worker.complete

    def recorded(job: object, outcome: object) -> bool:
        outcomes.append(outcome)
        return real_complete(job, outcome)  # type: ignore[arg-type]

    monkeypatch.setattr(service.worker, "complete", recorded)
    body = {"model": "llava", "prompt": "Describe.", "images": [b64(png)],
            "options": {"num_predict": 3000, "temperature": 0}}
    with httpx.stream("POST", f"{server.http}/api/generate", json=body, timeout=30) as response:
        lines = response.iter_lines()
        first = [json.loads(next(lines)) for _ in range(3)]  # three token pieces, long before the end
    assert all(line["done"] is False and "response" in line for line in first)
    wait_until(lambda: bool(outcomes))
    error = getattr(outcomes[0], "error", None)
    assert type(error).__name__ == "CaptionCancelledError", outcomes  # stopped, not run to 3,000 tokens
    wait_until(lambda: not service.health()["running"])
