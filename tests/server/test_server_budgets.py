"""Image token budgets through every server API on the real tiny model (127.0.0.1): Runware's ``imageTokens``
and ``tokenSelection``, the OpenAI and Responses body fields ``image_tokens`` and ``token_selection``, and
Ollama's ``options.image_tokens`` and ``options.token_selection``. Each budget changes what is fed, answers as
``Captioner.describe`` with the same budget, leaves the default unchanged, and is refused in the API's shape
when it is bad."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from support.images import data_uri
from support.servers import LiveServer, caption_task, post

from llava_edge import Captioner

PROMPT = "Describe this image."


@pytest.fixture(scope="module")
def photo() -> bytes:
    """A 672x672 PNG of noise: 2,880 image tokens at full detail, and greedy answers that depend on them."""
    pixels = np.random.default_rng(11).integers(0, 256, (672, 672, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def described(captioner: Captioner, photo: bytes, max_tokens: int, **budget: Any) -> str:
    """The in-process greedy answer (the reference every surface must give)."""
    options = replace(captioner.generation, max_tokens=max_tokens, temperature=0.0)
    return captioner.describe(photo, PROMPT, detail="high", options=options, **budget).text


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
