"""The operator can see why: every refused request logs one line with its route template, status, error code
and message (client text JSON-quoted and cut, never a Python repr); every model load, swap and unload logs
what and how long."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator

import httpx
import pytest
from support.images import data_uri, encode_image
from support.servers import LiveServer, ServeProcess, wait_until

from llava_edge import Captioner, GenerationOptions
from llava_edge.models.synthetic import build_synthetic_pair
from llava_edge.runtime.quantize import quantize_gguf
from llava_edge.server.request_log import MESSAGE_CHARS
from llava_edge.server.settings import ServerSettings

KEY = "sixteen-char-key-0"


@pytest.fixture(scope="module")
def server(captioner: Captioner) -> Iterator[LiveServer]:
    live = LiveServer(captioner, ServerSettings())
    yield live
    live.stop()


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "llava_edge.server.requests"]


def ask(model: str) -> dict[str, object]:
    image = {"type": "image_url", "image_url": {"url": data_uri(encode_image(40, 30)), "detail": "low"}}
    return {"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": [image]}]}


def test_each_refusal_logs_route_template_status_code_and_message(server: LiveServer,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    httpx.post(f"{server.http}/v1/chat/completions", json={**ask("llava"), "temperature": 9})
    httpx.get(f"{server.http}/images/nothing.png")
    httpx.post(f"{server.http}/api/nothing", json={})
    httpx.post(f"{server.http}/v1", json=[{"taskType": "caption"}])
    httpx.get(f"{server.http}/v1/models", headers={"Host": "rebind.example"})

    lines = refusals(caplog)
    assert lines[0] == ('refused POST /v1/chat/completions: 400 invalid_value '
                        '"temperature must be a number from 0 to 2."')
    assert lines[1] == 'refused GET /images/{name}: 404 notFound "No stored image is named \\"nothing.png\\"."'
    assert lines[2].startswith('refused POST (unknown route): 404 not_found "No route \\"/api/nothing\\"')
    assert lines[3].startswith("refused POST /v1: 400 ")
    assert lines[4].startswith('refused GET /v1/models: 403 invalidHost "Host \\"rebind.example\\" is not served')
    assert len(lines) == 5  # one line per refused request, none for the answered ones


def test_client_text_is_json_quoted_and_cut_never_a_repr(server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    name = "it's \"mine\"\n" + "x" * 200
    answer = httpx.post(f"{server.http}/v1/chat/completions", json=ask(name))

    message = answer.json()["error"]["message"]
    assert answer.status_code == 404 and json.dumps(name[:80]) in message and repr(name[:80]) not in message
    cut = json.dumps(message[:MESSAGE_CHARS])  # the line carries the message as a JSON string, cut at a bound
    assert refusals(caplog) == [f"refused POST /v1/chat/completions: 404 modelNotFound {cut}"]


def test_model_loads_swaps_and_unloads_are_logged_with_their_time(caplog: pytest.LogCaptureFixture) -> None:
    build_synthetic_pair("tiny")
    build_synthetic_pair("kquant-small", quantize=quantize_gguf)
    caplog.set_level(logging.INFO)
    captioner = Captioner("synthetic-tiny", generation=GenerationOptions(max_tokens=2))
    live = LiveServer(captioner, ServerSettings())
    try:
        answer = httpx.post(f"{live.http}/v1/chat/completions", json=ask("synthetic-kquant-small"), timeout=60)
    finally:
        live.stop()
        live.service.captioner.close()
        captioner.close()
    assert answer.status_code == 200, answer.text
    events = [record.getMessage() for record in caplog.records
              if record.name.startswith("llava_edge") and record.name != "llava_edge.llama_cpp"]
    seconds = r"\d+\.\d+ s"
    expected = [rf"loaded model synthetic-tiny \(model\.gguf\) in {seconds}",
                rf"unloaded model synthetic-tiny in {seconds}",
                rf"loaded model synthetic-kquant-small \(model\.gguf\) in {seconds}",
                rf"swapped synthetic-tiny out and synthetic-kquant-small in \({seconds}\)",
                rf"unloaded model synthetic-kquant-small in {seconds}"]
    assert len(events) == len(expected), events  # one line per event: a second close logs nothing
    assert all(re.fullmatch(pattern, event) for pattern, event in zip(expected, events, strict=True)), events


def test_serve_prints_its_log_lines(serve_process: Callable[..., ServeProcess]) -> None:
    process = serve_process("--api-key", KEY)
    httpx.get(f"{process.http}/v1/models", headers={"Authorization": "Bearer wrong-key"})

    assert re.search(r"loaded model synthetic-tiny \(.+\) in \d+\.\d+ s", process.output), process.output
    expected = 'refused GET /v1/models: 401 invalidApiKey "Invalid API key: use the key the server was started with'
    wait_until(lambda: expected in process.output)  # logged once the answer is sent
