"""Conversations with several images, through the OpenAI and Ollama APIs on the real server (127.0.0.1,
tiny model), and how a conversation becomes the model's prompt."""

from __future__ import annotations

import base64
from collections.abc import Callable

import httpx
import ollama
import openai
import pytest
from support.images import data_uri, encode_image
from support.servers import LiveServer

from llava_edge import Captioner, GenerationOptions
from llava_edge.server.conversation import MAX_CONVERSATION_IMAGES, Turn, conversation_images, conversation_prompt

GREEDY = GenerationOptions(max_tokens=6, temperature=0.0)


def image_part(uri: str) -> dict[str, object]:
    return {"type": "image_url", "image_url": {"url": uri, "detail": "low"}}


def test_a_later_image_opens_the_user_turn_that_first_shows_it() -> None:
    turns = [Turn("system", "Be brief."), Turn("user", "What is this?", ("A",)), Turn("assistant", "A cat."),
             Turn("user", "And this one?", ("A", "B")), Turn("assistant", "A dog."), Turn("user", "Which is bigger?")]

    assert conversation_images(turns) == ("A", "B")
    assert conversation_prompt(turns) == (
        "Be brief.\n\nWhat is this? [/INST] A cat.</s>[INST] ",
        "\nAnd this one? [/INST] A dog.</s>[INST] Which is bigger?",
    )


def test_one_image_resent_every_turn_is_one_image() -> None:
    turns = [Turn("user", "Describe.", ("A",)), Turn("assistant", "Text."), Turn("user", "More?", ("A",))]

    assert conversation_images(turns) == ("A",)
    assert conversation_prompt(turns) == ("Describe. [/INST] Text.</s>[INST] More?",)


def test_two_images_are_captioned_together_as_the_python_api_does(
    serve: Callable[..., LiveServer], captioner: Captioner,
) -> None:
    first, second = encode_image(40, 30), encode_image(30, 40)
    server = serve()
    client = openai.OpenAI(base_url=f"{server.http}/v1", api_key="unused")
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, image_part(data_uri(first))]},
        {"role": "assistant", "content": "A pattern."},
        {"role": "user", "content": [{"type": "text", "text": "And this?"}, image_part(data_uri(second))]},
    ]

    answer = client.chat.completions.create(model="llava", messages=messages, max_tokens=6, temperature=0)  # type: ignore[arg-type]
    alone = client.chat.completions.create(model="llava", messages=messages[-1:], max_tokens=6, temperature=0)  # type: ignore[arg-type]

    expected = captioner.describe([first, second], ["What is this? [/INST] A pattern.</s>[INST] ", "\nAnd this?"],
                                  detail="low", options=GREEDY)
    assert answer.choices[0].message.content == expected.text
    assert answer.usage is not None and alone.usage is not None
    assert answer.usage.prompt_tokens - alone.usage.prompt_tokens >= expected.timings.image_tokens // 2


def test_the_ollama_client_sends_two_images_in_one_message(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    images = [base64.b64encode(encode_image(40, 30)).decode(), base64.b64encode(encode_image(30, 40)).decode()]

    reply = ollama.Client(host=server.http).chat(
        model="llava", messages=[{"role": "user", "content": "Compare them.", "images": images}],
        options={"num_predict": 4, "temperature": 0},
    )

    assert reply.done and reply.prompt_eval_count is not None and reply.prompt_eval_count > 2 * 576


def test_images_that_do_not_fit_the_context_are_refused_with_the_numbers(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    images = [image_part(data_uri(encode_image(20 + index, 20))) for index in range(MAX_CONVERSATION_IMAGES)]
    body = {"model": "llava", "max_tokens": 8, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe them."}, *images]}]}

    answer = httpx.post(f"{server.http}/v1/chat/completions", json=body, timeout=120)

    error = answer.json()["error"]
    assert answer.status_code == 400 and f"The {MAX_CONVERSATION_IMAGES} images (" in error["message"]
    assert "n_ctx 4096" in error["message"] and "Send fewer images" in error["message"]


def test_more_images_than_a_context_holds_are_refused_before_any_is_read(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    images = [image_part(f"http://127.0.0.1:9/{index}.png") for index in range(MAX_CONVERSATION_IMAGES + 1)]
    body = {"model": "llava", "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}, *images]}]}

    answer = httpx.post(f"{server.http}/v1/chat/completions", json=body, timeout=10)

    assert answer.status_code == 400 and answer.json()["error"]["code"] == "tooManyImages"


def test_a_follow_up_about_two_images_reuses_their_evaluated_prefix(captioner: Captioner) -> None:
    images = [encode_image(44, 30), encode_image(30, 44)]
    prefix = "What is this? [/INST] A pattern.</s>[INST] "

    first = captioner.describe(images, [prefix, "\nAnd this?"], detail="low", options=GREEDY)
    follow_up = captioner.describe(images, [prefix, "\nAnd this? [/INST] Another.</s>[INST] Which is wider?"],
                                   detail="low", options=GREEDY)

    assert not first.timings.prefix_cache_hit
    assert follow_up.timings.prefix_cache_hit and follow_up.timings.image_encode_s == 0.0


@pytest.mark.parametrize("texts", [["one"], ["one", "two", "three"]])
def test_the_python_api_wants_one_text_per_image(captioner: Captioner, texts: list[str]) -> None:
    with pytest.raises(ValueError, match="one prompt text per image"):
        captioner.describe([encode_image(), encode_image(30, 30)], texts)
