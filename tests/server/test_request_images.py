"""A request's images through the real server (127.0.0.1): refused from their headers before any is decoded
when they cannot fit the context or exceed the per-request pixel bound; fetched in slots shared round-robin
between clients, under one deadline per request; inline images never wait behind the network."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from PIL import Image
from support.images import data_uri, encode_image
from support.servers import LiveServer, LoopbackHTTP, caption_task, post, wait_until

import llava_edge.api
from llava_edge.server.read_policy import client_key

HANG_GUARD_S = 60


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every image the model thread decodes (a spy on the real decoder)."""
    seen: list[object] = []
    real = llava_edge.api.load_image

    def counted(source: object, **kwargs: Any) -> Any:
        seen.append(source)
        return real(source, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(llava_edge.api, "load_image", counted)
    return seen


def canvas(width: int, height: int) -> str:
    """A plain picture of this size as a data URI: megapixels that cost a few KB to send."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 200)).save(buffer, format="PNG", compress_level=1)
    return data_uri(buffer.getvalue())


def chat(server: LiveServer, images: list[str], *, key: str | None = None, detail: str = "high",
         max_tokens: int = 4) -> httpx.Response:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "Describe them."}]
    parts += [{"type": "image_url", "image_url": {"url": url, "detail": detail}} for url in images]
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": "llava", "max_tokens": max_tokens, "messages": [{"role": "user", "content": parts}]}
    return httpx.post(f"{server.http}/v1/chat/completions", json=body, headers=headers, timeout=HANG_GUARD_S)


# -- sizes checked before decoding --------------------------------------------------------------------


def test_images_that_cannot_fit_the_context_are_refused_before_any_is_decoded(
    serve: Callable[..., LiveServer], decodes: list[object],
) -> None:
    server = serve()
    eight = [canvas(1000 + index, 1000) for index in range(8)]  # 2,880 tokens each at detail high: 23,040

    refused = chat(server, eight)
    task = caption_task(canvas(2000, 2000), detail="high", maxTokens=4096)  # 2,880 + 4,096 > 4,096
    runware = post(server, [task])

    assert refused.status_code == 400 and refused.json()["error"]["code"] == "maxContextLengthExceeded"
    assert "The 8 images (23040 tokens) plus prompt" in refused.json()["error"]["message"]
    assert runware.status_code == 400 and runware.json()["errors"][0]["code"] == "maxContextLengthExceeded"
    assert decodes == []  # nothing was decoded: the headers' sizes decided
    assert chat(server, eight[:1]).status_code == 200 and len(decodes) == 1  # one fits, and is decoded


def test_the_decoded_pixels_of_one_request_are_bounded(
    serve: Callable[..., LiveServer], decodes: list[object],
) -> None:
    server = serve()
    two = [canvas(6000, 5000), canvas(6000, 5001)]  # each under the 40 MP image limit; 60 MP together

    refused = chat(server, two, detail="low")  # 576 tokens each: they would fit the context

    assert refused.status_code == 400, refused.text
    assert "the server decodes at most 50000000 pixels per request" in refused.json()["error"]["message"]
    assert decodes == []


# -- fetch slots -------------------------------------------------------------------------------------------


@pytest.fixture
def slow_host(loopback_http: LoopbackHTTP) -> Iterator[LoopbackHTTP]:
    """An image host that holds every answer until released."""
    loopback_http.image = encode_image(40, 30)
    loopback_http.hold()
    yield loopback_http
    loopback_http.release()


def in_background(call: Callable[[], httpx.Response]) -> tuple[threading.Thread, list[httpx.Response]]:
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(call()), daemon=True)
    thread.start()
    return thread, answers


def test_inline_images_never_wait_behind_slow_fetches(
    serve: Callable[..., LiveServer], slow_host: LoopbackHTTP,
) -> None:
    server = serve(allow_private_fetch=True)
    slow = [in_background(lambda index=index: chat(server, [f"{slow_host.url}/slow-{index}.png"], detail="low"))
            for index in range(5)]
    wait_until(lambda: len(slow_host.requests) == 4 and server.service.worker.intake.slots.waiting == 1)

    inline = chat(server, [data_uri(encode_image(40, 30))], detail="low")
    runware = post(server, [caption_task(data_uri(encode_image(40, 30)))])

    assert inline.status_code == 200 and runware.status_code == 200
    assert len(slow_host.requests) == 4 and all(thread.is_alive() for thread, _ in slow)  # still held
    slow_host.release()
    for thread, answers in slow:
        thread.join(HANG_GUARD_S)
        assert [answer.status_code for answer in answers] == [200]


def test_fetch_slots_go_round_robin_between_clients(
    serve: Callable[..., LiveServer], slow_host: LoopbackHTTP,
) -> None:
    server = serve(allow_private_fetch=True)
    slots = server.service.worker.intake.slots
    greedy = in_background(lambda: chat(server, [f"{slow_host.url}/a-{index}.png" for index in range(6)],
                                        key="client-a", detail="low"))
    wait_until(lambda: len(slow_host.requests) == 4 and slots.waiting == 2)  # a holds every slot, two more wait
    late = in_background(lambda: chat(server, [f"{slow_host.url}/b.png"], key="client-b", detail="low"))
    wait_until(lambda: slots.waiting == 3)

    assert slots.next_in_line() == client_key(api_key="client-b")  # before client a's two others
    slow_host.release()
    for thread, answers in (greedy, late):
        thread.join(HANG_GUARD_S)
        assert [answer.status_code for answer in answers] == [200]
    assert len(slow_host.requests) == 7


def test_one_fetch_deadline_per_request_however_many_urls(
    serve: Callable[..., LiveServer], slow_host: LoopbackHTTP,
) -> None:
    server = serve(allow_private_fetch=True, fetch_deadline=1)
    urls = [f"{slow_host.url}/held-{index}.png" for index in range(6)]  # 6 x the 30 s per-URL deadline before

    refused = chat(server, urls, detail="low")

    assert refused.status_code == 400, refused.text
    assert "not all read within 1 s (one deadline for all the image URLs" in refused.json()["error"]["message"]
    wait_until(lambda: server.service.worker.intake.slots.waiting == 0)
    assert chat(server, [data_uri(encode_image(40, 30))], detail="low").status_code == 200
