"""Image token budgets through every server API on the real tiny model (127.0.0.1): Runware's ``imageTokens``
and ``tokenSelection``, the OpenAI and Responses body fields ``image_tokens`` and ``token_selection``, and
Ollama's ``options.image_tokens`` and ``options.token_selection``. Each budget changes what is fed, answers as
``Captioner.describe`` with the same budget, leaves the default unchanged, and is refused in the API's shape
when it is bad."""

from __future__ import annotations

import base64
import io
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from PIL import Image
from support.images import data_uri
from support.servers import LiveServer, caption_task, post

from llava_edge import Captioner, CaptionResult

PROMPT = "Describe this image."


@pytest.fixture(scope="module")
def photo() -> bytes:
    """A 672x672 PNG of noise: 2,880 image tokens at full detail, and greedy answers that depend on them."""
    pixels = np.random.default_rng(11).integers(0, 256, (672, 672, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def reference(captioner: Captioner, photo: bytes, max_tokens: int, **budget: Any) -> CaptionResult:
    """The in-process greedy answer (the reference every surface must give)."""
    options = replace(captioner.generation, max_tokens=max_tokens, temperature=0.0)
    return captioner.describe(photo, PROMPT, detail="high", options=options, **budget)


def described(captioner: Captioner, photo: bytes, max_tokens: int, **budget: Any) -> str:
    return reference(captioner, photo, max_tokens, **budget).text


# -- Runware --------------------------------------------------------------------------------------------


def test_runware_image_tokens_answer_as_the_api_with_that_budget(
    serve: Callable[..., LiveServer], captioner: Captioner, photo: bytes
) -> None:
    server = serve()
    tasks = [caption_task(data_uri(photo), prompt=PROMPT, detail="high", temperature=0, maxTokens=12, **fields)
             for fields in ({"imageTokens": 640, "tokenSelection": "pooled"}, {"imageTokens": 320}, {})]
    response = httpx.post(f"{server.http}/v1", json=tasks, timeout=120)
    assert response.status_code == 200, response.text
    pooled, diverse, full = (item["text"] for item in response.json()["data"])

    assert pooled == described(captioner, photo, 12, image_tokens=640, token_selection="pooled")
    assert diverse == described(captioner, photo, 12, image_tokens=320, token_selection="diverse")
    assert full == described(captioner, photo, 12) and len({pooled, diverse, full}) == 3
    in_process = captioner.run_task({**tasks[0], "taskUUID": str(uuid.uuid4())})
    assert in_process["text"] == pooled


@pytest.mark.parametrize(
    ("fields", "code", "parameter"),
    [
        ({"imageTokens": 0}, "invalidImageTokens", "imageTokens"),
        ({"imageTokens": "640"}, "invalidImageTokens", "imageTokens"),
        ({"imageTokens": 640, "tokenSelection": "random"}, "invalidTokenSelection", "tokenSelection"),
    ],
)
def test_runware_refuses_a_bad_budget_with_an_error_item(
    serve: Callable[..., LiveServer], fields: dict[str, Any], code: str, parameter: str, photo: bytes
) -> None:
    task = caption_task(data_uri(photo), **fields)
    response = post(serve(), [task])
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert (error["code"], error["parameter"], error["taskUUID"]) == (code, parameter, task["taskUUID"])
    assert parameter in error["message"]


# -- OpenAI Chat Completions and Responses ----------------------------------------------------------------


def chat_body(photo: bytes, **fields: Any) -> dict[str, Any]:
    content = [{"type": "text", "text": PROMPT},
               {"type": "image_url", "image_url": {"url": data_uri(photo), "detail": "high"}}]
    return {"model": "llava", "messages": [{"role": "user", "content": content}], "max_tokens": 12,
            "temperature": 0, **fields}


def responses_body(photo: bytes, **fields: Any) -> dict[str, Any]:
    content = [{"type": "input_text", "text": PROMPT},
               {"type": "input_image", "image_url": data_uri(photo), "detail": "high"}]
    return {"model": "llava", "input": [{"role": "user", "content": content}], "max_output_tokens": 12,
            "temperature": 0, **fields}


def test_chat_completions_image_tokens_feed_fewer_tokens_and_answer_as_the_api(
    serve: Callable[..., LiveServer], captioner: Captioner, photo: bytes
) -> None:
    client = openai.OpenAI(base_url=f"{serve().http}/v1", api_key="unused", timeout=120)
    body = chat_body(photo)
    full = client.chat.completions.create(**body)
    reduced = client.chat.completions.create(**body, extra_body={"image_tokens": 640, "token_selection": "uniform"})

    assert full.usage is not None and reduced.usage is not None
    assert reduced.usage.prompt_tokens == full.usage.prompt_tokens - 2880 + 640
    assert reduced.choices[0].message.content == described(captioner, photo, 12, image_tokens=640,
                                                           token_selection="uniform")
    assert full.choices[0].message.content == described(captioner, photo, 12)


def test_chat_completions_stream_under_a_budget(serve: Callable[..., LiveServer], captioner: Captioner,
                                                photo: bytes) -> None:
    client = openai.OpenAI(base_url=f"{serve().http}/v1", api_key="unused", timeout=120)
    stream = client.chat.completions.create(**chat_body(photo), stream=True, stream_options={"include_usage": True},
                                            extra_body={"image_tokens": 320})
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    expected = reference(captioner, photo, 12, image_tokens=320)
    assert text == expected.text and expected.timings.image_tokens == 320
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens == expected.timings.prompt_tokens


def test_responses_image_tokens_feed_fewer_tokens_and_answer_as_the_api(
    serve: Callable[..., LiveServer], captioner: Captioner, photo: bytes
) -> None:
    server = serve()
    full = httpx.post(f"{server.http}/v1/responses", json=responses_body(photo), timeout=120).json()
    reduced = httpx.post(f"{server.http}/v1/responses", timeout=120,
                         json=responses_body(photo, image_tokens=640, token_selection="pooled")).json()

    assert reduced["usage"]["input_tokens"] == full["usage"]["input_tokens"] - 2880 + 640
    assert reduced["output"][0]["content"][0]["text"] == described(captioner, photo, 12, image_tokens=640,
                                                                   token_selection="pooled")
    assert full["output"][0]["content"][0]["text"] == described(captioner, photo, 12)


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/responses"])
@pytest.mark.parametrize(
    ("fields", "parameter"),
    [
        ({"image_tokens": 0}, "image_tokens"),
        ({"image_tokens": 64.5}, "image_tokens"),
        ({"image_tokens": True}, "image_tokens"),
        ({"image_tokens": "640"}, "image_tokens"),
        ({"image_tokens": 640, "token_selection": "random"}, "token_selection"),
        ({"token_selection": 3}, "token_selection"),
    ],
)
def test_openai_routes_refuse_a_bad_budget_with_a_400(
    serve: Callable[..., LiveServer], photo: bytes, route: str, fields: dict[str, Any], parameter: str
) -> None:
    body = chat_body(photo, **fields) if route == "/v1/chat/completions" else responses_body(photo, **fields)
    response = httpx.post(f"{serve().http}{route}", json=body, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", parameter, "invalid_value")
    assert parameter in error["message"]


# -- Ollama -----------------------------------------------------------------------------------------------


def ollama_body(photo: bytes, chat: bool, **options: Any) -> dict[str, Any]:
    image = base64.b64encode(photo).decode()
    question: dict[str, Any] = ({"messages": [{"role": "user", "content": PROMPT, "images": [image]}]} if chat
                                else {"prompt": PROMPT, "images": [image]})
    return {"model": "llava", "stream": False, "options": {"temperature": 0, "num_predict": 12, **options},
            **question}


@pytest.mark.parametrize("chat", [False, True], ids=["generate", "chat"])
def test_ollama_options_image_tokens_feed_fewer_tokens_and_answer_as_the_api(
    serve: Callable[..., LiveServer], captioner: Captioner, photo: bytes, chat: bool
) -> None:
    url = f"{serve().http}/api/{'chat' if chat else 'generate'}"
    full = httpx.post(url, json=ollama_body(photo, chat), timeout=120).json()
    reduced = httpx.post(url, json=ollama_body(photo, chat, image_tokens=320, token_selection="uniform"),
                         timeout=120).json()

    def text(answer: dict[str, Any]) -> str:
        return str(answer["message"]["content"] if chat else answer["response"])

    assert reduced["prompt_eval_count"] == full["prompt_eval_count"] - 2880 + 320
    assert text(reduced) == described(captioner, photo, 12, image_tokens=320, token_selection="uniform")
    assert text(full) == described(captioner, photo, 12)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"image_tokens": -1}, "options.image_tokens"),
        ({"image_tokens": [640]}, "options.image_tokens"),
        ({"image_tokens": 640, "token_selection": "DIVERSE"}, "options.token_selection"),
    ],
)
def test_ollama_refuses_a_bad_budget_with_a_400(
    serve: Callable[..., LiveServer], photo: bytes, options: dict[str, Any], field: str
) -> None:
    response = httpx.post(f"{serve().http}/api/generate", json=ollama_body(photo, False, **options), timeout=30)
    assert response.status_code == 400
    assert set(response.json()) == {"error"} and field in response.json()["error"]
