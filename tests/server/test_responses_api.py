"""The OpenAI Responses API on the real server (127.0.0.1, tiny model): the official ``openai`` client's
``responses.create``/``stream``/``retrieve``/``delete``, the stored conversation, and the guard's checks."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import openai
import pytest
from pydantic import BaseModel
from support.images import data_uri
from support.servers import LiveServer

from llava_edge import Captioner, GenerationOptions
from llava_edge.models.catalog import ModelFiles
from llava_edge.server.conversation import Turn
from llava_edge.server.response_store import ResponseStore
from llava_edge.server.settings import ServerSettings

KEY = "sixteen-char-key-0"
GREEDY = GenerationOptions(max_tokens=8, temperature=0.0)


def photo_input(png: bytes, question: str = "Describe this image.") -> list[dict[str, object]]:
    return [{"role": "user", "content": [{"type": "input_text", "text": question},
                                         {"type": "input_image", "image_url": data_uri(png), "detail": "low"}]}]


def test_create_answers_as_the_python_api_does(serve: Callable[..., LiveServer], captioner: Captioner,
                                               make_image: Callable[..., bytes]) -> None:
    png = make_image(40, 30)
    client = openai.OpenAI(base_url=f"{serve().http}/v1", api_key="unused")
    response = client.responses.create(model="llava", input=photo_input(png), instructions="Be brief.",  # type: ignore[arg-type]
                                       max_output_tokens=8, temperature=0)
    expected = captioner.describe(png, "Be brief.\n\nDescribe this image.", detail="low", options=GREEDY)
    assert response.output_text == expected.text and response.object == "response"
    assert response.status == ("incomplete" if expected.finish_reason == "length" else "completed")
    assert response.usage is not None and response.usage.output_tokens == expected.timings.generated_tokens


def test_previous_response_id_continues_the_stored_conversation(
    serve: Callable[..., LiveServer], captioner: Captioner, make_image: Callable[..., bytes],
) -> None:
    png = make_image(41, 30)
    client = openai.OpenAI(base_url=f"{serve().http}/v1", api_key="unused")
    first = client.responses.create(model="llava", input=photo_input(png), max_output_tokens=8, temperature=0)  # type: ignore[arg-type]
    second = client.responses.create(model="llava", input="And the colours?", previous_response_id=first.id,
                                     max_output_tokens=8, temperature=0)
    assert second.usage is not None and second.usage.input_tokens_details.cached_tokens > 0  # the image prefix
    expected = captioner.describe(png, f"Describe this image. [/INST] {first.output_text}</s>[INST] And the colours?",
                                  detail="low", options=GREEDY)
    assert second.output_text == expected.text and second.previous_response_id == first.id
    assert client.responses.retrieve(first.id).output_text == first.output_text
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError, match="No response with id"):
        client.responses.create(model="llava", input="More?", previous_response_id=first.id)


def test_store_false_keeps_nothing(serve: Callable[..., LiveServer]) -> None:
    client = openai.OpenAI(base_url=f"{serve().http}/v1", api_key="unused")
    response = client.responses.create(model="llava", input="Hello.", store=False, max_output_tokens=4)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_the_stream_sends_the_documented_events(serve: Callable[..., LiveServer], make_image: Callable[..., bytes],
                                                captioner: Captioner) -> None:
    png = make_image(40, 31)
    client = openai.OpenAI(base_url=f"{serve().http}/v1", api_key="unused")
    with client.responses.stream(model="llava", input=photo_input(png), max_output_tokens=8,  # type: ignore[arg-type]
                                 temperature=0) as stream:
        events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    expected = captioner.describe(png, "Describe this image.", detail="low", options=GREEDY)
    assert kinds[-1] == ("response.incomplete" if expected.finish_reason == "length" else "response.completed")
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == expected.text == events[-1].response.output_text  # type: ignore[union-attr]


class Verdict(BaseModel):
    ok: bool


def test_stream_and_parse_return_the_parsed_answer(serve: Callable[..., LiveServer]) -> None:
    """The grammar completes the JSON, so the answer ends by itself: ``response.completed``."""
    client = openai.OpenAI(base_url=f"{serve().http}/v1", api_key="unused")
    with client.responses.stream(model="llava", input="Is it fine?", text_format=Verdict, max_output_tokens=64,
                                 temperature=0) as stream:
        final = stream.get_final_response()
    parsed = client.responses.parse(model="llava", input="Is it fine?", text_format=Verdict, max_output_tokens=64,
                                    temperature=0)
    assert final.status == "completed" and isinstance(final.output_parsed, Verdict)
    assert parsed.output_parsed == final.output_parsed


def test_raw_events_carry_types_and_sequence_numbers(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    body = {"model": "llava", "input": "Hi", "stream": True, "max_output_tokens": 3}
    with httpx.stream("POST", f"{server.http}/v1/responses", json=body, timeout=30) as answer:
        lines = [line for line in answer.iter_lines() if line]
    events = [(lines[i][7:], json.loads(lines[i + 1][6:])) for i in range(0, len(lines), 2)]
    assert all(kind == data["type"] for kind, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert events[-1][0] == "response.incomplete"  # 3 tokens cut the answer
    assert events[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_errors_take_openai_s_shape(serve: Callable[..., LiveServer], make_image: Callable[..., bytes]) -> None:
    server = serve(api_key=KEY)
    client = openai.OpenAI(base_url=f"{server.http}/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.http}/v1", api_key="wrong-key-wrong-key", max_retries=0).responses.create(
            model="llava", input="Hi")
    with pytest.raises(openai.BadRequestError, match="input_file"):
        client.responses.create(model="llava", input=[{"role": "user", "content": [  # type: ignore[list-item]
            {"type": "input_file", "file_id": "file-1"}]}])
    with pytest.raises(openai.BadRequestError, match="cannot call tools"):
        client.responses.create(model="llava", input="Hi", tools=[{"type": "function", "name": "f", "parameters": {},  # type: ignore[list-item]
                                                                   "strict": False}], tool_choice="required")
    with pytest.raises(openai.NotFoundError, match="not on this machine"):
        client.responses.create(model="gpt-4.1", input="Hi")


def test_a_page_on_another_origin_cannot_call_it(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    answer = httpx.post(f"{server.http}/v1/responses", json={"model": "llava", "input": "Hi"},
                        headers={"Origin": "http://evil.example"})
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "invalidOrigin"


def test_image_urls_follow_the_fetch_policy(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    client = openai.OpenAI(base_url=f"{server.http}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="non-public address"):
        client.responses.create(model="llava", input=[{"role": "user", "content": [  # type: ignore[list-item]
            {"type": "input_image", "image_url": "http://127.0.0.1:9/secret.png", "detail": "low"}]}])


def test_a_stream_that_fails_part_way_ends_with_error_and_response_failed(tiny_files: ModelFiles) -> None:
    """An answer past its deadline after the stream began: OpenAI's ``error`` event, then ``response.failed``."""
    slow = GenerationOptions(max_tokens=4000, temperature=0.0, deadline_s=0.05)
    with Captioner(model_path=tiny_files.model_path, mmproj_path=tiny_files.mmproj_path, generation=slow) as model:
        server = LiveServer(model, ServerSettings())
        try:
            body = {"model": "llava", "input": "Tell me everything.", "stream": True}
            with httpx.stream("POST", f"{server.http}/v1/responses", json=body, timeout=60) as answer:
                lines = [line for line in answer.iter_lines() if line]
        finally:
            server.stop()
    events = [(lines[i][7:], json.loads(lines[i + 1][6:])) for i in range(0, len(lines), 2)]
    kinds = [kind for kind, _ in events]
    assert kinds[-2:] == ["error", "response.failed"]
    error = events[-2][1]
    assert error["type"] == "error" and error["code"] == "timeout" and error["message"]
    assert events[-1][1]["response"]["status"] == "failed"


def test_metadata_is_held_to_openai_s_bounds(serve: Callable[..., LiveServer]) -> None:
    client = openai.OpenAI(base_url=f"{serve().http}/v1", api_key="unused", max_retries=0)
    kept = client.responses.create(model="llava", input="Hi", metadata={"job": "42"}, max_output_tokens=2)
    assert kept.metadata == {"job": "42"}
    with pytest.raises(openai.BadRequestError, match="metadata"):
        client.responses.create(model="llava", input="Hi", metadata={"big": "x" * 513}, max_output_tokens=2)


def test_the_store_counts_every_byte_it_keeps() -> None:
    store = ResponseStore(max_entries=100, max_bytes=10_000, ttl_s=60)
    for index in range(5):
        store.put({"id": f"resp_{index}", "tools": ["x" * 3000]}, (Turn("user", "é" * 10),))
    assert store.get("resp_0") is None and store.get("resp_1") is None  # 3 of about 3,050 bytes fit
    assert store.get("resp_4") is not None
