"""Structured output through the real server (127.0.0.1, tiny model, random weights): OpenAI's
``response_format`` and Ollama's ``format`` with the official clients, streaming included; answers cut by the
token limit reported as such; hostile schemas refused fast, in each API's own error shape, before the worker."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import jsonschema
import ollama
import openai
import pytest
from pydantic import BaseModel, Field
from support.images import data_uri
from support.servers import LiveServer

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"label": {"type": "string", "minLength": 1, "maxLength": 8},
                   "count": {"type": "integer"}, "kind": {"enum": ["cat", "dog", "car"]}},
    "required": ["label", "count", "kind"],
    "additionalProperties": False,
}
UNBOUNDED: dict[str, Any] = {"type": "object", "properties": {"story": {"type": "string"}}, "required": ["story"]}


class Photo(BaseModel):
    caption: str = Field(max_length=12)
    tags: list[Annotated[str, Field(max_length=6)]] = Field(max_length=2)


@pytest.fixture
def png(make_image: Callable[..., bytes]) -> bytes:
    return make_image(40, 30)


def ask(png: bytes) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": "Describe as JSON."},
                                         {"type": "image_url", "image_url": {"url": data_uri(png)}}]}]


def json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}


def test_openai_response_format_json_schema_and_json_object(serve: Callable[..., LiveServer], png: bytes) -> None:
    client = openai.OpenAI(base_url=f"{serve().http}/v1", api_key="unused")
    for seed in (1, 2):
        answer = client.chat.completions.create(model="llava", messages=ask(png), max_tokens=300,  # type: ignore[arg-type]
                                                seed=seed, temperature=1.0, response_format=json_schema(SCHEMA))  # type: ignore[arg-type]
        assert answer.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(answer.choices[0].message.content or ""), SCHEMA)
    loose = client.chat.completions.create(model="llava", messages=ask(png), max_tokens=40,  # type: ignore[arg-type]
                                           temperature=0, response_format={"type": "json_object"})
    if loose.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(loose.choices[0].message.content or ""), dict)
    text = client.chat.completions.create(model="llava", messages=ask(png), max_tokens=4,  # type: ignore[arg-type]
                                          response_format={"type": "text"})
    assert text.choices[0].message.content is not None


def test_openai_streaming_joins_to_valid_json(serve: Callable[..., LiveServer], png: bytes) -> None:
    client = openai.OpenAI(base_url=f"{serve().http}/v1", api_key="unused")
    stream = client.chat.completions.create(model="llava", messages=ask(png), max_tokens=300, seed=4,  # type: ignore[arg-type]
                                            temperature=1.0, response_format=json_schema(SCHEMA), stream=True)  # type: ignore[arg-type]
    text, reasons = "", []
    for chunk in stream:
        text += chunk.choices[0].delta.content or ""
        reasons.append(chunk.choices[0].finish_reason)
    assert reasons[-1] == "stop"
    jsonschema.validate(json.loads(text), SCHEMA)


def test_openai_parse_helper_with_a_pydantic_model(serve: Callable[..., LiveServer], png: bytes) -> None:
    client = openai.OpenAI(base_url=f"{serve().http}/v1", api_key="unused")
    parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
    for seed in (3, 5):
        answer = parse(model="llava", messages=ask(png), response_format=Photo, max_tokens=300, seed=seed,
                       temperature=1.0)
        parsed = answer.choices[0].message.parsed
        assert isinstance(parsed, Photo) and len(parsed.caption) <= 12 and len(parsed.tags) <= 2


def test_a_cut_answer_says_length_on_both_apis(serve: Callable[..., LiveServer], png: bytes) -> None:
    server = serve()
    client = openai.OpenAI(base_url=f"{server.http}/v1", api_key="unused")
    answer = client.chat.completions.create(model="llava", messages=ask(png), max_tokens=3,  # type: ignore[arg-type]
                                            response_format=json_schema(UNBOUNDED))
    assert answer.choices[0].finish_reason == "length"
    with pytest.raises(openai.LengthFinishReasonError):
        client.chat.completions.parse(model="llava", messages=ask(png), response_format=Photo,  # type: ignore[arg-type]
                                      max_tokens=3)
    for route, stream in (("generate", False), ("chat", True)):
        body = {"model": "llava", "format": UNBOUNDED, "stream": stream, "options": {"num_predict": 3}}
        if route == "generate":
            body |= {"prompt": "Describe.", "images": [base64.b64encode(png).decode()]}
        else:
            body |= {"messages": [{"role": "user", "content": "Describe.", "images": [base64.b64encode(png).decode()]}]}
        lines = httpx.post(f"{server.http}/api/{route}", json=body, timeout=60).text.splitlines()
        final = json.loads(lines[-1])
        assert final["done"] is True and final["done_reason"] == "length"


def test_ollama_client_format_schema_and_json(serve: Callable[..., LiveServer], png: bytes) -> None:
    client = ollama.Client(host=serve().http)
    answer = client.chat(model="llava", messages=[{"role": "user", "content": "Describe.", "images": [png]}],
                         format=Photo.model_json_schema(), options={"num_predict": 300, "seed": 2, "temperature": 1},
                         stream=False)
    assert answer.done_reason == "stop"
    assert isinstance(Photo.model_validate_json(answer.message.content or ""), Photo)

    pieces = client.generate(model="llava", prompt="Describe.", images=[png], format=SCHEMA, stream=True,
                             options={"num_predict": 300, "seed": 6, "temperature": 1})
    chunks = list(pieces)
    assert chunks[-1].done and chunks[-1].done_reason == "stop"
    jsonschema.validate(json.loads("".join(chunk.response for chunk in chunks)), SCHEMA)

    loose = client.generate(model="llava", prompt="Describe.", images=[png], format="json", stream=False,
                            options={"num_predict": 40, "temperature": 0})
    if loose.done_reason == "stop":
        assert isinstance(json.loads(loose.response), dict)


def _chain(length: int) -> dict[str, Any]:
    defs: dict[str, Any] = {f"d{index}": {"$ref": f"#/$defs/d{index + 1}"} for index in range(length)}
    defs[f"d{length}"] = {"type": "integer"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}, "required": ["x"]}
    return schema


HOSTILE: dict[str, Callable[[], dict[str, Any]]] = {
    "maxItems 50000": lambda: {"type": "array", "items": {"type": "integer"}, "maxItems": 50_000},
    "maxLength 100000": lambda: {"type": "object", "properties": {"s": {"type": "string", "maxLength": 100_000}}},
    "$ref chain 200 deep": lambda: _chain(200),
    "enum of 100k": lambda: {"enum": list(range(100_000))},
    "1 MB schema": lambda: {"type": "object", "properties": {f"p{index}": {"type": "string", "description": "x" * 1000}
                                                             for index in range(1000)}},
    "nesting 200 deep": lambda: _nested(200),
    "anyOf 256 four levels deep": lambda: _ambiguous(4),
}


def _ambiguous(levels: int, width: int = 256) -> dict[str, Any]:
    """Nested anyOfs of identical alternatives: width ** levels parses for the grammar sampler to track."""
    defs = {f"level{level}": {"anyOf": [{"$ref": f"#/$defs/level{level + 1}", "description": "x" * 8}] * width}
            for level in range(levels - 1)}
    defs[f"level{levels - 1}"] = {"anyOf": [{"type": "integer", "description": "one of many"}] * width}
    return {"$defs": defs, "$ref": "#/$defs/level0"}


HOME_ASSISTANT: dict[str, Any] = {  # AI Task selectors as Home Assistant's ollama integration sends them
    "type": "object",
    "properties": {"brightness": {"type": "number", "minimum": 0, "maximum": 100},
                   "light": {"type": "string", "format": "entity_id"},
                   "rooms": {"type": "array", "items": {"type": "string", "enum": ["kitchen", "hall"]},
                             "uniqueItems": True}},
    "required": ["brightness", "light", "rooms"],
}


def test_ollama_chat_streams_a_home_assistant_schema(serve: Callable[..., LiveServer], png: bytes) -> None:
    client = ollama.Client(host=serve().http)
    for seed in (1, 2):
        chunks = list(client.chat(model="llava", messages=[{"role": "user", "content": "Set it.", "images": [png]}],
                                  format=HOME_ASSISTANT, stream=True, keep_alive=-1,
                                  options={"num_predict": 200, "seed": seed, "temperature": 1}))
        text = "".join(chunk.message.content or "" for chunk in chunks)
        assert chunks[-1].done
        if chunks[-1].done_reason == "stop":
            answer = json.loads(text)
            jsonschema.validate(answer, HOME_ASSISTANT)
            assert len(answer["rooms"]) == len(set(answer["rooms"]))


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_schemas_are_refused_fast_in_each_api_s_shape(serve: Callable[..., LiveServer], png: bytes,
                                                               name: str) -> None:
    server = serve()
    schema = HOSTILE[name]()
    image = base64.b64encode(png).decode()
    requests = [
        ("/v1/chat/completions", {"model": "llava", "messages": ask(png), "response_format": json_schema(schema)}),
        ("/api/generate", {"model": "llava", "prompt": "Describe.", "images": [image], "format": schema,
                           "stream": False}),
        ("/api/chat", {"model": "llava", "messages": [{"role": "user", "content": "Hi", "images": [image]}],
                       "format": schema}),
    ]
    with httpx.Client(base_url=server.http, timeout=30) as http:
        for route, body in requests:
            began = time.perf_counter()
            answer = http.post(route, json=body)
            elapsed = time.perf_counter() - began
            assert answer.status_code == 400 and elapsed < 10 * 1.0, (route, answer.text[:200], elapsed)  # hang guard
            if route.startswith("/v1"):
                error = answer.json()["error"]
                assert error["param"] == "response_format" and error["code"] == "invalidSchema"
                assert error["type"] == "invalid_request_error"
            else:
                assert set(answer.json()) == {"error"} and "format" in answer.json()["error"]
        normal = http.post("/v1/chat/completions", json={"model": "llava", "messages": ask(png), "max_tokens": 300,
                                                         "response_format": json_schema(SCHEMA)})
    jsonschema.validate(json.loads(normal.json()["choices"][0]["message"]["content"]), SCHEMA)


def test_unsupported_keywords_and_shapes_are_named(serve: Callable[..., LiveServer], png: bytes) -> None:
    server = serve()
    client = openai.OpenAI(base_url=f"{server.http}/v1", api_key="unused")
    with pytest.raises(openai.BadRequestError, match="multipleOf 3 is not a power of ten"):
        client.chat.completions.create(model="llava", messages=ask(png),  # type: ignore[arg-type]
                                       response_format=json_schema({"type": "integer", "multipleOf": 3}))  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="json_schema"):
        client.chat.completions.create(model="llava", messages=ask(png),  # type: ignore[arg-type]
                                       response_format={"type": "json_schema"})  # type: ignore[typeddict-item]
    answer = httpx.post(f"{server.http}/api/generate", json={"model": "llava", "prompt": "Hi", "format": "yaml",
                                                              "images": [base64.b64encode(png).decode()]})
    assert answer.status_code == 400 and "format" in answer.json()["error"]
