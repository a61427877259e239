"""A non-streamed chat answer whose client disconnects is cancelled, as a closed stream is: on every chat API,
through the real server (127.0.0.1). Queued, it is answered cancelled without running; running, its caption
stops at its next step."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from support.images import data_uri, encode_image
from support.servers import LiveServer, ModelHold, wait_until

from llava_edge.errors import CaptionCancelledError

IMAGE = data_uri(encode_image(40, 30))
BODIES = {
    "/v1/chat/completions": {"model": "llava", "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Hi"}, {"type": "image_url", "image_url": {"url": IMAGE}}]}]},
    "/api/generate": {"model": "llava", "prompt": "Hi", "images": [IMAGE.split(",", 1)[1]], "stream": False},
    "/v1/responses": {"model": "llava", "max_output_tokens": 16, "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "Hi"}, {"type": "input_image", "image_url": IMAGE}]}]},
}
HANG_GUARD_S = 60


def send_and_leave(server: LiveServer, path: str) -> None:
    """POST the whole request, then close the connection without reading the answer."""
    body = json.dumps(BODIES[path]).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_until(lambda: server.service.health()["queueDepth"] == 1)  # read and queued behind the held model


def outcomes_of(server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every outcome the server completes a job with (a spy on the real completion)."""
    seen: list[Any] = []
    real = server.service.worker.complete

    def complete(job: Any, outcome: Any) -> bool:
        seen.append(outcome)
        return real(job, outcome)

    monkeypatch.setattr(server.service.worker, "complete", complete)
    return seen


@pytest.mark.parametrize("path", BODIES)
def test_a_queued_answer_whose_client_left_never_runs(
    serve: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch, path: str,
) -> None:
    server = serve()
    outcomes = outcomes_of(server, monkeypatch)
    hold = ModelHold(server)
    running = threading.Thread(target=lambda: httpx.post(f"{server.http}{path}", json=BODIES[path],
                                                         timeout=HANG_GUARD_S), daemon=True)
    running.start()
    wait_until(lambda: server.service.health()["running"])

    send_and_leave(server, path)

    wait_until(lambda: server.service.health()["queueDepth"] == 0)  # answered while the model is still held
    assert len(outcomes) == 1 and isinstance(outcomes[0].error, CaptionCancelledError)
    assert server.service.health()["running"]
    hold.release()
    running.join(HANG_GUARD_S)
    wait_until(lambda: len(outcomes) == 2)
    assert outcomes[1].ok


def test_a_running_answer_whose_client_left_is_stopped(
    serve: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = serve()
    outcomes = outcomes_of(server, monkeypatch)
    hold = ModelHold(server)
    path = "/v1/chat/completions"
    body = json.dumps(BODIES[path]).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_until(lambda: server.service.health()["running"])  # in the model, waiting for it
    wait_until(lambda: all(job.chat.cancelled.is_set() for job in server.service.worker._jobs))  # the client is gone
    hold.release()

    wait_until(lambda: len(outcomes) == 1)
    assert isinstance(outcomes[0].error, CaptionCancelledError)
    assert httpx.post(f"{server.http}{path}", json=BODIES[path], timeout=HANG_GUARD_S).status_code == 200
