"""Result delivery and retention: webhookURL POSTs, uploadEndpoint PUTs (with retries), and ttl expiry.

Receivers are real HTTP servers on 127.0.0.1 (``loopback_http``); the server is the real one on the
tiny model, started with ``allow_private_fetch`` (``LOOPBACK``) because the loopback receivers stand in for
public ones (tests/server/test_server_ssrf.py covers the default refusal).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
from support.images import data_uri
from support.servers import LiveServer, LoopbackHTTP, caption_task, post

from llava_edge.outbound import TransferLimits

FAST_RETRIES: dict[str, Any] = {"delivery_attempts": 4, "delivery_backoff": 0.05}
LOOPBACK: dict[str, Any] = {"allow_private_fetch": True}


def get_response(server: LiveServer, task_uuid: object) -> httpx.Response:
    return post(server, [{"taskType": "getResponse", "taskUUID": task_uuid}])


def wait_for_status(server: LiveServer, task_uuid: object, status: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = get_response(server, task_uuid).json()
        item = (body.get("data") or body.get("errors"))[0]
        if item.get("status") == status:
            return dict(item)
        time.sleep(0.05)
    raise AssertionError(f"task {task_uuid} never reached {status}")


def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_async_webhook_gets_the_result_item(
    serve: Callable[..., LiveServer], loopback_http: LoopbackHTTP, make_image: Callable[..., bytes]
) -> None:
    server = serve(**FAST_RETRIES, **LOOPBACK)
    task = caption_task(data_uri(make_image()), deliveryMethod="async", includeCost=True,
                        webhookURL=f"{loopback_http.url}/hook?token=abc")
    assert "text" not in post(server, [task]).json()["data"][0]
    method, path, body = loopback_http.wait_for(1)[0]
    assert (method, path) == ("POST", "/hook?token=abc")
    delivered = json.loads(body)
    assert delivered == get_response(server, task["taskUUID"]).json()["data"][0]
    assert delivered["taskUUID"] == task["taskUUID"] and delivered["status"] == "success" and delivered["text"]


def test_webhook_retried_with_backoff_until_accepted(
    serve: Callable[..., LiveServer], loopback_http: LoopbackHTTP, make_image: Callable[..., bytes]
) -> None:
    server = serve(delivery_attempts=4, delivery_backoff=0.2, **LOOPBACK)
    loopback_http.statuses = [500, 503]
    task = caption_task(data_uri(make_image()), webhookURL=f"{loopback_http.url}/hook")
    inline = post(server, [task]).json()["data"][0]  # sync: answered inline AND posted
    attempts = loopback_http.wait_for(3)
    assert [method for method, _, _ in attempts] == ["POST"] * 3
    assert all(json.loads(body) == {**inline, "status": "success"} for _, _, body in attempts)
    first, second, third = loopback_http.times[:3]
    assert second - first >= 0.19 and third - second >= 0.39  # back-off: 0.2 s, then doubled
    time.sleep(0.5)
    assert len(loopback_http.requests) == 3  # accepted: no further attempt
    assert server.service.deliverer.pending == 0


def test_unreachable_webhook_never_fails_or_delays_the_task(
    serve: Callable[..., LiveServer], make_image: Callable[..., bytes], caplog: Any
) -> None:
    server = serve(**FAST_RETRIES, **LOOPBACK)
    dead = f"http://127.0.0.1:{closed_port()}/hook?secret=s3cr3t"
    task = caption_task(data_uri(make_image()), webhookURL=dead, deliveryMethod="async")
    assert post(server, [task]).status_code == 200
    assert wait_for_status(server, task["taskUUID"], "success")["text"]
    deadline = time.monotonic() + 10
    with caplog.at_level("WARNING", logger="llava_edge.server.delivery"):
        while "failed after 4 attempts" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "failed after 4 attempts" in caplog.text
    assert "s3cr3t" not in caplog.text  # the query (often a token) is never logged


def test_hanging_webhook_holds_up_neither_captions_nor_other_webhooks(
    serve: Callable[..., LiveServer], loopback_http: LoopbackHTTP, make_image: Callable[..., bytes]
) -> None:
    server = serve(**FAST_RETRIES, delivery_limits=TransferLimits(timeout=30, deadline=30), **LOOPBACK)
    hanging = LoopbackHTTP()
    hanging.hold()  # its answers wait until release(): the first delivery attempt stays in flight
    try:
        image = data_uri(make_image())
        assert post(server, [caption_task(image, webhookURL=f"{hanging.url}/hook")]).status_code == 200
        assert hanging.wait_for(1)[0][0] == "POST"
        other = caption_task(image, webhookURL=f"{loopback_http.url}/hook")
        assert post(server, [other]).status_code == 200  # a caption completes meanwhile
        delivered = loopback_http.wait_for(1, timeout=20)  # and another endpoint gets its result
        assert delivered and json.loads(delivered[0][2])["taskUUID"] == other["taskUUID"]
        assert len(hanging.requests) == 1  # the hanging attempt is still unanswered
    finally:
        hanging.close()


def test_upload_endpoint_receives_a_put(
    serve: Callable[..., LiveServer], loopback_http: LoopbackHTTP, make_image: Callable[..., bytes]
) -> None:
    server = serve(**FAST_RETRIES, **LOOPBACK)
    loopback_http.statuses = [502]
    task = caption_task(data_uri(make_image()), deliveryMethod="async", uploadEndpoint=f"{loopback_http.url}/put/x")
    post(server, [task])
    requests = loopback_http.wait_for(2)
    assert [(method, path) for method, path, _ in requests] == [("PUT", "/put/x")] * 2
    assert json.loads(requests[1][2]) == wait_for_status(server, task["taskUUID"], "success")


def test_failed_task_is_delivered_as_an_error_item(
    serve: Callable[..., LiveServer], loopback_http: LoopbackHTTP
) -> None:
    server = serve(**FAST_RETRIES, **LOOPBACK)
    task = caption_task("data:image/png;base64,aGVsbG8=", deliveryMethod="async",
                        webhookURL=f"{loopback_http.url}/hook")
    post(server, [task])
    delivered = json.loads(loopback_http.wait_for(1)[0][2])
    assert delivered["status"] == "error" and delivered["code"] == "unsupportedImageFormat"
    assert delivered["taskUUID"] == task["taskUUID"]


def test_results_expire_after_their_ttl(serve: Callable[..., LiveServer], make_image: Callable[..., bytes]) -> None:
    server = serve(result_ttl=1)
    image = data_uri(make_image())
    short = caption_task(image, deliveryMethod="async")
    kept = caption_task(image, deliveryMethod="async", ttl=60)
    post(server, [short, kept])
    wait_for_status(server, short["taskUUID"], "success")
    wait_for_status(server, kept["taskUUID"], "success")
    time.sleep(1.3)
    expired = get_response(server, short["taskUUID"])
    assert expired.status_code == 404
    assert expired.json()["errors"][0]["code"] == "taskFailedOrNotFound"
    assert expired.json()["errors"][0]["taskUUID"] == short["taskUUID"]
    assert get_response(server, kept["taskUUID"]).json()["data"][0]["status"] == "success"
    assert post(server, [{**short, "deliveryMethod": "sync"}]).status_code == 200  # its UUID is free again
