"""``/health``'s ``queueDepth`` counts the admitted captions that are not running: never below 0, never above the
limit, whatever finishes, fails, is abandoned or is failed by a drain while the model is still busy with it."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
from support.images import data_uri
from support.servers import LiveServer, ModelHold, caption_task, post, wait_until
from websockets.sync.client import connect


@contextmanager
def watching_health(server: LiveServer) -> Iterator[list[int]]:
    """Poll ``/health`` over HTTP as fast as it answers while the block runs; yields the queue depths seen."""
    depths: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                depths.append(client.get(f"{server.http}/health").json()["queueDepth"])

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        yield depths
    finally:
        stop.set()
        watcher.join(15)


def test_a_caption_the_drain_failed_while_the_model_still_runs_it_is_not_counted(
    serve: Callable[..., LiveServer], make_image: Callable[..., bytes],
) -> None:
    """The drain fails the running caption at the deadline, but the model unwinds it only at its next step: that
    job is done for the queue yet still running (before, ``queueDepth`` said -1 until the caption unwound)."""
    server = serve()
    hold = ModelHold(server)
    png = data_uri(make_image(20, 20))
    tasks = [caption_task(png, deliveryMethod="async") for _ in range(2)]
    assert post(server, tasks).status_code == 200
    wait_until(lambda: server.service.health()["running"])
    server.service.begin_shutdown(0.1)
    wait_until(lambda: server.service.registry.counts() == (0, 2))  # both failed by the drain, kept
    health = httpx.get(f"{server.http}/health", timeout=10).json()
    assert (health["status"], health["running"], health["queueDepth"]) == ("draining", True, 0)
    hold.release()
    wait_until(lambda: not server.service.health()["running"])
    assert server.service.health()["queueDepth"] == 0


def test_queue_depth_stays_in_bounds_under_concurrent_captions_and_cancellations(
    serve: Callable[..., LiveServer], make_image: Callable[..., bytes],
) -> None:
    server = serve(max_queue=6)
    png = data_uri(make_image(24, 24))

    def sync_captions() -> None:
        for _ in range(6):
            post(server, [caption_task(png), caption_task(png, maxTokens=2)])

    def leaving_websocket() -> None:
        for _ in range(6):
            with connect(server.ws, open_timeout=10) as leaving:
                leaving.send(json.dumps([{"taskType": "authentication", "apiKey": "k"}]))
                leaving.recv(timeout=10)
                leaving.send(json.dumps([caption_task(png) for _ in range(3)]))
                leaving.socket.shutdown(socket.SHUT_RDWR)  # gone with three answers outstanding

    def cancelled_streams() -> None:
        body = {"model": "llava", "stream": True, "max_tokens": 16, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Hi"}, {"type": "image_url", "image_url": {"url": png}}]}]}
        for _ in range(6):
            with httpx.stream("POST", f"{server.http}/v1/chat/completions", json=body, timeout=30) as answer:
                next(answer.iter_lines(), None)  # the first event, then the client leaves

    with watching_health(server) as depths:
        clients = [threading.Thread(target=work) for work in (sync_captions, leaving_websocket, cancelled_streams)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(120)
        # the model thread clears its running job just after the job's outcome is out: wait for both
        wait_until(lambda: server.service.health()["liveTasks"] == 0 and not server.service.health()["running"],
                   timeout=60)
    assert depths and min(depths) >= 0 and max(depths) <= 6, sorted(set(depths))
    health = server.service.health()
    assert (health["queueDepth"], health["running"], health["status"]) == (0, False, "ok")
