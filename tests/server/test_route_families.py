"""Each API answers in its own error shape everywhere, unknown routes and wrong methods included: ``/v1/...``
OpenAI's error object, ``/api/...`` Ollama's ``{"error"}``, the Runware routes the Runware envelope; the
Host/Origin checks stay in front and answer in the same shapes."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import ollama
import openai
import pytest
from support.servers import LiveServer

from llava_edge import Captioner
from llava_edge.server.settings import ServerSettings

KEY = "sixteen-char-key-0"


@pytest.fixture(scope="module")
def server(captioner: Captioner) -> Iterator[LiveServer]:
    live = LiveServer(captioner, ServerSettings())
    yield live
    live.stop()


def openai_error(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return dict(body["error"])


def test_unknown_openai_routes_and_methods_answer_openai_s_error(server: LiveServer) -> None:
    missing = httpx.post(f"{server.http}/v1/embeddings", json={"model": "llava", "input": "x"})
    wrong = httpx.delete(f"{server.http}/v1/models")

    assert missing.status_code == 404 and "/v1/chat/completions" in str(openai_error(missing)["message"])
    assert openai_error(missing)["type"] == "not_found_error"
    assert wrong.status_code == 405
    assert openai_error(wrong)["message"] == 'DELETE is not allowed on "/v1/models"; use GET.'
    client = openai.OpenAI(base_url=f"{server.http}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="No route"):
        client.embeddings.create(model="llava", input="a house")


def test_unknown_ollama_routes_and_methods_answer_ollama_s_error(server: LiveServer) -> None:
    missing = httpx.post(f"{server.http}/api/create", json={"model": "x"})
    wrong = httpx.get(f"{server.http}/api/chat")

    assert missing.status_code == 404 and set(missing.json()) == {"error"}
    assert "/api/pull" in missing.json()["error"]
    assert wrong.status_code == 405 and wrong.json() == {"error": 'GET is not allowed on "/api/chat"; use POST.'}
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=server.http).create(model="mine", from_="llava")
    assert refused.value.status_code == 404


def test_runware_routes_keep_the_runware_envelope(server: LiveServer) -> None:
    wrong = httpx.get(f"{server.http}/v1")
    missing = httpx.get(f"{server.http}/v2/tasks")
    image = httpx.get(f"{server.http}/images/nothing.png")

    assert wrong.status_code == 405 and wrong.json()["errors"][0]["code"] == "methodNotAllowed"
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "notFound"
    assert image.status_code == 404
    assert image.json()["errors"][0]["message"] == 'No stored image is named "nothing.png".'


def test_the_front_door_refuses_in_each_family_s_shape(captioner: Captioner) -> None:
    live = LiveServer(captioner, ServerSettings(api_key=KEY))
    try:
        foreign = {"Host": "rebind.example"}
        openai_route = httpx.post(f"{live.http}/v1/responses", json={}, headers=foreign)
        ollama_route = httpx.post(f"{live.http}/api/pull", json={"model": "llava"}, headers=foreign)
        runware_route = httpx.post(f"{live.http}/v1", json=[], headers=foreign)
        unknown_without_key = httpx.get(f"{live.http}/api/nothing")
    finally:
        live.stop()
    assert openai_route.status_code == 403 and openai_error(openai_route)["code"] == "invalidHost"
    assert 'Host "rebind.example" is not served here' in str(openai_error(openai_route)["message"])
    assert ollama_route.status_code == 403 and set(ollama_route.json()) == {"error"}
    assert runware_route.status_code == 403 and runware_route.json()["errors"][0]["code"] == "invalidHost"
    assert unknown_without_key.status_code == 404 and set(unknown_without_key.json()) == {"error"}
