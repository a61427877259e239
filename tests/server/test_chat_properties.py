"""Property tests over the chat routes through the real server (127.0.0.1, tiny model): OpenAI chat, Responses
and Ollama generate/chat bodies built by hypothesis, with messages, roles, content parts, fields and options of
any type, huge numbers, nested junk, and JSON Schemas from the keywords the structured-output check accepts and
refuses. Whatever the body, the server answers once, in the API's own shape: never a 5xx other than 503/504, a
refusal as OpenAI's ``{"error": {"message", "type", "param", "code"}}`` or Ollama's ``{"error": "..."}`` with no
Python repr in its message, a stream that ends exactly once; and afterwards ``/health`` answers and an ordinary
caption is still answered.

50 examples per API keep a run near 15 s; ``LLAVA_EDGE_TEST_FUZZ_EXAMPLES=1000`` makes a longer hunt."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from support.fuzz_values import json_values, scalars, schemas
from support.images import encode_image
from support.servers import LiveServer

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

PNG = encode_image(16, 12)
B64 = base64.b64encode(PNG).decode()
IMAGE = "data:image/png;base64," + B64
MODEL = "llava"
EXAMPLES = settings(max_examples=int(os.environ.get("LLAVA_EDGE_TEST_FUZZ_EXAMPLES", "50")), deadline=None,
                    database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])

# --- strategies ------------------------------------------------------------------------------------------


def _sometimes(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A valid value five times in six, else any JSON value (a body has many fields: most must be valid for a
    request to get past the first check)."""
    return st.integers(0, 5).flatmap(lambda draw: json_values if draw == 0 else valid)


@st.composite
def _fields(draw: st.DrawFn, base: dict[str, Any], extra: dict[str, st.SearchStrategy[Any]],
            often: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    """``base`` (values or strategies) with each of ``often``'s fields half the time (the schema), up to three of
    ``extra``'s fields, and sometimes an unknown field."""
    body = {key: draw(value) if isinstance(value, st.SearchStrategy) else value for key, value in base.items()}
    for key, value in often.items():
        if draw(st.booleans()):
            body[key] = draw(value)
    for key in draw(st.lists(st.sampled_from(sorted(extra)), max_size=3, unique=True)):
        body[key] = draw(extra[key])
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.text(min_size=1, max_size=10).filter(lambda name: name not in {*base, *extra, *often}))] = \
            draw(json_values)
    return body


_text = st.text(st.characters(blacklist_characters="'"), max_size=40)
_small_tokens = st.integers(1, 6)
_model = st.integers(0, 11).flatmap(lambda draw: json_values if draw == 0 else st.just(MODEL))
_urls = st.sampled_from([IMAGE, B64, "data:image/png;base64,!!!", "data:text/plain;base64,aGk=",
                         "http://127.0.0.1:9/cat.png", "file:///etc/passwd", ""]) | json_values
_roles = st.sampled_from(["system", "user", "assistant", "developer", "tool", "function", "", "USER"]) | json_values
_samplers = {
    "temperature": _sometimes(st.floats(0, 2)), "top_p": _sometimes(st.floats(0, 1)),
    "top_k": _sometimes(st.integers(0, 100)), "min_p": _sometimes(st.floats(0, 1)),
    "seed": _sometimes(st.integers(-1, 2**32 - 1)), "presence_penalty": _sometimes(st.floats(-2, 2)),
    "frequency_penalty": _sometimes(st.floats(-2, 2)), "repeat_penalty": _sometimes(st.floats(0, 10)),
    "stop": _sometimes(st.lists(st.text(min_size=1, max_size=8), max_size=4)),
}
_openai_parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": _sometimes(_text)}),
    st.fixed_dictionaries({"type": st.just("image_url"),
                           "image_url": _sometimes(st.fixed_dictionaries(
                               {"url": _urls}, optional={"detail": _sometimes(st.sampled_from(["low", "high",
                                                                                                "auto"]))}))}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": _urls}),
    st.fixed_dictionaries({"type": st.sampled_from(["input_audio", "file", "refusal", "input_text"]) | json_values,
                           "text": _text}),
    json_values,
)
_openai_messages = st.lists(_sometimes(st.fixed_dictionaries(
    {"role": _roles, "content": st.one_of(_text, st.none(), st.lists(_openai_parts, max_size=3), json_values)},
    optional={"name": json_values, "tool_calls": json_values, "tool_call_id": json_values})), min_size=1, max_size=4)
_response_formats = st.one_of(
    st.builds(lambda schema, strict: {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema,
                                                                             "strict": strict}},
              schemas, _sometimes(st.booleans())),
    st.sampled_from([{"type": "json_object"}, {"type": "text"}, {"type": "json_schema"}, {"type": "regex"}]),
    st.builds(lambda value: {"type": "json_schema", "json_schema": value}, json_values),
    json_values,
)
OPENAI = _fields(
    {"model": _model, "messages": _sometimes(_openai_messages), "max_tokens": _small_tokens},
    {**_samplers, "stream": _sometimes(st.booleans()),
     "n": _sometimes(st.integers(1, 3)), "max_completion_tokens": _sometimes(_small_tokens),
     "tools": json_values, "tool_choice": _sometimes(st.sampled_from(["auto", "none", "required"])),
     "logprobs": json_values, "stream_options": _sometimes(st.fixed_dictionaries(
         {}, optional={"include_usage": json_values, "include_progress": json_values})),
     "image_tokens": json_values, "token_selection": json_values, "user": json_values, "metadata": json_values},
    {"response_format": _response_formats},
)

_responses_parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("input_text"), "text": _sometimes(_text)}),
    st.fixed_dictionaries({"type": st.just("input_image"), "image_url": _urls},
                          optional={"detail": _sometimes(st.sampled_from(["low", "high", "auto"]))}),
    st.fixed_dictionaries({"type": st.sampled_from(["output_text", "input_file", "input_audio"]) | json_values,
                           "text": _text}),
    json_values,
)
_responses_input = st.one_of(
    _text,
    st.lists(_sometimes(st.fixed_dictionaries(
        {"role": _roles, "content": st.one_of(_text, st.lists(_responses_parts, max_size=3), json_values)},
        optional={"type": _sometimes(st.just("message"))})), min_size=1, max_size=4),
    json_values,
)
_text_formats = st.one_of(
    st.builds(lambda schema, strict: {"format": {"type": "json_schema", "name": "answer", "schema": schema,
                                                 "strict": strict}}, schemas, _sometimes(st.booleans())),
    st.sampled_from([{"format": {"type": "text"}}, {"format": {"type": "json_object"}}, {"format": {}}, {}]),
    st.builds(lambda value: {"format": value}, json_values),
    json_values,
)
RESPONSES = _fields(
    {"model": _model, "input": _responses_input, "max_output_tokens": _sometimes(_small_tokens)},
    {**{key: value for key, value in _samplers.items() if key != "stop"}, "stream": _sometimes(st.booleans()),
     "instructions": _sometimes(_text), "store": _sometimes(st.booleans()),
     "previous_response_id": json_values, "tools": json_values, "tool_choice": json_values,
     "background": json_values, "truncation": json_values, "service_tier": json_values},
    {"text": _text_formats},
)

_ollama_options = _sometimes(_fields(
    {"num_predict": _sometimes(_small_tokens)},
    {**_samplers, "num_ctx": json_values, "num_thread": json_values, "num_gpu": json_values,
     "repeat_last_n": _sometimes(st.integers(-1, 64)), "typical_p": _sometimes(st.floats(0, 1))},
    {},
))
_ollama_images = _sometimes(st.lists(st.sampled_from([B64, IMAGE, "!!!", "aGVsbG8=", " "]) | scalars, max_size=2))
_ollama_formats = st.one_of(schemas, st.sampled_from(["json", "", "xml"]), json_values)
_ollama_common = {"stream": st.sampled_from([False, True, None]).flatmap(
                      lambda value: json_values if value is None else st.just(value)),
                  "keep_alive": _sometimes(st.sampled_from(["5m", "1h", -1, "-1s"])), "think": json_values,
                  "tools": json_values, "raw": json_values, "template": json_values, "context": json_values,
                  "suffix": json_values}
GENERATE = _fields(
    {"model": _model, "prompt": _sometimes(_text), "options": _ollama_options},
    {**_ollama_common, "images": _ollama_images, "system": _sometimes(_text)},
    {"format": _ollama_formats},
)
CHAT = _fields(
    {"model": _model, "options": _ollama_options,
     "messages": _sometimes(st.lists(_sometimes(st.fixed_dictionaries(
         {"role": _roles, "content": _sometimes(_text)},
         optional={"images": _ollama_images, "tool_calls": json_values})), min_size=1, max_size=4))},
    _ollama_common,
    {"format": _ollama_formats},
)

# --- the checks --------------------------------------------------------------------------------------------

APIS: dict[str, tuple[str, st.SearchStrategy[dict[str, Any]], str]] = {
    "openai": ("/v1/chat/completions", OPENAI, "openai"),
    "responses": ("/v1/responses", RESPONSES, "openai"),
    "ollama-generate": ("/api/generate", GENERATE, "ollama"),
    "ollama-chat": ("/api/chat", CHAT, "ollama"),
}
ORDINARY = {
    "openai": {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe."}, {"type": "image_url", "image_url": {"url": IMAGE}}]}]},
    "responses": {"model": MODEL, "max_output_tokens": 4, "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "Describe."}, {"type": "input_image", "image_url": IMAGE}]}]},
    "ollama-generate": {"model": MODEL, "prompt": "Describe.", "images": [B64], "stream": False,
                        "options": {"num_predict": 4}},
    "ollama-chat": {"model": MODEL, "stream": False, "options": {"num_predict": 4},
                    "messages": [{"role": "user", "content": "Describe.", "images": [B64]}]},
}


def check_message(message: object) -> None:
    assert isinstance(message, str) and message.strip(), message
    assert "{'" not in message and "['" not in message, f"a Python repr in {message!r}"
    assert "Traceback" not in message, message


def check_error(body: object, shape: str) -> None:
    """One refusal in the API's own shape."""
    assert isinstance(body, dict), body
    if shape == "ollama":
        assert set(body) == {"error"}, body
        check_message(body["error"])
        return
    assert set(body) == {"error"} and isinstance(body["error"], dict), body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    check_message(error["message"])
    assert isinstance(error["type"], str) and isinstance(error["code"], str) and error["code"], error
    assert error["param"] is None or isinstance(error["param"], str), error


def check_stream(response: httpx.Response, shape: str, route: str) -> None:
    """A streamed answer: every event parses, and the stream ends exactly once (an answer or an error)."""
    text = response.text
    if shape == "ollama":
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        assert lines and all(isinstance(line, dict) for line in lines), text[:500]
        ends = [line for line in lines if line.get("done") is True or "error" in line]
        assert ends == [lines[-1]], text[:500]
        if "error" in lines[-1]:
            check_error(lines[-1], "ollama")
        return
    data = [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]
    assert data, text[:500]
    if route == "/v1/responses":
        events = [json.loads(item) for item in data]
        ends = [item for item in events if item["type"] in ("response.completed", "response.incomplete",
                                                            "response.failed", "error")]
        assert ends == [events[-1]], text[:500]
        if events[-1]["type"] == "error":
            check_error({"error": {key: events[-1][key] for key in ("message", "type", "param", "code")}}, shape)
        return
    assert data[-1] == "[DONE]" and "[DONE]" not in data[:-1], text[:500]
    chunks = [json.loads(item) for item in data[:-1]]
    ends = [chunk for chunk in chunks if "error" in chunk
            or any(choice.get("finish_reason") for choice in chunk.get("choices", []))]
    assert len(ends) == 1, text[:500]
    if "error" in ends[0]:
        check_error(ends[0], shape)


def check_answer(client: httpx.Client, route: str, shape: str, body: dict[str, Any]) -> None:
    """Send ``body``; whatever it holds, one well-formed answer, and ``/health`` still answers."""
    response = client.post(route, content=json.dumps(body), headers={"content-type": "application/json"})
    status = response.status_code
    assert status < 500 or status in (503, 504), (status, response.text[:2000], json.dumps(body)[:2000])
    event(f"{route} {status}")
    streamed = response.headers.get("content-type", "").startswith(("text/event-stream", "application/x-ndjson"))
    if streamed:
        assert status == 200, status
        check_stream(response, shape, route)
    elif status >= 400:
        check_error(response.json(), shape)
    else:
        answer = response.json()  # one JSON document
        assert isinstance(answer, dict) and answer.get("error") is None, answer  # Responses: "error": null
    assert client.get("/health").status_code == 200


@pytest.mark.slow  # 15 to 40 s for the four APIs
@pytest.mark.parametrize("api", list(APIS))
def test_any_chat_body_is_answered_once_in_its_api_shape(api: str, serve: Callable[..., LiveServer]) -> None:
    route, bodies, shape = APIS[api]
    server = serve(fetch_hosts=frozenset())  # a generated URL can never reach out
    with httpx.Client(base_url=server.http, timeout=120) as client:  # the timeout is a hang guard only

        @EXAMPLES
        @given(bodies)
        def any_body(body: dict[str, Any]) -> None:
            check_answer(client, route, shape, body)

        any_body()
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        ordinary = client.post(route, json=ORDINARY[api])
        assert ordinary.status_code == 200, ordinary.text
        text = ordinary.json()
        assert text.get("choices") or text.get("output") or text.get("done") is True, text


@pytest.mark.parametrize("api", list(APIS))
def test_a_number_too_long_to_read_is_refused_as_bad_json(api: str, serve: Callable[..., LiveServer]) -> None:
    """Python refuses to read an integer of more than 4,300 digits (a denial-of-service guard): a 400."""
    route, _, shape = APIS[api]
    body = json.dumps(ORDINARY[api]).replace('"model"', '"seed": ' + "9" * 5000 + ', "model"', 1)
    response = httpx.post(serve().http + route, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    check_error(response.json(), shape)


# Bodies this fuzzing once found answered with a 500 or a Python repr in the message.
FOUND = [
    ("ollama-generate", {"model": MODEL, "prompt": "\ud800", "stream": False}),  # a lone surrogate: 500
    ("openai", {"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "a\udc80"}]}),
    ("openai", {"model": MODEL, "max_tokens": 1, "messages": [{"role": {"": None}, "content": None}]}),  # repr
    ("ollama-chat", {"model": MODEL, "stream": False, "messages": [{"role": ["user"], "content": "hi"}]}),
    ("responses", {"model": MODEL, "input": [{"role": {"a": 1}, "content": "hi"}]}),
    ("responses", {"model": MODEL, "input": "hi", "text": {"format": {  # jsonschema's repr of the value
        "type": "json_schema", "name": "answer", "schema": {"type": "array", "uniqueItems": {"": None}}}}}),
]


@pytest.mark.parametrize(("api", "body"), FOUND)
def test_bodies_found_by_fuzzing_are_refused_in_shape(api: str, body: dict[str, Any],
                                                      serve: Callable[..., LiveServer]) -> None:
    route, _, shape = APIS[api]
    with httpx.Client(base_url=serve().http, timeout=60) as client:
        response = client.post(route, content=json.dumps(body), headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        check_error(response.json(), shape)
