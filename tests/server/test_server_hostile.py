"""A hostile client against the real server on 127.0.0.1: requests that used to kill the model worker,
cross-site and DNS-rebinding requests, connection and body exhaustion before authentication, key guessing,
and WebSocket floods. After each, the worker is alive and every task was answered once."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.images import data_uri
from support.servers import LiveServer, ModelHold, caption_task, post, wait_until
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

KEY = "a-key-of-sixteen-plus"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def png(make_image: Callable[..., bytes]) -> str:
    return data_uri(make_image(40, 30))


def assert_alive(server: LiveServer, png: str, key: str | None = None) -> None:
    """The worker answers a caption and /health says ok."""
    assert httpx.get(f"{server.http}/health", timeout=10).json()["status"] == "ok"
    answer = post(server, [caption_task(png)], key=key)
    assert answer.status_code == 200 and answer.json()["data"][0]["text"], answer.text


# -- the worker cannot die ------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [10**400, 7 * 24 * 3600 + 1, -1, 1e308, "60"])
def test_out_of_range_ttl_is_a_400_and_the_worker_lives(serve: Callable[..., LiveServer], png: str, ttl: Any) -> None:
    server = serve()
    body = json.dumps([caption_task(png, ttl=ttl, deliveryMethod="async")])
    answer = httpx.post(f"{server.http}/v1", content=body, headers=JSON, timeout=30)
    assert answer.status_code == 400 and answer.json()["errors"][0]["parameter"] == "ttl", answer.text
    assert_alive(server, png)


def test_a_week_is_the_longest_ttl(serve: Callable[..., LiveServer], png: str) -> None:
    server = serve()
    answer = post(server, [caption_task(png, ttl=7 * 24 * 3600)])
    assert answer.status_code == 200, answer.text


def test_a_crashing_worker_loop_is_restarted(serve: Callable[..., LiveServer], png: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the worker loop itself ever raise, the supervisor starts it again and /health counts it."""
    server = serve()
    service = server.service
    real_take = service.worker._queue.take
    failures = iter([SystemError("injected fault in the worker loop")])

    def failing_take(*args: Any, **kwargs: Any) -> Any:
        for failure in failures:
            raise failure
        return real_take(*args, **kwargs)

    monkeypatch.setattr(service.worker._queue, "take", failing_take)
    wait_until(lambda: service.worker_restarts == 1)
    assert_alive(server, png)
    assert httpx.get(f"{server.http}/health").json()["workerRestarts"] == 1


def test_an_error_while_keeping_a_result_still_answers_the_task(serve: Callable[..., LiveServer], png: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve()

    def broken_finish(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("injected fault in the task registry")

    monkeypatch.setattr(server.service.registry, "finish", broken_finish)
    answer = post(server, [caption_task(png)])
    assert answer.status_code == 200 and answer.json()["data"][0]["text"]


def test_a_url_that_speaks_no_http_is_that_task_s_error_on_rest_and_websocket(
    serve: Callable[..., LiveServer], png: str
) -> None:
    """A non-HTTP port (BadStatusLine) used to escape the per-task handling."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        threading.Thread(target=_answer_garbage, args=(listener,), daemon=True).start()
        server = serve(allow_private_fetch=True)
        task = caption_task(f"http://127.0.0.1:{port}/x.png")
        answer = post(server, [task])
        assert answer.status_code == 400 and answer.json()["errors"][0]["taskUUID"] == task["taskUUID"]
        with connect(server.ws, open_timeout=10) as ws:
            ws.send(json.dumps([{"taskType": "authentication", "apiKey": "k"}]))
            ws.recv(timeout=10)
            ws.send(json.dumps([other := caption_task(f"http://127.0.0.1:{port}/y.png")]))
            assert json.loads(ws.recv(timeout=30))["errors"][0]["taskUUID"] == other["taskUUID"]
    assert_alive(server, png)


def _answer_garbage(listener: socket.socket) -> None:
    for _ in range(4):
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        with connection:
            connection.recv(4096)
            connection.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")


# -- no web page may drive the server -------------------------------------------------------------


def test_a_foreign_origin_is_refused_on_rest_and_websocket(serve: Callable[..., LiveServer], png: str) -> None:
    server = serve()
    foreign = {**JSON, "Origin": "http://evil.example"}
    answer = httpx.post(f"{server.http}/v1", content=json.dumps([caption_task(png)]), headers=foreign)
    assert answer.status_code == 403 and answer.json()["errors"][0]["code"] == "invalidOrigin"
    with pytest.raises(InvalidStatus) as refused:
        connect(server.ws, origin="http://evil.example", open_timeout=10)  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    assert server.service.registry.counts() == (0, 0)  # nothing ran


def test_the_server_s_own_origin_and_listed_origins_are_allowed(serve: Callable[..., LiveServer], png: str) -> None:
    server = serve(allow_origins=frozenset({"https://photos.example:8443"}))
    for origin in (server.http, "https://photos.example:8443"):
        answer = httpx.post(f"{server.http}/v1", content=json.dumps([caption_task(png)]),
                            headers={**JSON, "Origin": origin})
        assert answer.status_code == 200, (origin, answer.text)
    with connect(server.ws, origin=server.http, open_timeout=10) as ws:  # type: ignore[arg-type]
        ws.send(json.dumps([{"taskType": "ping", "ping": True}]))
        assert json.loads(ws.recv(timeout=10))["data"][0]["pong"] is True


def test_a_simple_cross_site_post_is_refused_by_its_content_type(serve: Callable[..., LiveServer], png: str) -> None:
    """text/plain needs no CORS preflight, so a page could send it: Runware routes want application/json."""
    server = serve()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""):
        answer = httpx.post(f"{server.http}/v1", content=json.dumps([caption_task(png)]),
                            headers={"Content-Type": content_type})
        assert answer.status_code == 415 and answer.json()["errors"][0]["code"] == "unsupportedMediaType"
    assert server.service.registry.counts() == (0, 0)


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.nip.io", "localhost.evil.example", "router.local"])
def test_a_rebinding_host_name_is_refused(serve: Callable[..., LiveServer], png: str, host: str) -> None:
    server = serve()
    answer = httpx.post(f"{server.http}/v1", content=json.dumps([caption_task(png)]), headers={**JSON, "Host": host})
    assert answer.status_code == 403 and answer.json()["errors"][0]["code"] == "invalidHost"
    assert httpx.get(f"{server.http}/health", headers={"Host": host}).status_code == 403


@pytest.mark.parametrize("host", ["localhost", "app.localhost", "127.0.0.1", "[::1]", "10.1.2.3", "captions.lan"])
def test_ip_literals_localhost_and_listed_names_are_served(serve: Callable[..., LiveServer], host: str) -> None:
    server = serve(allow_hosts=frozenset({"captions.lan"}))
    answer = httpx.get(f"{server.http}/health", headers={"Host": f"{host}:{server.port}"})
    assert answer.status_code == 200


# -- bounded before authentication ----------------------------------------------------------------


def test_seventy_idle_sockets_do_not_stop_a_caption_and_are_closed(serve: Callable[..., LiveServer], png: str) -> None:
    server = serve(head_timeout=1.5)
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(70)]
    try:
        assert_alive(server, png)
        for sock in idle:
            sock.settimeout(5)
            assert sock.recv(1) == b""  # closed by the server after head_timeout
    finally:
        for sock in idle:
            sock.close()


def test_a_trickled_request_head_is_cut_at_the_deadline(serve: Callable[..., LiveServer]) -> None:
    server = serve(head_timeout=1.0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        started = time.monotonic()
        closed = False
        # One byte every 0.1 s for 40 s: a server without the head deadline still reads at the 10 s hang guard.
        for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 400:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.1)
            if time.monotonic() - started > 10 * 1.0:
                break
        sock.settimeout(5)
        closed = closed or sock.recv(1) == b""
    assert closed


def test_sockets_beyond_the_cap_are_closed_at_once(serve: Callable[..., LiveServer], png: str) -> None:
    server = serve(max_sockets=5, head_timeout=30)
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(5)]
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as extra:
            extra.settimeout(5)
            assert extra.recv(1) == b""
    finally:
        for sock in idle:
            sock.close()
    wait_until(lambda: _health_answers(server))
    assert_alive(server, png)


def _health_answers(server: LiveServer) -> bool:
    try:
        return httpx.get(f"{server.http}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_wrong_bearer_key_is_refused_before_the_body_is_read(serve: Callable[..., LiveServer]) -> None:
    """30 MB declared, a few bytes sent: the 401 comes back while the client still holds the rest."""
    server = serve(api_key=KEY)
    head = (b"POST /v1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer wrong-key\r\nContent-Length: 30000000\r\n\r\n[")
    assert _status_before_body_ends(server, head) == 401


def test_without_a_header_only_a_small_prefix_is_read_before_the_key(serve: Callable[..., LiveServer]) -> None:
    server = serve(api_key=KEY, preauth_body_bytes=4096)
    head = (b"POST /v1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 30000000"
            b"\r\n\r\n" + json.dumps([{"taskType": "authentication", "apiKey": "wrong"}])[:-1].encode() + b", ")
    assert _status_before_body_ends(server, head + b" " * 8192) == 401


def _status_before_body_ends(server: LiveServer, sent: bytes) -> int:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(sent)
        sock.settimeout(10)
        status_line = sock.recv(64).split(b"\r\n", 1)[0]
    return int(status_line.split()[1])


def test_the_right_key_in_the_first_task_reads_the_rest(serve: Callable[..., LiveServer], png: str) -> None:
    server = serve(api_key=KEY, preauth_body_bytes=1024)
    tasks = [{"taskType": "authentication", "apiKey": KEY}, caption_task(png)]  # the image is far past 1 KiB
    answer = httpx.post(f"{server.http}/v1", content=json.dumps(tasks), headers=JSON, timeout=30)
    assert answer.status_code == 200 and answer.json()["data"][0]["text"]


@pytest.mark.parametrize("api_key", [None, KEY])
def test_hostile_json_is_a_400_never_a_500(serve: Callable[..., LiveServer], png: str, api_key: str | None) -> None:
    server = serve(api_key=api_key, max_body_bytes=1 << 20)
    headers = {**JSON, "Authorization": f"Bearer {KEY}"} if api_key else JSON
    for body in (b"[" * 100_000 + b"]" * 100_000, b'[{"a":' * 50_000, b"\xff\xfe[", b'[{"taskType": 1e999}]',
                 b"[" + b"9" * 5000 + b"]", b"null", b"[]"):
        answer = httpx.post(f"{server.http}/v1", content=body, headers=headers, timeout=30)
        assert answer.status_code == 400, (body[:20], answer.status_code, answer.text[:200])
    assert_alive(server, png, key=KEY if api_key else None)


def test_a_lone_surrogate_key_is_a_401(serve: Callable[..., LiveServer]) -> None:
    server = serve(api_key=KEY)
    body = '[{"taskType": "authentication", "apiKey": "\\ud800"}, {"taskType": "ping", "ping": true}]'
    answer = httpx.post(f"{server.http}/v1", content=body, headers=JSON)
    assert answer.status_code == 401 and answer.json()["errors"][0]["code"] == "invalidApiKey"


def test_key_guessing_is_braked_per_address(serve: Callable[..., LiveServer]) -> None:
    server = serve(api_key=KEY, auth_failures_per_minute=5)
    ping = [{"taskType": "ping", "ping": True}]
    for attempt in range(5):
        assert post(server, ping, key=f"guess-{attempt}").status_code == 401
    braked = post(server, ping, key=KEY)  # even the right key waits now
    assert braked.status_code == 429 and braked.headers["retry-after"]
    assert braked.json()["errors"][0]["code"] == "tooManyRequests"
    with connect(server.ws, open_timeout=10) as ws:
        ws.send(json.dumps([{"taskType": "authentication", "apiKey": KEY}]))
        assert json.loads(ws.recv(timeout=10))["errors"][0]["code"] == "tooManyRequests"


def test_a_websocket_must_authenticate_with_a_small_frame(serve: Callable[..., LiveServer]) -> None:
    server = serve(api_key=KEY, preauth_body_bytes=1024)
    with connect(server.ws, open_timeout=10, max_size=None) as ws:
        ws.send(json.dumps([{"taskType": "ping", "ping": True, "padding": "x" * 5000}]))
        with pytest.raises(Exception):  # noqa: B017 - closed with 1009, whatever the client library raises
            ws.recv(timeout=10)
    assert ws.close_code == 1009


def test_a_websocket_flood_waits_at_the_in_flight_cap(serve: Callable[..., LiveServer], png: str) -> None:
    server = serve(ws_max_in_flight=3, max_queue=64)
    hold = ModelHold(server)
    tasks = [caption_task(png) for _ in range(12)]  # sync: each stays in flight until captioned
    try:
        with connect(server.ws, open_timeout=10, max_size=None) as ws:
            ws.send(json.dumps([{"taskType": "authentication", "apiKey": "k"}]))
            ws.recv(timeout=10)
            for task in tasks:
                ws.send(json.dumps([task]))
            wait_until(lambda: server.service.registry.counts()[0] == 3)
            time.sleep(0.5)
            assert server.service.registry.counts()[0] == 3  # the rest are unread frames, not tasks in memory
            hold.release()
            answered = {json.loads(ws.recv(timeout=30))["data"][0]["taskUUID"] for _ in tasks}
    finally:
        hold.release()
    assert answered == {task["taskUUID"] for task in tasks}


# -- properties -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_server(captioner: Any) -> Iterator[LiveServer]:
    from llava_edge.server.settings import ServerSettings

    server = LiveServer(captioner, ServerSettings(max_body_bytes=1 << 16))
    yield server
    server.stop()


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
_task_like = st.fixed_dictionaries(
    {"taskType": st.sampled_from(["caption", "imageCaption", "imageUpload", "getResponse", "ping", "x"]),
     "taskUUID": st.one_of(st.just(str(uuid.uuid4())), st.text(max_size=40))},
    optional={"inputs": _json_values, "ttl": _json_values, "maxTokens": _json_values, "image": _json_values,
              "webhookURL": _json_values, "deliveryMethod": _json_values},
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=300), st.lists(_task_like, max_size=3).map(json.dumps).map(str.encode)))
def test_any_body_gets_an_answer_never_a_500(shared_server: LiveServer, body: bytes) -> None:
    answer = httpx.post(f"{shared_server.http}/v1", content=body, headers=JSON, timeout=30)
    assert answer.status_code < 500 or answer.status_code == 503, answer.text[:300]
    assert shared_server.service.health()["status"] == "ok"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.one_of(st.text(max_size=200), st.lists(_task_like, max_size=3).map(json.dumps)),
                       min_size=1, max_size=4))
def test_any_websocket_frame_gets_an_answer_per_task(shared_server: LiveServer, frames: list[str]) -> None:
    with connect(shared_server.ws, open_timeout=10, max_size=None) as ws:
        ws.send(json.dumps([{"taskType": "authentication", "apiKey": "k"}]))
        ws.recv(timeout=10)
        for frame in frames:
            ws.send(frame)
            expected = _answers_expected(frame)
            for _ in range(expected):
                assert json.loads(ws.recv(timeout=30)).keys() <= {"data", "errors"}
    assert shared_server.service.health()["status"] == "ok"


def _answers_expected(frame: str) -> int:
    """One answer per task in a valid array (one for a single object or an unreadable frame)."""
    try:
        tasks = json.loads(frame)
    except ValueError:
        return 1
    if isinstance(tasks, list) and 0 < len(tasks) <= 100:
        return len(tasks)
    return 1
