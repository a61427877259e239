"""The server under load, faults and hostile requests (issue 7, server side).

* Load: ``tests/support/load_client.py`` in its own process drives a ``llava-edge serve`` subprocess with many
  WebSocket and REST clients at once; every task is answered exactly once, the queue bound holds with
  ``serviceUnavailable`` answers, RSS stays bounded and ``/health`` keeps answering.
* Faults: a WebSocket client that vanishes mid-task; SIGTERM with tasks running, queued and in flight.
* Security: the fetch allow-list (image URLs, uploads, webhooks), http(s) only, traversal on ``/images``,
  binding and key checks.

Every server binds 127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import hmac
import http.client
import json
import logging
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from support.images import data_uri
from support.servers import LiveServer, LoopbackHTTP, ModelHold, ServeProcess, caption_task, poll, post, wait_until
from support.slow_prefill import slow_prefill_files
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from llava_edge import Captioner
from llava_edge.errors import ServerConfigError
from llava_edge.server.settings import ServerSettings, check_api_key, normalise_host
from llava_edge.server.work_options import PRIORITY_HEADER

pytestmark = pytest.mark.slow

LOAD_CLIENT = Path(__file__).parents[1] / "support" / "load_client.py"


@pytest.fixture
def png(make_image: Callable[..., bytes]) -> str:
    return data_uri(make_image(40, 30))


@pytest.fixture
def slow_host(make_image: Callable[..., bytes]) -> Iterator[LoopbackHTTP]:
    """An image host on 127.0.0.1 whose answers wait for ``release()``: a caption fetching from it holds the
    model worker."""
    host = LoopbackHTTP()
    host.server.handle_error = lambda request, address: None  # type: ignore[method-assign] (late answers to gone clients)
    host.image = make_image(20, 20)
    host.hold()
    yield host
    host.close()


class LogRecords(logging.Handler):
    """Records of the server's loggers at WARNING and above (uvicorn's do not propagate to caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_warnings() -> Iterator[LogRecords]:
    handler = LogRecords()
    loggers = [logging.getLogger(name) for name in ("llava_edge", "uvicorn", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


# -- load -----------------------------------------------------------------------------------------


def run_load(server: ServeProcess, *options: str) -> dict[str, Any]:
    """One run of the load generator in its own process (60 s deadline), answering its JSON summary."""
    command = [sys.executable, str(LOAD_CLIENT), server.http, *options, "--deadline", "60"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_load_many_clients_every_task_answered_once(serve_process: Callable[..., ServeProcess]) -> None:
    server = serve_process("--max-queue", "4")
    rss = psutil.Process(server.process.pid).memory_info
    clients = ("--ws-clients", "10", "--rest-clients", "6")
    warm_up = run_load(server, *clients, "--tasks", "4")
    assert warm_up["completed"] == warm_up["tasks"] == 64
    before = rss().rss
    runs = [run_load(server, *clients, "--tasks", "10") for _ in range(2)]
    after = rss().rss
    for run in runs:
        print(json.dumps(run))  # the measurements (shown with -s)
        every_task_answered_once = {
            "tasks": 160, "completed": 160, "timed_out": False, "errors": {}, "unrouted": 0, "gave_up": [],
            "unanswered_sends": [], "extra_answers": [], "without_result": [], "several_results": [],
            "busy_without_retry_after": 0,
        }
        assert {key: run[key] for key in every_task_answered_once} == every_task_answered_once, run
        assert run["busy"] > 0 and set(run["busy_codes"]) == {"serviceUnavailable"}, run  # the queue overflowed
        health = run["health"]
        # every GET answered; at least one per 10 s on average (hang guard: it GETs every 50 ms plus latency)
        assert health["failures"] == 0 and health["samples"] * 10 >= run["elapsed_s"], run
        assert health["queue_limit"] == 4 and health["max_queue_depth"] <= 2 * 4, run  # 4 a class, sync and async
    print(f"server RSS {before / 2**20:.1f} MiB after warm-up, {after / 2**20:.1f} MiB after 320 more tasks")
    assert after - before < 32 * 2**20  # measured: under 10 MiB (the first run settles), then flat
    assert httpx.get(f"{server.http}/health", timeout=10).json() | {"keptResults": 0} == {
        "status": "ok", "model": "synthetic-tiny", "loaded": True, "queueDepth": 0, "queueLimit": 4, "running": False,
        "queueDepths": {"interactive": 0, "background": 0},
        "liveTasks": 0, "keptResults": 0, "pendingDeliveries": 0, "workerRestarts": 0, "lastLoadError": None}
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0
    assert "Traceback" not in server.output and "ERROR" not in server.output


# -- faults ---------------------------------------------------------------------------------------


def test_websocket_client_vanishing_mid_task_harms_nothing(
    serve: Callable[..., LiveServer], png: str, server_warnings: LogRecords
) -> None:
    server = serve()
    hold = ModelHold(server)
    running = caption_task(png)  # sync: it holds the worker until release()
    queued, later = caption_task(png), caption_task(png, deliveryMethod="async")
    with connect(server.ws, open_timeout=10) as leaving:
        leaving.send(json.dumps([{"taskType": "authentication", "apiKey": "k"}]))
        leaving.recv(timeout=10)
        leaving.send(json.dumps([running, queued, later]))
        ack = json.loads(leaving.recv(timeout=10))["data"][0]
        assert ack == {"taskType": "imageCaption", "taskUUID": later["taskUUID"]}
        wait_until(lambda: server.service.health()["running"])
        leaving.socket.shutdown(socket.SHUT_RDWR)  # gone without a close handshake, two answers outstanding
    with connect(server.ws, open_timeout=10) as staying:
        staying.send(json.dumps([{"taskType": "authentication", "apiKey": "k"}]))
        staying.recv(timeout=10)
        staying.send(json.dumps([{"taskType": "ping", "ping": True}]))
        assert json.loads(staying.recv(timeout=5)) == {"data": [{"taskType": "ping", "pong": True}]}
        other = caption_task(png)
        staying.send(json.dumps([other]))
        hold.release()
        answer = json.loads(staying.recv(timeout=30))["data"][0]
    assert answer["taskUUID"] == other["taskUUID"] and answer["text"]
    # nobody waits for the sync tasks any more: stopped (the running one at its next step), and kept as such
    for task in (running, queued):
        failed = poll(server, str(task["taskUUID"]), until="error").json()["errors"][0]
        assert failed["code"] == "serviceUnavailable"
        assert "stopped" in failed["message"] or "left" in failed["message"]
    # an async task's result is still wanted (the SDK asks getResponse after reconnecting): it ran
    assert poll(server, str(later["taskUUID"])).json()["data"][0]["status"] == "success"
    health = server.service.health()
    assert (health["queueDepth"], health["running"], health["liveTasks"]) == (0, False, 0)
    assert [record.getMessage() for record in server_warnings.records] == []


def hooked(image: str, receiver: LoopbackHTTP, name: str, **fields: object) -> dict[str, object]:
    return caption_task(image, deliveryMethod="async", webhookURL=f"{receiver.url}/{name}", **fields)


def post_in_thread(url: str, tasks: list[dict[str, object]]) -> tuple[threading.Thread, list[httpx.Response]]:
    """A sync REST request left waiting while the test goes on, marked background so that it waits its turn behind
    the background tasks before it (an interactive one would run while the long caption steps aside)."""
    answers: list[httpx.Response] = []
    headers = {PRIORITY_HEADER: "background"}
    thread = threading.Thread(target=lambda: answers.append(httpx.post(url, json=tasks, headers=headers, timeout=60)))
    thread.start()
    return thread, answers


def delivered(receiver: LoopbackHTTP, count: int) -> dict[str, dict[str, Any]]:
    """The first ``count`` webhook bodies by path."""
    return {path.lstrip("/"): json.loads(body) for _, path, body in receiver.wait_for(count, timeout=20)}


def long_caption(image: str, receiver: LoopbackHTTP, name: str) -> dict[str, object]:
    """A caption that runs for seconds on the tiny model (greedy: no EOS within 4,096 tokens; needs --n-ctx 8192)."""
    return hooked(image, receiver, name, maxTokens=4096, temperature=0)


def test_sigterm_finishes_accepted_tasks_then_exits_0(
    serve_process: Callable[..., ServeProcess], slow_host: LoopbackHTTP, loopback_http: LoopbackHTTP, png: str
) -> None:
    server = serve_process("--shutdown-timeout", "15", "--allow-fetch-host", "127.0.0.1", "--n-ctx", "8192")
    refused = httpx.post(f"{server.http}/v1", json=[caption_task(slow_host.url.replace("127.0.0.1", "localhost"))])
    assert refused.status_code == 400 and "not in the allowed hosts" in refused.text  # the CLI option is wired
    assert httpx.post(f"{server.http}/v1", json=[long_caption(png, loopback_http, "running")]).status_code == 200
    wait_until(lambda: _health(server) == (True, 0))  # the long caption holds the model before the others come
    tasks = [hooked(f"{slow_host.url}/held.png", loopback_http, "reading")]
    tasks += [hooked(png, loopback_http, f"queued{n}") for n in range(3)]
    assert httpx.post(f"{server.http}/v1", json=tasks).status_code == 200
    waiting, answers = post_in_thread(f"{server.http}/v1", [sync := caption_task(png)])
    with connect(server.ws, open_timeout=10) as socket_:
        socket_.send(json.dumps([{"taskType": "authentication", "apiKey": "k"}]))
        socket_.recv(timeout=10)
        wait_until(lambda: _health(server) == (True, 5))  # one running, one reading its image, four queued
        server.process.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            socket_.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012  # "service restart": reconnect later
    wait_until(lambda: _refuses_connections(server.http), timeout=5)
    slow_host.release()
    assert server.process.wait(300) == 0  # hang guard; the drain itself is asserted below
    waiting.join(60)  # hang guard
    assert answers[0].status_code == 200 and answers[0].json()["data"][0]["taskUUID"] == sync["taskUUID"]
    results = delivered(loopback_http, 5)
    assert sorted(results) == ["queued0", "queued1", "queued2", "reading", "running"]
    assert all(item["status"] == "success" and item["text"] for item in results.values())
    assert "Traceback" not in server.output


def test_sigterm_deadline_fails_unfinished_tasks_to_their_webhooks(
    serve_process: Callable[..., ServeProcess], slow_host: LoopbackHTTP, loopback_http: LoopbackHTTP, png: str
) -> None:
    files = slow_prefill_files()  # its 4,096-token answer lasts many seconds: surely still running at the deadline
    server = serve_process("--shutdown-timeout", "1", "--allow-fetch-host", "127.0.0.1", "--n-ctx", "8192",
                           model=("--model-path", str(files.model_path), "--mmproj-path", str(files.mmproj_path)))
    assert httpx.post(f"{server.http}/v1", json=[long_caption(png, loopback_http, "running")]).status_code == 200
    wait_until(lambda: _health(server) == (True, 0))  # the long caption holds the model before the others come
    tasks = [hooked(f"{slow_host.url}/held.png", loopback_http, "reading")]
    tasks += [hooked(png, loopback_http, f"queued{n}") for n in range(2)]
    assert httpx.post(f"{server.http}/v1", json=tasks).status_code == 200
    waiting, answers = post_in_thread(f"{server.http}/v1", [sync := caption_task(png)])
    wait_until(lambda: _health(server) == (True, 4))
    server.process.send_signal(signal.SIGTERM)  # the held fetch never ends: only the deadline ends the process
    assert server.process.wait(60) == 0  # hang guard, 10x the 1 s deadline + 5 s delivery flush
    waiting.join(60)  # hang guard
    assert answers[0].status_code == 503 and answers[0].headers["retry-after"]
    assert answers[0].json()["errors"][0] | {"message": ""} == {
        "code": "serviceUnavailable", "message": "", "taskType": "caption", "taskUUID": sync["taskUUID"]}
    results = delivered(loopback_http, 4)
    assert sorted(results) == ["queued0", "queued1", "reading", "running"]
    for item in results.values():
        assert item["status"] == "error" and item["code"] == "serviceUnavailable"
    assert "still running" in results["running"]["message"] and "had not started" in results["reading"]["message"]
    assert "5 accepted caption tasks did not finish by the deadline" in server.output


def _health(server: ServeProcess) -> tuple[bool, int]:
    health = httpx.get(f"{server.http}/health").json()
    return health["running"], health["queueDepth"]


def test_sigterm_gives_a_hanging_webhook_5_s_then_exits(
    serve_process: Callable[..., ServeProcess], slow_host: LoopbackHTTP, png: str
) -> None:
    server = serve_process("--shutdown-timeout", "1", "--allow-private-fetch")  # loopback stands in for public
    task = caption_task(png, webhookURL=f"{slow_host.url}/hook")  # sync: answered, then POSTed to a host that hangs
    assert httpx.post(f"{server.http}/v1", json=[task]).json()["data"][0]["text"]
    assert slow_host.wait_for(1)[0][:2] == ("POST", "/hook")
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 0  # hang guard; the log line below shows the delivery was abandoned
    assert time.monotonic() - started > 4.5, server.output  # it did give the delivery the 5 s flush bound
    assert re.search(r"server stopping: (1 result deliveries dropped, 0|0 result deliveries dropped, 1) abandoned",
                     server.output)  # waiting for a retry, or its attempt still hanging


def test_second_sigterm_stops_waiting(
    serve_process: Callable[..., ServeProcess], slow_host: LoopbackHTTP, png: str
) -> None:
    server = serve_process("--shutdown-timeout", "60", "--allow-private-fetch")  # loopback stands in for public
    tasks = [
        caption_task(f"{slow_host.url}/held.png", deliveryMethod="async"),
        caption_task(png, deliveryMethod="async"),
    ]
    assert httpx.post(f"{server.http}/v1", json=tasks).status_code == 200
    wait_until(lambda: httpx.get(f"{server.http}/health").json()["queueDepth"] == 1)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert server.process.poll() is None  # draining: it would wait up to 60 s for the held caption
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(20) == 0, server.output  # hang guard: the first SIGTERM alone waits 60 s


def test_a_caption_still_running_at_the_deadline_is_cancelled(
    serve_process: Callable[..., ServeProcess], png: str
) -> None:
    """A long answer is still being generated inside llama.cpp when the deadline passes: the server cancels
    it, so the model is idle and closed before the process exits (it does not abandon a running model)."""
    server = serve_process("--shutdown-timeout", "0.3", "--n-ctx", "8192")
    task = caption_task(png, deliveryMethod="async", maxTokens=4096, temperature=0)  # greedy: no EOS for ~4 s
    assert httpx.post(f"{server.http}/v1", json=[task]).status_code == 200
    wait_until(lambda: httpx.get(f"{server.http}/health").json().get("running") is True)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 0, server.output  # hang guard; the log lines below show the cancel
    assert "did not finish by the deadline" in server.output, server.output
    assert "still running at the shutdown deadline" not in server.output


def _refuses_connections(url: str) -> bool:
    try:
        httpx.get(f"{url}/health", timeout=1)
    except httpx.TransportError:
        return True
    return False


# -- security: where the server may connect -------------------------------------------------------


def test_fetch_allow_list_covers_image_urls_uploads_and_webhooks(
    serve: Callable[..., LiveServer], loopback_http: LoopbackHTTP, make_image: Callable[..., bytes],
    server_warnings: LogRecords,
) -> None:
    server = serve(fetch_hosts=frozenset({"127.0.0.1"}))
    loopback_http.image = make_image(24, 24)
    other_name = loopback_http.url.replace("127.0.0.1", "localhost")  # same host, another name: not listed
    allowed = caption_task(f"{loopback_http.url}/ok.png", webhookURL=f"{loopback_http.url}/hook")
    assert post(server, [allowed]).json()["data"][0]["text"]
    assert [(method, path) for method, path, _ in loopback_http.wait_for(2)] == [("GET", "/ok.png"), ("POST", "/hook")]
    blocked = [caption_task(f"{other_name}/no.png"),
               {"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": f"{other_name}/no.png"}]
    response = post(server, blocked)
    assert response.status_code == 400
    assert [error["code"] for error in response.json()["errors"]] == ["invalidInputsImage", "invalidInputsImage"]
    assert all("'localhost' is not in the allowed hosts" in error["message"] for error in response.json()["errors"])
    hook_elsewhere = caption_task(data_uri(make_image()), webhookURL=f"{other_name}/hook?token=t0ken",
                                  uploadEndpoint=f"{other_name}/put")
    assert post(server, [hook_elsewhere]).json()["data"][0]["text"]  # a refused webhook never fails the task
    wait_until(lambda: len(server_warnings.records) >= 2)
    time.sleep(0.2)
    assert len(loopback_http.requests) == 2  # nothing reached the host under the other name
    messages = [record.getMessage() for record in server_warnings.records]
    assert all("refused" in message and "not in the allowed hosts" in message for message in messages)
    assert not any("t0ken" in message for message in messages)
    assert server.service.deliverer.pending == 0


def test_no_fetch_contacts_no_host_but_inline_images_and_uploads_work(
    serve: Callable[..., LiveServer], loopback_http: LoopbackHTTP, make_image: Callable[..., bytes],
    captioner: Captioner,
) -> None:
    server = serve(fetch_hosts=frozenset())
    loopback_http.image = make_image(24, 24)
    response = post(server, [caption_task(f"{loopback_http.url}/a.png"), caption_task(data_uri(make_image()),
                                                                                       webhookURL=f"{loopback_http.url}/h")])
    assert response.status_code == 200
    assert response.json()["errors"][0]["code"] == "invalidInputsImage" and response.json()["data"][0]["text"]
    upload = {"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": data_uri(make_image(30, 20))}
    stored = post(server, [upload]).json()["data"][0]["imageUUID"]
    assert post(server, [caption_task(stored)]).json()["data"][0]["text"]
    time.sleep(0.3)
    assert loopback_http.requests == []
    assert captioner.image_limits.transfer.allowed_hosts is None  # the server limited its own view only


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x.png", "gopher://127.0.0.1:70/x",
                                 "dict://127.0.0.1:11211/stat", "//127.0.0.1/x.png", "http:///x.png"])
def test_only_http_urls_are_fetched_or_called(serve: Callable[..., LiveServer], url: str, png: str) -> None:
    server = serve()
    tasks = [caption_task(url), {"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": url},
             caption_task(png, webhookURL=url), caption_task(png, uploadEndpoint=url)]
    response = post(server, tasks)
    assert response.status_code == 400
    codes = [error["code"] for error in response.json()["errors"]]
    assert codes == ["invalidInputsImage", "invalidInputsImage", "invalidWebhookURL", "invalidUploadEndpoint"]


@pytest.mark.parametrize(("text", "host"), [("Example.COM", "example.com"), (" cdn.local ", "cdn.local"),
                                            ("[::1]", "::1"), ("192.168.1.20", "192.168.1.20"), ("my_host", "my_host")])
def test_fetch_hosts_are_normalised(text: str, host: str) -> None:
    assert normalise_host(text) == host
    ServerSettings(fetch_hosts=frozenset({host})).check()


@pytest.mark.parametrize("text", ["http://example.com", "example.com:8080", "example.com/path", "*.example.com",
                                  "", "exa mple.com", "-bad.com", "a..b"])
def test_fetch_hosts_must_be_bare_hosts(text: str) -> None:
    with pytest.raises(ServerConfigError, match="not a host name"):
        normalise_host(text)


def test_serve_refuses_bad_fetch_options_before_loading_a_model() -> None:
    serve = [sys.executable, "-m", "llava_edge", "serve", "--model", "synthetic-tiny"]
    both = subprocess.run([*serve, "--no-fetch", "--allow-fetch-host", "a.b"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert both.returncode == 2 and "--no-fetch forbids every host" in both.stderr
    url = subprocess.run([*serve, "--allow-fetch-host", "http://a.b"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert url.returncode == 1 and "not a host name" in url.stderr and "invalidServerConfig" in url.stderr


# -- security: files and keys ---------------------------------------------------------------------


def raw_get(server: LiveServer, target: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written (no client-side normalisation of ``..`` or escapes)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", f"127.0.0.1:{server.port}")
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_image_paths_never_leave_the_store(
    serve: Callable[..., LiveServer], captioner: Captioner, make_image: Callable[..., bytes]
) -> None:
    server = serve()
    secret = captioner.image_store.root.parent / "secret.png"
    secret.write_bytes(make_image(8, 8) + b"SECRET-MARKER")
    upload = {"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": data_uri(make_image(12, 12))}
    stored = post(server, [upload]).json()["data"][0]["imageUUID"]
    assert raw_get(server, f"/images/{stored}.png")[0] == 200
    targets = [
        "/images/../secret.png", "/images/..%2Fsecret.png", "/images/%2e%2e%2fsecret.png", "/images/%2E%2E/secret.png",
        "/images/%252e%252e%252fsecret.png", "/images/..%5Csecret.png", "/images/....//secret.png",
        "/images/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/images/../../../../etc/passwd",
        "/images//etc/passwd", "/images/%2Fetc%2Fpasswd", "/images/secret.png", "/images/..",
        f"/images/{stored}.png%00.txt", f"/images/{stored}.png%2F..%2F..%2Fsecret.png", f"/images/{stored.upper()}.png",
        f"/images/{stored}.PNG", f"/images/{stored}.jpg", f"/images/{stored.replace('-', '')}.png",
        f"/images/{{{stored}}}.png", f"/images/{stored}..png", f"/images/{stored}", "/images/%00", "/images/*.png",
        "/images/" + "a" * 4000 + ".png", f"/images/{stored}.png/../../secret.png",
    ]
    for target in targets:
        status, body = raw_get(server, target)
        assert status in (400, 404), (target, status)
        assert b"SECRET-MARKER" not in body and b"root:" not in body, target
    secret.unlink()


def test_uploads_are_named_by_the_server(serve: Callable[..., LiveServer], captioner: Captioner,
                                         make_image: Callable[..., bytes]) -> None:
    server = serve()
    root = captioner.image_store.root
    before = set(root.iterdir()) if root.exists() else set()
    task_uuid = str(uuid.uuid4())
    named = {"taskType": "imageUpload", "taskUUID": task_uuid, "image": data_uri(make_image(10, 10)),
             "fileName": "../../evil.png"}
    assert post(server, [named]).json()["errors"][0]["code"] == "unsupportedParameter"
    item = post(server, [{k: v for k, v in named.items() if k != "fileName"}]).json()["data"][0]
    created = set(root.iterdir()) - before
    assert [path.name for path in created] == [f"{item['imageUUID']}.png"]
    assert item["imageUUID"] != task_uuid and item["imageURL"].endswith(f"/images/{item['imageUUID']}.png")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.5", "127.0.0.1.nip.io", "localhost.example.com",
                                  "::ffff:127.0.0.1"])
def test_every_non_loopback_bind_needs_a_key(host: str) -> None:
    with pytest.raises(ServerConfigError, match="--api-key"):
        ServerSettings(host=host).check()
    ServerSettings(host=host, api_key="k" * 16).check()


def test_keys_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr("llava_edge.server.settings.hmac.compare_digest", spy)
    settings = ServerSettings(api_key="sésame")
    check_api_key(settings, "sésame")
    with pytest.raises(Exception, match="Invalid API key"):
        check_api_key(settings, "sesame")
    assert compared == [("sésame".encode(), "sésame".encode()), (b"sesame", "sésame".encode())]
