"""Interactive work before background work, through the real server: what marks a request background, the order
jobs take the model in (background keeps its minimum share), a queue limit per class, and a background caption
that steps aside in its prefill for a person's request and then answers exactly as it would have alone."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from support.images import data_uri, encoded
from support.servers import LiveServer, ModelHold, caption_task, post, wait_until
from support.slow_prefill import RUNTIME, anyres_picture, slow_prefill_captioner

from llava_edge.server import model_worker
from llava_edge.server.queue_policy import BACKGROUND_SHARE
from llava_edge.server.settings import ServerSettings
from llava_edge.server.work_options import PRIORITY_HEADER


def chat_body(png: str, model: str = "llava", **fields: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe it."}, {"type": "image_url", "image_url": {"url": png}}]}], **fields}


def in_background(work: Callable[[], Any]) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def depths(server: LiveServer) -> dict[str, int]:
    return httpx.get(f"{server.http}/health", timeout=10).json()["queueDepths"]


@pytest.fixture
def started_order(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The priority class of each job as the model worker starts it (watched, not changed)."""
    order: list[str] = []
    real = model_worker.ModelWorker._run_job

    def watched(self: model_worker.ModelWorker, job: Any) -> None:
        order.append(job.priority)
        real(self, job)

    monkeypatch.setattr(model_worker.ModelWorker, "_run_job", watched)
    yield order


def test_each_documented_sign_marks_a_request_background(
    serve: Callable[..., LiveServer], make_image: Callable[..., bytes],
) -> None:
    server = serve()
    png = data_uri(make_image(24, 24))
    hold = ModelHold(server)
    plug = in_background(lambda: httpx.post(f"{server.http}/v1/chat/completions", json=chat_body(png), timeout=60))
    wait_until(lambda: server.service.health()["running"])
    url = f"{server.http}/v1/chat/completions"
    senders = [
        lambda: httpx.post(url, json=chat_body(png, "llava:background"), timeout=60),
        lambda: httpx.post(url, json=chat_body(png, service_tier="flex"), timeout=60),
        lambda: httpx.post(f"{server.http}/api/generate", headers={PRIORITY_HEADER: "background"}, timeout=60,
                           json={"model": "llava", "prompt": "Hi", "images": [png.split(",", 1)[1]], "stream": False}),
        lambda: post(server, [caption_task(png, deliveryMethod="async")]),
        lambda: post(server, [caption_task(png, webhookURL="http://127.0.0.1:9/hook")]),
    ]
    threads = [in_background(send) for send in senders]
    wait_until(lambda: depths(server) == {"interactive": 0, "background": 5})
    threads.append(in_background(lambda: httpx.post(url, json=chat_body(png, service_tier="default"), timeout=60)))
    wait_until(lambda: depths(server) == {"interactive": 1, "background": 5})
    hold.release()
    for thread in [plug, *threads]:
        thread.join(60)
    wait_until(lambda: server.service.health()["liveTasks"] == 0, timeout=30)


def test_interactive_jobs_go_first_and_background_gets_a_turn_after_a_run_of_them(
    serve: Callable[..., LiveServer], make_image: Callable[..., bytes], started_order: list[str],
) -> None:
    server = serve()
    png = data_uri(make_image(24, 24))
    hold = ModelHold(server)
    threads = [in_background(lambda: post(server, [caption_task(png)]))]  # holds the model
    wait_until(lambda: server.service.health()["running"])
    assert post(server, [caption_task(png, deliveryMethod="async")]).status_code == 200
    for count in range(1, BACKGROUND_SHARE + 3):
        threads.append(in_background(lambda: post(server, [caption_task(png)])))
        wait_until(lambda count=count: depths(server)["interactive"] == count)  # type: ignore[misc]
    hold.release()
    for thread in threads:
        thread.join(60)
    wait_until(lambda: server.service.health()["liveTasks"] == 0, timeout=30)
    share = ["interactive"] * BACKGROUND_SHARE
    assert started_order == ["interactive", *share, "background", "interactive", "interactive"]


def test_max_queue_applies_per_class_so_a_batch_cannot_turn_a_person_away(
    serve: Callable[..., LiveServer], make_image: Callable[..., bytes],
) -> None:
    server = serve(max_queue=2)
    png = data_uri(make_image(24, 24))
    hold = ModelHold(server)
    plug = in_background(lambda: post(server, [caption_task(png)]))
    wait_until(lambda: server.service.health()["running"])
    batch = post(server, [caption_task(png, deliveryMethod="async") for _ in range(3)]).json()
    assert len(batch["data"]) == 2 and [error["code"] for error in batch["errors"]] == ["serviceUnavailable"]
    assert "2 background caption tasks are already waiting" in batch["errors"][0]["message"]
    assert depths(server)["background"] == 2
    person = in_background(lambda: post(server, [caption_task(png)]))
    wait_until(lambda: depths(server) == {"interactive": 1, "background": 2})
    hold.release()
    for thread in (plug, person):
        thread.join(60)


def test_a_background_caption_steps_aside_in_its_prefill_and_still_answers_as_alone() -> None:
    runtime = replace(RUNTIME, prefix_cache_bytes=512 << 20)  # room to park the background caption's state
    picture = data_uri(encoded(anyres_picture()))
    with slow_prefill_captioner(4, runtime) as slow:
        live = LiveServer(slow, ServerSettings())
        try:
            background: dict[str, Any] = {}
            body = chat_body(picture, service_tier="flex", detail="high")
            body["messages"][0]["content"][1]["image_url"]["detail"] = "high"
            worker = in_background(lambda: background.update(httpx.post(
                f"{live.http}/v1/chat/completions", json=body, timeout=300).json()))
            wait_until(lambda: live.service.health()["running"], timeout=30)
            person = httpx.post(f"{live.http}/v1/chat/completions", timeout=120, json={
                "model": "llava", "max_tokens": 2, "messages": [{"role": "user", "content": "Hello?"}]})
            assert person.status_code == 200 and worker.is_alive()  # answered while the caption was still going
            worker.join(300)
            alone = httpx.post(f"{live.http}/v1/chat/completions", json={**body, "service_tier": "default"},
                               timeout=300).json()
            assert background["choices"][0]["message"] == alone["choices"][0]["message"]
            assert background["usage"]["prompt_tokens"] == alone["usage"]["prompt_tokens"] > 2000
        finally:
            live.stop()

