"""When swaps happen, through the real server (127.0.0.1) with two installed models: jobs for the resident model
are served before a swap, a client alternating models does not swap per request, every API resolves the start
model's names the same way (a Runware task for it is served by it after a chat swap), ``--no-swap`` pins the
model, and a failed load leaves the server answering with the previous model."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.damaged_models import cache_with_damaged_small
from support.images import data_uri, encode_image
from support.servers import LiveServer, ModelHold, caption_task, post, wait_until

from llava_edge import Captioner, GenerationOptions
from llava_edge.models.synthetic import build_synthetic_pair
from llava_edge.runtime.quantize import quantize_gguf
from llava_edge.server.settings import ServerSettings

OPTIONS = GenerationOptions(max_tokens=4, temperature=0.0)
TINY, SMALL = "synthetic-tiny", "synthetic-kquant-small"
HANG_GUARD_S = 60


@pytest.fixture(scope="module")
def installed() -> None:
    build_synthetic_pair("tiny")
    build_synthetic_pair("kquant-small", quantize=quantize_gguf)


@pytest.fixture
def start(installed: None) -> Iterator[Callable[..., LiveServer]]:
    """Servers on their own TINY captioner (a swap closes the resident model: never the session's)."""
    started: list[tuple[LiveServer, Captioner]] = []

    def begin(**settings: Any) -> LiveServer:
        captioner = Captioner(TINY, generation=OPTIONS)
        started.append((LiveServer(captioner, ServerSettings(**settings)), captioner))
        return started[-1][0]

    yield begin
    ModelHold.release_all()
    for live, captioner in started:
        live.stop()
        live.service.captioner.close()
        captioner.close()


def chat_body(model: str) -> dict[str, Any]:
    image = {"type": "image_url", "image_url": {"url": data_uri(encode_image(40, 30)), "detail": "low"}}
    return {"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Hi"}, image]}]}


def loads(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The models each swap loaded, in order (a spy on the real swap)."""
    loaded: list[str] = []
    real = live.service.resident.ensure

    def counted(model: str, *args: Any) -> bool:
        swapped = real(model, *args)
        if swapped:
            loaded.append(model)
        return swapped

    monkeypatch.setattr(live.service.resident, "ensure", counted)
    return loaded


def queue_behind_a_held_model(live: LiveServer, models: list[str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Hold the model with one TINY job running, queue one chat per model (in this order), release; the models
    of the jobs in the order the model thread completed them (a spy on the real completion)."""
    completed: list[str] = []
    real_complete = live.service.worker.complete

    def complete(job: Any, outcome: Any) -> bool:
        completed.append(job.model)
        return real_complete(job, outcome)

    monkeypatch.setattr(live.service.worker, "complete", complete)
    answers: list[int] = []
    hold = ModelHold(live)
    threads = []
    for index, model in enumerate([TINY, *models]):
        def ask(model: str = model) -> None:
            answer = httpx.post(f"{live.http}/v1/chat/completions", json=chat_body(model), timeout=HANG_GUARD_S)
            answers.append(answer.status_code)
        threads.append(threading.Thread(target=ask, daemon=True))
        threads[-1].start()
        if index == 0:  # the first one holds the model (running, blocked by the hold) before the others come
            wait_until(lambda: live.service.health()["running"])
        else:  # queued, in this order
            wait_until(lambda index=index: live.service.health()["queueDepth"] == index)
    hold.release()
    for thread in threads:
        thread.join(HANG_GUARD_S)
    assert answers == [200] * len(threads)
    return completed


def test_jobs_for_the_resident_model_are_served_before_a_swap(
    start: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch,
) -> None:
    live = start(min_residency=1)
    loaded = loads(live, monkeypatch)

    completed = queue_behind_a_held_model(live, [SMALL, TINY, TINY], monkeypatch)

    assert completed == [TINY, TINY, TINY, SMALL] and loaded == [SMALL]


def test_a_client_alternating_models_does_not_swap_per_request(
    start: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch,
) -> None:
    live = start(min_residency=1)
    loaded = loads(live, monkeypatch)

    completed = queue_behind_a_held_model(live, [SMALL, TINY] * 3, monkeypatch)

    assert completed == [TINY] * 4 + [SMALL] * 3 and loaded == [SMALL]  # seven answers, one swap (not six)


def test_a_runware_task_for_the_start_model_is_served_by_it_after_a_chat_swap(
    start: Callable[..., LiveServer],
) -> None:
    live = start(min_residency=0)
    swapped = httpx.post(f"{live.http}/v1/chat/completions", json=chat_body(SMALL), timeout=HANG_GUARD_S)
    assert swapped.status_code == 200 and live.service.captioner.model_name == SMALL

    image = data_uri(encode_image(40, 30))
    answers = [post(live, [caption_task(image, model=name)]) for name in ("runware:150@2", TINY, "llava")]

    assert [answer.status_code for answer in answers] == [200, 200, 200], [answer.text for answer in answers]
    assert live.service.captioner.model_name == TINY
    unknown = post(live, [caption_task(image, model="no-such-model")])
    assert unknown.status_code == 400 and unknown.json()["errors"][0]["code"] == "invalidModel"


def test_no_swap_pins_the_start_model_on_every_api(start: Callable[..., LiveServer]) -> None:
    live = start(pin_model=True)
    image = data_uri(encode_image(40, 30))

    openai = httpx.post(f"{live.http}/v1/chat/completions", json=chat_body(SMALL), timeout=HANG_GUARD_S)
    ollama = httpx.post(f"{live.http}/api/generate", timeout=HANG_GUARD_S, json={
        "model": SMALL, "prompt": "Hi", "images": [image.split(",", 1)[1]], "stream": False})
    runware = post(live, [caption_task(image, model=SMALL)])
    allowed = httpx.post(f"{live.http}/v1/chat/completions", json=chat_body("llava"), timeout=HANG_GUARD_S)

    assert openai.status_code == 400 and openai.json()["error"]["code"] == "modelPinned"
    assert "--no-swap" in openai.json()["error"]["message"]
    assert ollama.status_code == 400 and "--no-swap" in ollama.json()["error"]
    assert runware.status_code == 400 and runware.json()["errors"][0]["code"] == "modelPinned"
    assert allowed.status_code == 200 and live.service.captioner.model_name == TINY


# -- a failed load ---------------------------------------------------------------------------------------


@pytest.fixture
def damaged_small(installed: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model cache with the tiny pair and a ``kquant-small`` pair whose text model is damaged."""
    cache_with_damaged_small(tmp_path)
    monkeypatch.setenv("LLAVA_EDGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_failed_swap_on_a_model_path_server_keeps_answering_with_the_start_model(
    damaged_small: Path, tmp_path: Path,
) -> None:
    files = build_synthetic_pair("tiny")
    local = tmp_path / "local"  # the start model as --model-path gives it: files no registry names
    shutil.copytree(files.model_path.parent, local)
    captioner = Captioner(model_path=local / files.model_path.name, mmproj_path=local / files.mmproj_path.name,
                          generation=OPTIONS)
    live = LiveServer(captioner, ServerSettings(min_residency=0))
    try:
        failed = httpx.post(f"{live.http}/v1/chat/completions", json=chat_body(SMALL), timeout=HANG_GUARD_S)
        after = [httpx.post(f"{live.http}/v1/chat/completions", json=chat_body("llava"), timeout=HANG_GUARD_S),
                 post(live, [caption_task(data_uri(encode_image(40, 30)))])]
        health = httpx.get(f"{live.http}/health").json()
    finally:
        live.stop()
        live.service.captioner.close()
        captioner.close()

    message = failed.json()["error"]["message"]
    assert failed.status_code == 500 and f"Model {SMALL} could not be loaded" in message, message
    assert "model.gguf" in message and str(tmp_path) not in message and "is still loaded" in message
    assert [answer.status_code for answer in after] == [200, 200], [answer.text for answer in after]
    assert health["status"] == "ok" and health["model"] == captioner.model_name
    assert health["lastLoadError"]["model"] == SMALL and str(tmp_path) not in health["lastLoadError"]["error"]


def test_serve_no_swap_refuses_another_installed_model(installed: None, serve_process: Callable[..., Any]) -> None:
    server = serve_process("--no-swap")

    refused = httpx.post(f"{server.http}/v1/chat/completions", json=chat_body(SMALL), timeout=HANG_GUARD_S)

    assert refused.status_code == 400 and refused.json()["error"]["code"] == "modelPinned", refused.text
    assert httpx.get(f"{server.http}/health").json()["model"] == TINY


def test_after_an_idle_unload_a_request_for_another_model_does_not_wait_out_the_residency(
    start: Callable[..., LiveServer],
) -> None:
    """Nothing is resident after an idle unload, so nobody is asking for it: the other model loads at once (with a
    10-minute residency, the request would otherwise wait ten minutes; the hang guard is one)."""
    live = start(keep_alive=0.0, min_residency=600.0)
    assert httpx.post(f"{live.http}/v1/chat/completions", json=chat_body(TINY), timeout=HANG_GUARD_S).status_code == 200
    wait_until(lambda: not live.service.health()["loaded"], timeout=HANG_GUARD_S)
    answer = httpx.post(f"{live.http}/v1/chat/completions", json=chat_body(SMALL), timeout=HANG_GUARD_S)
    assert answer.status_code == 200 and answer.json()["model"] == SMALL
