"""Real apps at their own defaults, replayed against the real server (127.0.0.1, tiny random-weight model):
the requests Open WebUI, Home Assistant and PhotoPrism send, in the shapes taken from their source (see
docs/server.md, "Use it from your apps"). On random weights only the grammar makes JSON answers valid, so
the structured cases prove the grammar, not the model."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import jsonschema
import ollama
import openai
import pytest
from support.app_schemas import PHOTOPRISM_LABELS
from support.images import data_uri
from support.servers import LiveServer

OPEN_WEBUI_TOOLS = [
    {"type": "function", "function": {"name": "get_current_timestamp", "description": "Get the current Unix timestamp.",
                                      "parameters": {"type": "object", "properties": {}, "required": []}}},
    {"type": "function", "function": {"name": "search_web", "description": "Search the web.",
                                      "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                                                     "required": ["query"]}}},
]
TITLE_PROMPT = ("### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat history.\n"
                "### Output:\nJSON format: { \"title\": \"your concise title here\" }\n"
                "### Chat History:\n<chat_history>\nUSER: What is in this picture?\nASSISTANT: A red square.\n"
                "</chat_history>")
HA_TOOLS = [{"type": "function", "function": {
    "name": "HassTurnOn", "description": "Turns on/opens/presses a device or entity",
    "parameters": {"type": "object", "properties": {"name": {"type": "string"}, "area": {"type": "string"},
                                                    "domain": {"type": "array", "items": {"type": "string"}}}}}}]
HA_AI_TASK_SCHEMA = {  # AI Task's selectors as core's selector_serializer writes them
    "type": "object",
    "properties": {
        "people": {"type": "number", "minimum": 0, "maximum": 20},
        "camera": {"type": "string", "format": "entity_id"},
        "colours": {"type": "array", "items": {"type": "string", "enum": ["red", "green", "blue"]},
                    "uniqueItems": True},
    },
    "required": ["people", "camera", "colours"],
    "additionalProperties": False,
}



@pytest.fixture
def png(make_image: Callable[..., bytes]) -> bytes:
    return make_image(64, 48)


def test_open_webui_chat_with_its_builtin_tools_streams_a_text_answer(serve: Callable[..., LiveServer],
                                                                      png: bytes) -> None:
    server = serve()
    client = openai.OpenAI(base_url=f"{server.http}/v1", api_key="unused", max_retries=0)
    models = [model.id for model in client.models.list()]
    stream = client.chat.completions.create(
        model=models[0], stream=True, stream_options={"include_usage": True}, tools=OPEN_WEBUI_TOOLS,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                               {"type": "image_url", "image_url": {"url": data_uri(png)}}]}],
        max_tokens=8)
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text and chunks[-1].usage is not None
    assert all(not chunk.choices or not chunk.choices[0].delta.tool_calls for chunk in chunks)


def test_open_webui_title_task_is_a_text_only_request(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    body = {"model": "llava", "messages": [{"role": "user", "content": TITLE_PROMPT}], "stream": False,
            "max_completion_tokens": 16, "metadata": {"task": "title_generation", "chat_id": "c1"}}
    answer = httpx.post(f"{server.http}/v1/chat/completions", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]


def test_home_assistant_conversation_at_its_defaults(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    client = ollama.Client(host=server.http, timeout=5.0)
    names = [model.model for model in client.list().models]
    shown = client.show(names[0])
    assert shown.capabilities is not None and "vision" in shown.capabilities
    messages = [{"role": "system", "content": "You are a voice assistant for Home Assistant."},
                {"role": "user", "content": "Turn on the kitchen light."}]
    parts = list(client.chat(model=names[0], messages=messages, tools=HA_TOOLS, stream=True, keep_alive="-1s",
                             options={"num_ctx": 8192, "num_predict": 8}, think=None, format=None))
    assert parts[-1].done and "".join(part.message.content or "" for part in parts)


def test_home_assistant_ai_task_structured_answer_with_an_image(serve: Callable[..., LiveServer],
                                                                png: bytes) -> None:
    server = serve()
    client = ollama.Client(host=server.http)
    messages = [{"role": "user", "content": "Describe the camera image.", "images": [png]}]
    answer = client.chat(model="llava", messages=messages, format=HA_AI_TASK_SCHEMA, stream=False,
                         keep_alive="-1s", options={"num_ctx": 8192, "num_predict": 300, "temperature": 0})
    assert answer.done_reason in ("stop", "length")
    if answer.done_reason == "stop":  # random weights may loop inside a string: then the cut is reported
        data = json.loads(answer.message.content or "")
        jsonschema.validate(data, HA_AI_TASK_SCHEMA)
        assert len(set(data["colours"])) == len(data["colours"])


def test_photoprism_ollama_labels_request(serve: Callable[..., LiveServer], png: bytes) -> None:
    server = serve()
    body = {"id": "e2f0d0a4-6d4e-4c1b-9a53-7f54c4b6c0a1", "model": "llava", "suffix": "", "stream": False,
            "prompt": "Analyze the image and return labels.", "system": "You are a PhotoPrism vision model.",
            "options": {"temperature": 0.1, "top_p": 0.9, "stop": ["\n\n"], "num_predict": 256},
            "images": [base64.b64encode(png).decode()], "format": PHOTOPRISM_LABELS}
    answer = httpx.post(f"{server.http}/api/generate", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["done_reason"] in ("stop", "length")
    if result["done_reason"] == "stop":
        jsonschema.validate(json.loads(result["response"]), PHOTOPRISM_LABELS)


def test_photoprism_openai_engine_speaks_the_responses_api(serve: Callable[..., LiveServer], png: bytes) -> None:
    server = serve()
    body: dict[str, Any] = {
        "model": "llava", "max_output_tokens": 256,
        "input": [{"role": "system", "content": [{"type": "input_text", "text": "You are a vision model."}]},
                  {"role": "user", "content": [{"type": "input_text", "text": "Return labels."},
                                               {"type": "input_image", "image_url": data_uri(png), "detail": "low"}]}],
        "text": {"format": {"type": "json_schema", "name": "labels", "schema": PHOTOPRISM_LABELS, "strict": True}},
    }
    answer = httpx.post(f"{server.http}/v1/responses", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    response = answer.json()
    assert response["status"] in ("completed", "incomplete")
    if response["status"] == "completed":
        jsonschema.validate(json.loads(response["output"][0]["content"][0]["text"]), PHOTOPRISM_LABELS)


def test_langchain_chat_models_over_both_apis(serve: Callable[..., LiveServer], png: bytes) -> None:
    from langchain_core.messages import HumanMessage
    from langchain_ollama import ChatOllama
    from langchain_openai import ChatOpenAI

    server = serve()
    message = HumanMessage(content=[{"type": "text", "text": "Describe this image."},
                                    {"type": "image_url", "image_url": {"url": data_uri(png)}}])
    over_openai = ChatOpenAI(base_url=f"{server.http}/v1", api_key="unused", model="llava",  # type: ignore[arg-type]
                             max_completion_tokens=8, temperature=0)
    over_ollama = ChatOllama(base_url=server.http, model="llava", num_predict=8, temperature=0)
    assert over_openai.invoke([message]).content
    assert over_ollama.invoke("Name a colour.").content
