"""Idle unload and transparent reload through the real server on 127.0.0.1: ``--keep-alive`` and each API's
per-request ``keep_alive``, ``/api/ps`` and ``/health`` while the model is out, and Ollama's load-only and
unload-only requests. Each server runs on its own captioner: an unload closes it (never the session's)."""

from __future__ import annotations

import base64
import json
import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from support.images import data_uri, encode_image
from support.servers import LiveServer, LoopbackHTTP, caption_task, post, wait_until

IMAGE = base64.b64encode(encode_image(40, 30)).decode()
OPTIONS = {"num_predict": 4, "temperature": 0}


@pytest.fixture
def start(own_model: Callable[..., LiveServer]) -> Callable[..., LiveServer]:
    """``start(**ServerSettings fields)``: a server on a captioner of its own."""
    return own_model


def generate(server: LiveServer, **fields: Any) -> httpx.Response:
    body = {"model": "llava", "prompt": "Describe this image.", "images": [IMAGE], "stream": False,
            "options": OPTIONS, **fields}
    return httpx.post(f"{server.http}/api/generate", json=body, timeout=60)


def chat_completion(server: LiveServer, **fields: Any) -> httpx.Response:
    image = {"type": "image_url", "image_url": {"url": data_uri(encode_image(40, 30)), "detail": "low"}}
    body = {"model": "llava", "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Describe."}, image]}], **fields}
    return httpx.post(f"{server.http}/v1/chat/completions", json=body, timeout=60)


def health(server: LiveServer) -> dict[str, Any]:
    return httpx.get(f"{server.http}/health").json()  # type: ignore[no-any-return]


def running(server: LiveServer) -> list[dict[str, Any]]:
    return httpx.get(f"{server.http}/api/ps").json()["models"]  # type: ignore[no-any-return]


def unloaded(server: LiveServer) -> bool:
    return health(server)["loaded"] is False


def test_by_default_the_model_stays_loaded_for_five_minutes(start: Callable[..., LiveServer]) -> None:
    server = start()
    assert generate(server).json()["done"] is True
    assert health(server)["loaded"] is True and health(server)["status"] == "ok"
    [model] = running(server)
    expires = datetime.fromisoformat(model["expires_at"].replace("Z", "+00:00"))
    assert timedelta(minutes=4) < expires - datetime.now(UTC) <= timedelta(minutes=5)


def test_keep_alive_0_unloads_after_each_answer_and_the_next_request_reloads_it(
    start: Callable[..., LiveServer],
) -> None:
    server = start(keep_alive=0.0)
    first_captioner = server.service.captioner
    first = generate(server).json()["response"]
    wait_until(lambda: unloaded(server))
    assert health(server)["status"] == "ok" and health(server)["lastLoadError"] is None  # idle is not degraded
    assert running(server) == []
    assert first_captioner.runtime.close() is False  # freed already: closing again frees nothing
    again = generate(server).json()
    assert again["response"] == first  # reloaded transparently: the same answer as the fresh model's
    wait_until(lambda: unloaded(server))


def test_a_reload_streams_a_load_progress_event(start: Callable[..., LiveServer]) -> None:
    server = start(keep_alive=0.0)
    wait_until(lambda: unloaded(server))  # the start model's timer was 0 too
    with httpx.stream("POST", f"{server.http}/v1/chat/completions", timeout=60, json={
        "model": "llava", "max_tokens": 4, "stream": True, "stream_options": {"include_progress": True},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Describe."}, {
            "type": "image_url", "image_url": {"url": data_uri(encode_image(40, 30))}}]}]}) as stream:
        text = "".join(stream.iter_text())
    assert '"stage": "load"' in text and "[DONE]" in text


def test_ollama_reports_the_reload_in_load_duration_streamed_or_not(start: Callable[..., LiveServer]) -> None:
    server = start(keep_alive=0.0)
    wait_until(lambda: unloaded(server))
    reloaded = generate(server).json()
    wait_until(lambda: unloaded(server))
    with httpx.stream("POST", f"{server.http}/api/generate", timeout=60, json={
            "model": "llava", "prompt": "Describe.", "images": [IMAGE], "options": OPTIONS}) as stream:
        streamed = json.loads(list(stream.iter_lines())[-1])
    assert reloaded["load_duration"] > 0 and streamed["load_duration"] > 0 and streamed["done"] is True
    assert generate(server, keep_alive=-1).json()["load_duration"] > 0  # reloads, then stays
    assert generate(server).json()["load_duration"] == 0  # loaded already


def test_keep_alive_minus_1_never_unloads(start: Callable[..., LiveServer]) -> None:
    server = start(keep_alive=math.inf)
    assert generate(server).json()["done"] is True
    assert not server.service.resident.idle.expired()
    [model] = running(server)
    assert model["expires_at"] > "2300"  # Ollama's forever: about 292 years away
    assert generate(server, keep_alive=-1).json()["done"] is True and health(server)["loaded"] is True


def test_an_expired_timer_does_not_unload_while_a_job_reads_its_image(
    start: Callable[..., LiveServer], loopback_http: LoopbackHTTP,
) -> None:
    server = start(keep_alive=math.inf, allow_private_fetch=True)
    loopback_http.image = encode_image(40, 30)
    loopback_http.hold()
    answers: list[httpx.Response] = []
    content = [{"type": "text", "text": "Describe."},
               {"type": "image_url", "image_url": {"url": f"{loopback_http.url}/photo.png"}}]
    chat = threading.Thread(target=lambda: answers.append(
        chat_completion(server, messages=[{"role": "user", "content": content}])))
    chat.start()
    loopback_http.wait_for(1)  # the job is admitted and reading its image
    server.service.resident.idle.restart(0.0)  # its keep-alive has expired
    assert server.service.resident.idle.expired()
    threading.Event().wait(1.0)  # the model thread checks every 0.2 s: it saw the expired timer several times
    assert health(server)["loaded"] is True
    loopback_http.release()
    chat.join(60)
    assert answers[0].status_code == 200 and health(server)["loaded"] is True


def test_list_show_ps_and_health_never_load_the_model(start: Callable[..., LiveServer]) -> None:
    server = start(keep_alive=0.0)
    wait_until(lambda: unloaded(server))
    for _ in range(2):
        assert httpx.get(f"{server.http}/api/tags").status_code == 200
        assert httpx.post(f"{server.http}/api/show", json={"model": "llava"}).status_code == 200
        assert httpx.get(f"{server.http}/v1/models").status_code == 200
        assert running(server) == []
        assert health(server)["loaded"] is False
    assert server.service.resident.loaded is False


@pytest.mark.parametrize("api", ["ollama", "openai", "responses", "runware"])
def test_a_request_keep_alive_0_unloads_after_its_answer_on_each_api(
    start: Callable[..., LiveServer], api: str,
) -> None:
    server = start()  # the server's own keep-alive is 5 minutes
    if api == "ollama":
        assert generate(server, keep_alive=0).status_code == 200
    elif api == "openai":
        assert chat_completion(server, keep_alive="0s").status_code == 200
    elif api == "responses":
        assert httpx.post(f"{server.http}/v1/responses", timeout=60, json={
            "model": "llava", "max_output_tokens": 4, "keep_alive": 0, "input": [{"role": "user", "content": [
                {"type": "input_text", "text": "Describe."},
                {"type": "input_image", "image_url": data_uri(encode_image(40, 30))}]}]}).status_code == 200
    else:
        assert post(server, [caption_task(data_uri(encode_image(40, 30)), keepAlive=0)]).status_code == 200
    wait_until(lambda: unloaded(server))


def test_an_invalid_keep_alive_is_refused_in_each_api_shape(start: Callable[..., LiveServer]) -> None:
    server = start()
    ollama = generate(server, keep_alive="five minutes")
    assert ollama.status_code == 400 and "keep_alive" in ollama.json()["error"]
    openai = chat_completion(server, keep_alive=[1])
    assert openai.status_code == 400 and openai.json()["error"]["param"] == "keep_alive"
    runware = post(server, [caption_task(data_uri(encode_image(40, 30)), keepAlive="5 minutes")])
    assert runware.status_code == 400 and runware.json()["errors"][0]["parameter"] == "keepAlive"
    assert health(server)["loaded"] is True


def test_max_keep_alive_caps_a_request_that_asks_for_forever(start: Callable[..., LiveServer]) -> None:
    server = start(max_keep_alive=0.0)
    assert generate(server, keep_alive=-1).status_code == 200
    wait_until(lambda: unloaded(server))


def test_ollama_requests_without_a_prompt_unload_and_load_the_model(start: Callable[..., LiveServer]) -> None:
    server = start()
    unload = httpx.post(f"{server.http}/api/generate", json={"model": "llava", "keep_alive": 0, "stream": False})
    assert unload.json()["done"] is True and unload.json()["done_reason"] == "unload"
    wait_until(lambda: unloaded(server))
    load = httpx.post(f"{server.http}/api/chat", json={"model": "llava", "messages": [], "stream": False}, timeout=60)
    assert load.json()["done_reason"] == "load" and load.json()["message"]["content"] == ""
    assert health(server)["loaded"] is True  # loaded before the answer came
    assert len(running(server)) == 1


@pytest.mark.slow
def test_serve_keep_alive_flag_unloads_and_returns_the_memory(serve_process: Callable[..., Any]) -> None:
    import psutil

    server = serve_process("--keep-alive", "-1", "--max-keep-alive", "1h")
    body = {"model": "llava", "prompt": "Describe.", "images": [IMAGE], "stream": False, "options": OPTIONS}
    assert httpx.post(f"{server.http}/api/generate", json=body, timeout=60).status_code == 200
    process = psutil.Process(server.process.pid)
    loaded = process.memory_info().rss
    unload = httpx.post(f"{server.http}/api/generate", json={"model": "llava", "keep_alive": 0}, timeout=60)
    assert unload.json()["done_reason"] == "unload"
    wait_until(lambda: httpx.get(f"{server.http}/health").json()["loaded"] is False)
    after = process.memory_info().rss
    print(f"serve RSS {loaded / 2**20:.1f} MiB loaded, {after / 2**20:.1f} MiB after the unload")
    assert after < loaded
    wait_until(lambda: "unloaded synthetic-tiny after" in server.output)
    assert httpx.post(f"{server.http}/api/generate", json=body, timeout=60).status_code == 200


def test_serve_refuses_a_keep_alive_that_is_not_a_duration() -> None:
    from click.testing import CliRunner

    from llava_edge.cli import main

    refused = CliRunner().invoke(main, ["serve", "--keep-alive", "5 minutes"])
    assert refused.exit_code == 2 and "--keep-alive" in refused.output and '"5m"' in refused.output
