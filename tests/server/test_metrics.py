"""``GET /metrics`` through the real server on 127.0.0.1: requests counted by route template, API family and status;
the key required when the server has one; a scrape never loads the model nor restarts its keep-alive; stage
histograms and token counters after captions; labels from fixed sets only (never a client-sent model name or
path). Scrapes are parsed with ``prometheus_client``'s own parser."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.images import data_uri, encode_image
from support.servers import LiveServer, ModelHold, caption_task, post, wait_until
from websockets.sync.client import connect

from llava_edge.models.synthetic import build_synthetic_pair
from llava_edge.runtime.quantize import quantize_gguf

KEY = "metrics-test-key-0123456789"
IMAGE = base64.b64encode(encode_image(40, 30)).decode()
STAGES = {"image_encode", "image_prefill", "text_prefill", "first_token", "decode"}
Samples = list[tuple[str, dict[str, str], float]]


def scrape(server: LiveServer, key: str | None = None) -> Samples:
    """Every sample of one scrape: (name, labels, value)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = httpx.get(f"{server.http}/metrics", headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return [(sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(answer.text) for sample in family.samples]


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels`` (0 when none)."""
    return sum(found for sample, sample_labels, found in samples
               if sample == name and labels.items() <= sample_labels.items())


def generate(server: LiveServer, model: str = "llava", **fields: Any) -> httpx.Response:
    body = {"model": model, "prompt": "Describe this image.", "images": [IMAGE], "stream": False,
            "options": {"num_predict": 4, "temperature": 0}, **fields}
    return httpx.post(f"{server.http}/api/generate", json=body, timeout=60)


def chat_completion(server: LiveServer, model: str = "llava") -> httpx.Response:
    image = {"type": "image_url", "image_url": {"url": data_uri(encode_image(40, 30)), "detail": "low"}}
    body = {"model": model, "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Describe."}, image]}]}
    return httpx.post(f"{server.http}/v1/chat/completions", json=body, timeout=60)


def test_requests_are_counted_by_route_template_api_and_status(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    assert chat_completion(server).status_code == 200
    assert generate(server).status_code == 200
    assert httpx.get(f"{server.http}/no/such/route-42", timeout=10).status_code == 404
    assert httpx.get(f"{server.http}/v1/no-such-route-42", timeout=10).status_code == 404
    assert httpx.get(f"{server.http}/", timeout=10).text == "Ollama is running"
    assert httpx.get(f"{server.http}/", headers={"Accept": "text/html"}, timeout=10).status_code == 200
    assert httpx.get(f"{server.http}/images/no-such-image.png", timeout=10).status_code == 404
    assert httpx.get(f"{server.http}/health", headers={"Host": "evil.example"}, timeout=10).status_code == 403

    samples = scrape(server)

    counted = {(labels["route"], labels["api"], labels["status"]): found for name, labels, found in samples
               if name == "llava_edge_requests_total"}
    assert counted == {
        ("/v1/chat/completions", "openai", "200"): 1, ("/api/generate", "ollama", "200"): 1,
        ("unmatched", "runware", "404"): 1, ("unmatched", "openai", "404"): 1, ("/", "ollama", "200"): 1,
        ("/", "page", "200"): 1, ("/images/{name}", "other", "404"): 1, ("/health", "other", "403"): 1,
    }
    assert value(samples, "llava_edge_request_duration_seconds_count", route="/api/generate") == 1
    assert all("route-42" not in label and "no-such" not in label
               for _, labels, _ in samples for label in labels.values())
    assert value(scrape(server), "llava_edge_requests_total", route="/metrics", api="other", status="200") == 1


def test_metrics_needs_the_key_when_the_server_has_one(serve: Callable[..., LiveServer]) -> None:
    server = serve(api_key=KEY)

    missing = httpx.get(f"{server.http}/metrics", timeout=10)
    wrong = httpx.get(f"{server.http}/metrics", headers={"Authorization": "Bearer not-the-key"}, timeout=10)

    assert (missing.status_code, missing.json()["errors"][0]["code"]) == (401, "missingApiKey")
    assert (wrong.status_code, wrong.json()["errors"][0]["code"]) == (401, "invalidApiKey")
    assert "llava_edge_" not in missing.text + wrong.text
    assert value(scrape(server, KEY), "llava_edge_requests_total", route="/metrics", status="401") == 2


def test_metrics_without_a_key_on_a_server_without_one_and_from_a_foreign_page(
    serve: Callable[..., LiveServer],
) -> None:
    server = serve()
    foreign = httpx.get(f"{server.http}/metrics", headers={"Origin": "http://evil.example"}, timeout=10)

    assert foreign.status_code == 403 and "llava_edge_" not in foreign.text
    assert value(scrape(server), "llava_edge_model_loaded", model=server.service.captioner.model_name) == 1


def test_a_scrape_never_loads_an_unloaded_model(own_model: Callable[..., LiveServer]) -> None:
    server = own_model(keep_alive=0)
    model = server.service.captioner.model_name
    assert generate(server).json()["done"] is True
    wait_until(lambda: not server.service.resident.loaded)

    for _ in range(3):
        samples = scrape(server)

    assert server.service.resident.loaded is False
    assert httpx.get(f"{server.http}/health", timeout=10).json()["loaded"] is False
    assert value(samples, "llava_edge_model_loaded", model=model) == 0
    assert value(samples, "llava_edge_model_loads_total") == 0
    assert value(samples, "llava_edge_model_unloads_total", model=model, reason="keep_alive_zero") == 1
    assert generate(server).json()["done"] is True  # the next request loads it again
    wait_until(lambda: not server.service.resident.loaded)
    samples = scrape(server)
    assert value(samples, "llava_edge_model_loads_total", model=model) == 1
    assert value(samples, "llava_edge_model_swaps_total") == 0
    assert value(samples, "llava_edge_model_load_seconds_count") == 1
    assert value(samples, "llava_edge_model_unloads_total", model=model, reason="keep_alive_zero") == 2


def test_a_scrape_does_not_restart_the_keep_alive(own_model: Callable[..., LiveServer]) -> None:
    server = own_model(keep_alive=600)
    assert generate(server).json()["done"] is True
    expires = httpx.get(f"{server.http}/api/ps", timeout=10).json()["models"][0]["expires_at"]

    wait_until(lambda: server.service.resident.idle.idle_for() > 0.05)
    scrape(server)

    assert httpx.get(f"{server.http}/api/ps", timeout=10).json()["models"][0]["expires_at"] == expires


@pytest.mark.slow
def test_a_swap_is_counted_for_the_model_swapped_in_and_the_one_swapped_out(
    own_model: Callable[..., LiveServer],
) -> None:
    build_synthetic_pair("kquant-small", quantize=quantize_gguf)
    server = own_model(min_residency=0)
    first = server.service.captioner.model_name

    assert chat_completion(server, model="synthetic-kquant-small").status_code == 200
    samples = scrape(server)

    assert {labels["model"]: found for name, labels, found in samples if name == "llava_edge_model_loaded"} == {
        first: 0, "synthetic-kquant-small": 1}
    assert value(samples, "llava_edge_model_swaps_total", model="synthetic-kquant-small") == 1
    assert value(samples, "llava_edge_model_loads_total", model="synthetic-kquant-small") == 1
    assert value(samples, "llava_edge_model_unloads_total", model=first, reason="swap") == 1
    assert value(samples, "llava_edge_model_unload_seconds_count", reason="swap") == 1
    assert value(samples, "llava_edge_captions_total", model="synthetic-kquant-small") == 1


def test_stage_histograms_and_token_counters_count_every_caption(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    model = server.service.captioner.model_name
    assert chat_completion(server).status_code == 200
    assert post(server, [caption_task(data_uri(encode_image(32, 24)))]).status_code == 200

    samples = scrape(server)

    assert value(samples, "llava_edge_captions_total", model=model) == 2
    assert {labels["stage"] for name, labels, found in samples
            if name == "llava_edge_stage_seconds_count" and found == 2} == STAGES
    image_tokens = value(samples, "llava_edge_image_tokens_total", model=model)
    assert 0 < image_tokens < value(samples, "llava_edge_prompt_tokens_total", model=model)
    assert value(samples, "llava_edge_generated_tokens_total", model=model) > 0
    assert value(samples, "llava_edge_runware_tasks_total", transport="rest", task_type="caption",
                 status="success") == 1


def test_labels_never_carry_a_client_sent_model_name(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    bogus = "bogus-model-name-7f3a"
    assert chat_completion(server, model=bogus).status_code == 404
    assert generate(server, model=bogus).status_code == 404
    assert post(server, [caption_task(data_uri(encode_image(32, 24)), model=bogus)]).status_code == 400
    assert post(server, [{"taskType": bogus, "taskUUID": "x"}]).status_code == 400

    text = httpx.get(f"{server.http}/metrics", timeout=10).text

    assert bogus not in text
    samples = scrape(server)
    assert value(samples, "llava_edge_runware_tasks_total", transport="rest", task_type="other", status="error") == 1
    assert value(samples, "llava_edge_requests_total", route="/v1/chat/completions", status="404") == 1


def test_websocket_tasks_are_counted_by_type_and_status(serve: Callable[..., LiveServer]) -> None:
    server = serve(api_key=KEY)
    with connect(server.ws, open_timeout=10) as socket:
        socket.send(json.dumps([{"taskType": "ping", "ping": True}]))
        socket.recv(timeout=10)
        socket.send(json.dumps([{"taskType": "caption", "taskUUID": "a"}]))  # before authenticating: refused
        socket.recv(timeout=10)
        socket.send(json.dumps([{"taskType": "authentication", "apiKey": KEY}]))
        socket.recv(timeout=10)

    samples = scrape(server, KEY)

    counted = {(labels["task_type"], labels["status"]): found for name, labels, found in samples
               if name == "llava_edge_runware_tasks_total" and labels["transport"] == "websocket"}
    assert counted == {("ping", "success"): 1, ("caption", "error"): 1, ("authentication", "success"): 1}


def test_queue_depth_is_read_at_scrape_time_by_priority_class(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    assert {labels["priority"]: found for name, labels, found in scrape(server)
            if name == "llava_edge_queue_depth"} == {"interactive": 0, "background": 0}
    hold = ModelHold(server)
    tasks = [caption_task(data_uri(encode_image(20, 20)), deliveryMethod="async") for _ in range(3)]
    assert post(server, tasks).status_code == 200
    wait_until(lambda: server.service.health()["running"] and server.service.health()["queueDepth"] == 2)

    samples = scrape(server)
    depths = [value(samples, "llava_edge_queue_depth", priority=priority) for priority in ("interactive", "background")]

    hold.release()
    assert depths == [0, 2]  # async tasks are background work
    wait_until(lambda: value(scrape(server), "llava_edge_queue_depth", priority="background") == 0)
