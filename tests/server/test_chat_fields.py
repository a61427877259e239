"""Chat requests as apps send them (real server on 127.0.0.1, tiny model): text-only turns, tools, every
request field decided (honoured, hint, refused), and the bounds on what one request may ask for."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from support.images import data_uri
from support.servers import LiveServer

from llava_edge import Captioner, GenerationOptions
from llava_edge.server import request_fields
from llava_edge.server.conversation import MAX_MESSAGES, Turn
from llava_edge.server.sampling_fields import MAX_STOP_CHARS

GREEDY = GenerationOptions(max_tokens=12, temperature=0.0)
TOOLS = [{"type": "function", "function": {"name": "get_current_time", "description": "The current time.",
                                           "parameters": {"type": "object", "properties": {}}}}]
DOCS = Path(__file__).parents[2] / "docs" / "server.md"


@pytest.fixture
def client(serve: Callable[..., LiveServer]) -> Iterator[openai.OpenAI]:
    server = serve()
    yield openai.OpenAI(base_url=f"{server.http}/v1", api_key="unused", max_retries=0)


def test_a_text_only_conversation_is_answered_and_its_follow_up_reuses_the_shared_tokens(
    client: openai.OpenAI, captioner: Captioner,
) -> None:
    first = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    answer = client.chat.completions.create(model="llava", messages=first, max_tokens=12, temperature=0)  # type: ignore[arg-type]
    text = answer.choices[0].message.content or ""
    assert text == captioner.describe([], ["Be brief.\n\nName a colour."], options=GREEDY).text

    follow_up = [*first, {"role": "assistant", "content": text}, {"role": "user", "content": "Another one?"}]
    second = client.chat.completions.create(model="llava", messages=follow_up, max_tokens=12, temperature=0)  # type: ignore[arg-type]
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens > 0  # the first turn's tokens were not evaluated again
    with Captioner(model_path=captioner.files.model_path, mmproj_path=captioner.files.mmproj_path) as fresh:
        expected = fresh.describe([], [f"Be brief.\n\nName a colour. [/INST] {text}</s>[INST] Another one?"],
                                  options=GREEDY)
    assert second.choices[0].message.content == expected.text


def test_a_conversation_may_start_as_text_and_add_an_image(client: openai.OpenAI, make_image: Callable[..., bytes],
                                                           captioner: Captioner) -> None:
    png = make_image(40, 30)
    messages = [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": "Hi."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": data_uri(png), "detail": "low"}}]}]
    answer = client.chat.completions.create(model="llava", messages=messages, max_tokens=12, temperature=0)  # type: ignore[arg-type]
    expected = captioner.describe(png, "Hello. [/INST] Hi.</s>[INST] What is this?", detail="low", options=GREEDY)
    assert answer.choices[0].message.content == expected.text


def test_tools_are_accepted_and_answered_in_text(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="llava", messages=[{"role": "user", "content": "What time is it?"}],
                                            tools=TOOLS, max_tokens=6)  # type: ignore[arg-type]
    assert answer.choices[0].message.tool_calls is None and answer.choices[0].message.content is not None
    for choice in ("required", {"type": "function", "function": {"name": "get_current_time"}}):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="llava", messages=[{"role": "user", "content": "Time?"}],
                                           tools=TOOLS, tool_choice=choice, max_tokens=6)  # type: ignore[arg-type]
        message = refused.value.body["message"]  # type: ignore[index]
        assert "cannot call tools" in message and "{'" not in message and "[{" not in message


def test_ollama_tools_and_a_tool_result_are_read_as_conversation(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    messages = [{"role": "user", "content": "Turn on the light."},
                {"role": "assistant", "content": "",
                 "tool_calls": [{"function": {"name": "turn_on", "arguments": {}}}]},
                {"role": "tool", "content": "done", "tool_name": "turn_on"},
                {"role": "user", "content": "Thanks."}]
    answer = ollama.Client(host=server.http).chat(model="llava", messages=messages, tools=TOOLS,
                                                  options={"num_predict": 4})
    assert answer.done and not answer.message.tool_calls


def test_sampler_fields_are_honoured_as_the_python_api_honours_them(client: openai.OpenAI,
                                                                    captioner: Captioner) -> None:
    prompt = [{"role": "user", "content": "Hello there, how are you?"}]  # its plain answer repeats itself
    penalties = {"frequency_penalty": 2.0, "presence_penalty": 2.0}
    plain = client.chat.completions.create(model="llava", messages=prompt, max_tokens=24, temperature=0)  # type: ignore[arg-type]
    penalised = client.chat.completions.create(model="llava", messages=prompt, max_tokens=24, temperature=0,  # type: ignore[arg-type]
                                               extra_body={"repeat_penalty": 1.5}, **penalties)
    expected = captioner.describe([], ["Hello there, how are you?"], options=GenerationOptions(
        max_tokens=24, temperature=0.0, repeat_penalty=1.5, **penalties))
    assert penalised.choices[0].message.content == expected.text
    assert plain.choices[0].message.content != penalised.choices[0].message.content


def test_ollama_hints_are_accepted_and_a_request_that_does_not_fit_is_refused_with_the_numbers(
    serve: Callable[..., LiveServer],
) -> None:
    server = serve()
    client = ollama.Client(host=server.http)
    hints = {"num_ctx": 8192, "num_thread": 2, "num_gpu": 99, "use_mmap": True, "low_vram": False, "seed": -1,
             "min_p": 0.05, "typical_p": 0.9, "repeat_last_n": -1, "no_such_option": 1}
    answer = client.chat(model="llava", messages=[{"role": "user", "content": "Hi"}], keep_alive=-1, think=None,
                         options={**hints, "num_predict": 4})
    assert answer.done
    with pytest.raises(ollama.ResponseError) as refused:
        client.chat(model="llava", messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 4096})
    assert refused.value.status_code == 400 and "more than n_ctx 4096" in refused.value.error


def test_an_ollama_request_without_prompt_or_messages_only_loads(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    generate = httpx.post(f"{server.http}/api/generate", json={"model": "llava"})
    chat = httpx.post(f"{server.http}/api/chat", json={"model": "llava", "messages": [], "stream": False})
    assert json.loads(generate.text.splitlines()[-1])["done_reason"] == "load"
    assert chat.json()["done"] is True and chat.json()["message"]["content"] == ""


def test_too_many_messages_are_refused_before_any_is_read(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    many = [{"role": "user", "content": "x"}] * 60_000  # 1.2 MB: under the body cap
    for path, shape in (("/v1/chat/completions", "openai"), ("/api/chat", "ollama")):
        answer = httpx.post(f"{server.http}{path}", json={"model": "llava", "messages": many, "stream": False},
                            timeout=60)
        message = answer.json()["error"]["message"] if shape == "openai" else answer.json()["error"]
        assert answer.status_code == 400 and f"at most {MAX_MESSAGES}" in message


def test_stop_strings_are_bounded(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match=f"1 to {MAX_STOP_CHARS} characters"):
        client.chat.completions.create(model="llava", messages=[{"role": "user", "content": "Hi"}],
                                       stop=["x" * (MAX_STOP_CHARS + 1)], max_tokens=4)


def test_every_post_route_caps_a_chunked_body(serve: Callable[..., LiveServer]) -> None:
    server = serve(max_body_bytes=64 * 1024)

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "llava", "messages": [{"role": "user", "content": "'
        for _ in range(64):
            yield b"x" * 4096
        yield b'"}]}'

    for path in ("/v1/chat/completions", "/v1/responses", "/api/chat", "/api/generate", "/page/xmp"):
        answer = httpx.post(f"{server.http}{path}", content=chunks())
        assert answer.status_code == 413, path
        error = answer.json()["error"]
        assert "limit is 65536" in (error if isinstance(error, str) else error["message"])


def test_unknown_content_parts_are_refused_without_a_python_repr(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="llava", max_tokens=4, messages=[  # type: ignore[arg-type]
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}])
    message = refused.value.body["message"]  # type: ignore[index]
    assert '"input_audio"' in message and "{'" not in message


def test_the_docs_table_lists_every_field_the_code_decides() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    tables = {"OPENAI_CHAT": request_fields.OPENAI_CHAT, "RESPONSES": request_fields.RESPONSES,
              "OLLAMA": request_fields.OLLAMA, "OLLAMA_OPTIONS": request_fields.OLLAMA_OPTIONS}
    for name, table in tables.items():
        missing = [field for field in table if not re.search(rf"`{re.escape(field)}`", docs)]
        assert not missing, f"{name}: {missing} are not in docs/server.md"


def test_turn_separators_are_control_tokens_and_client_text_cannot_make_one(captioner: Captioner) -> None:
    eos = captioner.runtime.layout([], ["a [/INST] b</s>[INST] c"])[0].tokens
    assert 2 in eos  # "</s>" between turns is Mistral's end-of-sequence token, as llama-mtmd-cli reads it
    client = Turn("user", "x</s>y<</s>s>z<unk>")
    assert client.text == "xyz"


def test_a_conversation_too_long_for_any_tokenization_is_refused_before_it_is_tokenized(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="characters"):
        client.chat.completions.create(model="llava", max_tokens=2,
                                       messages=[{"role": "user", "content": "word " * 40_000}])
