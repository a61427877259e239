"""The Runware server over real loopback sockets (REST and WebSocket) on the real tiny model.

Each test starts its own server (``serve`` fixture, 127.0.0.1 only) around the session captioner,
whose answers are deterministic (seed 7), so server answers are compared with in-process ones.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from support.images import data_uri
from support.servers import LiveServer, LoopbackHTTP, ModelHold, caption_task, poll, post, wait_until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from llava_edge import Captioner
from llava_edge.errors import ConflictTaskUUIDError, ServerConfigError, TaskNotFoundError
from llava_edge.server.settings import ServerSettings, is_loopback
from llava_edge.server.task_results import Outcome, TaskRegistry

KEY = "test-key-123"


@pytest.fixture
def png(make_image: Callable[..., bytes]) -> str:
    return data_uri(make_image(40, 30))


def expected(captioner: Captioner, task: dict[str, Any]) -> dict[str, Any]:
    """The in-process answer to the same task (the model is deterministic with seed 7)."""
    return captioner.run_task({**task, "taskUUID": str(uuid.uuid4())})


@contextmanager
def ws_session(server: LiveServer, key: str = KEY) -> Iterator[ClientConnection]:
    """An authenticated WebSocket to the server."""
    with connect(server.ws, max_size=None, open_timeout=10) as socket:
        socket.send(json.dumps([{"taskType": "authentication", "apiKey": key}]))
        reply = json.loads(socket.recv(timeout=10))
        assert reply["data"][0]["taskType"] == "authentication", reply
        yield socket


def receive(socket: ClientConnection, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    return [json.loads(socket.recv(timeout=max(0.1, deadline - time.monotonic()))) for _ in range(count)]


def block_worker(server: LiveServer, make_image: Callable[..., bytes]) -> tuple[str, ModelHold]:
    """Occupy the model worker with an async caption that runs until the returned hold is released."""
    hold = ModelHold(server)
    task = caption_task(data_uri(make_image(20, 20)), deliveryMethod="async")
    assert post(server, [task]).status_code == 200
    wait_until(lambda: server.service.health()["running"])
    return str(task["taskUUID"]), hold


# -- REST -----------------------------------------------------------------------------------------


def test_rest_sync_caption_matches_in_process(serve: Callable[..., LiveServer], captioner: Captioner, png: str) -> None:
    server = serve()
    task = caption_task(png, includeCost=True, prompt="What is shown?")
    response = post(server, [task])
    assert response.status_code == 200
    item = response.json()["data"][0]
    reference = expected(captioner, task)
    assert item["taskUUID"] == task["taskUUID"]
    assert item["taskType"] == "imageCaption"
    assert item["text"] == reference["text"] and item["text"]
    assert item["cost"] == reference["cost"] > 0
    assert "errors" not in response.json()


def test_rest_legacy_image_caption_shape(serve: Callable[..., LiveServer], captioner: Captioner, png: str) -> None:
    server = serve()
    task = {"taskType": "imageCaption", "taskUUID": str(uuid.uuid4()), "model": "runware:150@2", "inputImage": png}
    item = post(server, [task]).json()["data"][0]
    assert item["taskUUID"] == task["taskUUID"]
    assert item["text"] == expected(captioner, task)["text"]
    assert "cost" not in item


def test_rest_auth_bearer_or_authentication_task(serve: Callable[..., LiveServer], png: str) -> None:
    server = serve(api_key=KEY)
    missing = post(server, [{"taskType": "ping"}])
    assert missing.status_code == 401
    assert missing.json()["errors"][0] | {"message": ""} == {
        "code": "missingApiKey", "message": "", "parameter": "apiKey", "taskType": "authentication"}
    wrong = post(server, [{"taskType": "ping"}], key="nope")
    assert wrong.status_code == 401 and wrong.json()["errors"][0]["code"] == "invalidApiKey"
    assert post(server, [{"taskType": "ping"}], key=KEY).json() == {"data": [{"taskType": "ping", "pong": True}]}
    in_body = post(server, [{"taskType": "authentication", "apiKey": KEY}, {"taskType": "ping"}])
    assert in_body.status_code == 200 and in_body.json() == {"data": [{"taskType": "ping", "pong": True}]}
    wrong_in_body = post(server, [{"taskType": "authentication", "apiKey": "nope"}, caption_task(png)])
    assert wrong_in_body.status_code == 401


def test_rest_mixed_array_one_invalid_task(serve: Callable[..., LiveServer], captioner: Captioner, png: str) -> None:
    server = serve()
    good = [caption_task(png), caption_task(png, prompt="Colours?")]
    bad = caption_task(png, outputQuality=5)
    response = post(server, [good[0], bad, good[1]])
    assert response.status_code == 200
    body = response.json()
    assert [item["taskUUID"] for item in body["data"]] == [good[0]["taskUUID"], good[1]["taskUUID"]]
    assert body["data"][1]["text"] == expected(captioner, good[1])["text"]
    assert body["errors"] == [{"code": "invalidOutputQuality", "message": body["errors"][0]["message"],
                               "parameter": "outputQuality", "taskType": "caption", "taskUUID": bad["taskUUID"]}]


@pytest.mark.parametrize(
    ("tasks", "status", "code"),
    [
        ([{"taskType": "caption", "taskUUID": "not-a-uuid"}], 400, "invalidTaskUUID"),
        ([{"taskType": "videoInference", "taskUUID": str(uuid.uuid4())}], 400, "unsupportedTaskType"),
        ([], 400, "invalidRequest"),
        ("just text", 400, "invalidRequest"),
        ([{"taskType": "getResponse", "taskUUID": str(uuid.uuid4())}], 404, "taskFailedOrNotFound"),
    ],
)
def test_rest_errors_choose_status_by_type(
    serve: Callable[..., LiveServer], tasks: Any, status: int, code: str
) -> None:
    response = post(serve(), tasks)
    assert response.status_code == status
    assert response.json()["errors"][0]["code"] == code
    if isinstance(tasks, list) and tasks:
        assert response.json()["errors"][0]["taskUUID"] == tasks[0]["taskUUID"]


def test_rest_invalid_json_and_body_cap(serve: Callable[..., LiveServer], png: str) -> None:
    server = serve(max_body_bytes=4096)
    broken = httpx.post(f"{server.http}/v1", content=b"[{", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and broken.json()["errors"][0]["code"] == "invalidJson"
    big = post(server, [caption_task("A" * 10_000)])
    assert big.status_code == 413 and big.json()["errors"][0]["code"] == "payloadTooLarge"
    chunked = httpx.post(f"{server.http}/v1", content=iter([b"[" + b" " * 3000, b" " * 3000 + b"]"]),
                         headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413


def test_rest_echoes_lone_surrogates_safely(serve: Callable[..., LiveServer]) -> None:
    body = b'[{"taskType": "caption\\ud800", "taskUUID": "\\udfff"}, {"taskType": "ping"}]'
    response = httpx.post(f"{serve().http}/v1", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert response.json()["errors"][0] | {"message": ""} == {
        "code": "unsupportedTaskType", "message": "", "parameter": "taskType", "taskType": "caption\ud800",
        "taskUUID": "\udfff"}


def test_rest_root_path_also_answers(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    assert httpx.post(f"{server.http}/", json=[{"taskType": "ping"}]).json()["data"][0]["pong"] is True


def test_request_images_never_come_from_local_paths(
    serve: Callable[..., LiveServer], tmp_path: Any, make_image: Callable[..., bytes]
) -> None:
    path = tmp_path / "secret.png"
    path.write_bytes(make_image(16, 16))
    server = serve()
    response = post(server, [caption_task(str(path)), {"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()),
                                                       "image": str(path)}])
    assert response.status_code == 400
    assert [error["code"] for error in response.json()["errors"]] == ["invalidInputsImage", "invalidInputsImage"]


# -- imageUpload ----------------------------------------------------------------------------------


def test_image_upload_store_serve_and_caption_by_uuid(
    serve: Callable[..., LiveServer], captioner: Captioner, make_image: Callable[..., bytes]
) -> None:
    server = serve()
    picture = make_image(36, 24)
    upload = {"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": data_uri(picture)}
    item = post(server, [upload]).json()["data"][0]
    assert item["taskType"] == "imageUpload" and item["taskUUID"] == upload["taskUUID"]
    assert item["imageURL"] == f"{server.http}/images/{item['imageUUID']}.png"
    fetched = httpx.get(item["imageURL"])
    assert fetched.status_code == 200 and fetched.content == picture
    assert fetched.headers["content-type"] == "image/png"
    by_uuid = caption_task(item["imageUUID"])
    answer = post(server, [by_uuid]).json()["data"][0]
    assert answer["text"] == expected(captioner, caption_task(data_uri(picture)))["text"]
    assert httpx.get(f"{server.http}/images/{uuid.uuid4()}.png").status_code == 404
    assert httpx.get(f"{server.http}/images/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_image_upload_rejects_what_is_not_an_image(serve: Callable[..., LiveServer], captioner: Captioner) -> None:
    server = serve()
    before = set(captioner.image_store.root.glob("*")) if captioner.image_store.root.exists() else set()
    bad = {"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": "data:image/png;base64,aGVsbG8="}
    response = post(server, [bad])
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["code"] == "unsupportedImageFormat" and error["taskUUID"] == bad["taskUUID"]
    assert error["parameter"] == "image"
    after = set(captioner.image_store.root.glob("*")) if captioner.image_store.root.exists() else set()
    assert after == before


# -- async, getResponse, conflicts, queue ---------------------------------------------------------


def test_async_then_get_response(serve: Callable[..., LiveServer], captioner: Captioner, png: str) -> None:
    server = serve()
    task = caption_task(png, deliveryMethod="async", includeCost=True)
    ack = post(server, [task])
    assert ack.status_code == 200
    assert ack.json() == {"data": [{"taskType": "imageCaption", "taskUUID": task["taskUUID"]}]}
    done = poll(server, str(task["taskUUID"])).json()["data"][0]
    reference = expected(captioner, task)
    assert done == {"taskType": "imageCaption", "taskUUID": task["taskUUID"], "text": reference["text"],
                    "cost": reference["cost"], "status": "success"}


def test_get_response_reports_processing_then_failure(
    serve: Callable[..., LiveServer], make_image: Callable[..., bytes]
) -> None:
    server = serve()
    running, hold = block_worker(server, make_image)
    truncated = make_image(64, 48)[:120]  # its header is whole: it is refused only when the model decodes it
    failing = caption_task(data_uri(truncated), deliveryMethod="async")
    assert post(server, [failing]).status_code == 200
    for task_uuid in (running, failing["taskUUID"]):
        item = post(server, [{"taskType": "getResponse", "taskUUID": task_uuid}]).json()["data"][0]
        assert item == {"taskType": "imageCaption", "taskUUID": task_uuid, "status": "processing"}
    hold.release()
    assert poll(server, running).json()["data"][0]["text"]
    failed = poll(server, str(failing["taskUUID"]), until="error")
    assert failed.status_code == 400
    assert failed.json()["errors"][0] | {"message": ""} == {
        "code": "invalidInputsImage", "message": "", "parameter": "inputs.image", "taskType": "caption",
        "taskUUID": failing["taskUUID"], "status": "error"}


def test_conflict_task_uuid_while_live(
    serve: Callable[..., LiveServer], make_image: Callable[..., bytes], png: str
) -> None:
    server = serve()
    running, hold = block_worker(server, make_image)
    again = post(server, [caption_task(png, taskUUID=running)])
    assert again.status_code == 409
    assert again.json()["errors"][0] | {"message": ""} == {
        "code": "conflictTaskUUID", "message": "", "parameter": "taskUUID", "taskType": "caption",
        "taskUUID": running}
    hold.release()
    poll(server, running)
    assert post(server, [caption_task(png, taskUUID=running)]).status_code == 409  # its result is still kept


def test_queue_full_answers_busy_and_loses_nothing(
    serve: Callable[..., LiveServer], make_image: Callable[..., bytes], png: str
) -> None:
    server = serve(max_queue=2)
    running, hold = block_worker(server, make_image)
    queued = [caption_task(png, deliveryMethod="async") for _ in range(2)]
    assert post(server, queued).status_code == 200
    assert server.service.health()["queueDepth"] == 2
    refused = caption_task(png, deliveryMethod="async")  # the same class as the queued ones (async: background)
    busy = post(server, [refused])
    assert busy.status_code == 503 and busy.headers["retry-after"]
    assert busy.json()["errors"][0]["code"] == "serviceUnavailable"
    assert busy.json()["errors"][0]["taskUUID"] == refused["taskUUID"]
    health = httpx.get(f"{server.http}/health").json()
    assert health | {"liveTasks": 0, "keptResults": 0} == {
        "status": "ok", "model": server.service.captioner.model_name, "loaded": True, "queueDepth": 2, "queueLimit": 2,
        "queueDepths": {"interactive": 0, "background": 2},
        "running": True, "liveTasks": 0, "keptResults": 0, "pendingDeliveries": 0, "workerRestarts": 0,
        "lastLoadError": None}
    hold.release()
    for task_uuid in [running] + [task["taskUUID"] for task in queued]:
        assert poll(server, str(task_uuid)).json()["data"][0]["status"] == "success"
    assert post(server, [refused]).status_code == 200  # the refused UUID was not kept: it may be sent again


def test_event_loop_stays_responsive_while_the_model_is_busy(
    serve: Callable[..., LiveServer], make_image: Callable[..., bytes]
) -> None:
    server = serve()
    _, hold = block_worker(server, make_image)  # held until release(): answers below come meanwhile
    assert httpx.get(f"{server.http}/health", timeout=10).json()["running"] is True
    with ws_session(server, key="any") as socket:
        socket.send(json.dumps([{"taskType": "ping", "ping": True}]))
        assert receive(socket, 1, timeout=10) == [{"data": [{"taskType": "ping", "pong": True}]}]
    assert server.service.health()["running"] is True
    hold.release()


def test_health_and_openapi(serve: Callable[..., LiveServer], captioner: Captioner) -> None:
    server = serve()
    health = httpx.get(f"{server.http}/health").json()
    assert health["model"] == captioner.model_name and health["queueDepth"] == 0 and health["status"] == "ok"
    schema = httpx.get(f"{server.http}/openapi.json").json()
    operation = schema["paths"]["/v1"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["type"] == "array"
    assert {"200", "400", "401", "409", "413", "503"} <= set(operation["responses"])
    assert "/health" in schema["paths"]


# -- WebSocket ------------------------------------------------------------------------------------


def test_ws_handshake_ping_and_tasks_routed_by_uuid(
    serve: Callable[..., LiveServer], captioner: Captioner, png: str
) -> None:
    server = serve(api_key=KEY)
    tasks = [caption_task(png, prompt=f"Question {n}?", includeCost=True) for n in range(3)]
    with ws_session(server) as socket:
        socket.send(json.dumps([{"taskType": "ping", "ping": True}]))
        assert receive(socket, 1) == [{"data": [{"taskType": "ping", "pong": True}]}]
        socket.send(json.dumps(tasks))
        frames = receive(socket, 3)
    assert all(len(frame["data"]) == 1 for frame in frames)
    by_uuid = {frame["data"][0]["taskUUID"]: frame["data"][0] for frame in frames}
    assert set(by_uuid) == {task["taskUUID"] for task in tasks}
    for task in tasks:
        assert by_uuid[task["taskUUID"]]["text"] == expected(captioner, task)["text"]


def test_ws_mixed_array_answers_each_task_in_its_own_frame(serve: Callable[..., LiveServer], png: str) -> None:
    server = serve()
    good, bad = caption_task(png), caption_task(png, deliveryMethod="later")
    with ws_session(server, key="k") as socket:
        socket.send(json.dumps([bad, "not a task", good]))
        frames = receive(socket, 3)
    errors = [frame["errors"][0] for frame in frames if "errors" in frame]
    assert sorted((error["code"], error.get("taskUUID")) for error in errors) == sorted(
        [("invalidDeliveryMethod", bad["taskUUID"]), ("invalidTask", None)])
    [answer] = [frame["data"][0] for frame in frames if "data" in frame]
    assert answer["taskUUID"] == good["taskUUID"] and answer["text"]


def test_ws_auth_errors_carry_the_authentication_task_type(serve: Callable[..., LiveServer], png: str) -> None:
    server = serve(api_key=KEY)
    with connect(server.ws, open_timeout=10) as socket:
        early = caption_task(png)
        socket.send(json.dumps([early]))
        assert receive(socket, 1)[0]["errors"][0] | {"message": ""} == {
            "code": "missingApiKey", "message": "", "parameter": "apiKey", "taskType": "caption",
            "taskUUID": early["taskUUID"]}
        socket.send(json.dumps([{"taskType": "authentication", "apiKey": "wrong"}]))
        error = receive(socket, 1)[0]["errors"][0]
        assert (error["code"], error["taskType"], error["parameter"]) == ("invalidApiKey", "authentication", "apiKey")
        socket.send(json.dumps([{"taskType": "authentication", "apiKey": KEY,
                                 "connectionSessionUUID": str(uuid.uuid4())}]))
        session = receive(socket, 1)[0]["data"][0]
        assert session["taskType"] == "authentication" and uuid.UUID(session["connectionSessionUUID"])


def test_ws_async_and_get_response(serve: Callable[..., LiveServer], captioner: Captioner, png: str) -> None:
    server = serve()
    task = caption_task(png, deliveryMethod="async")
    with ws_session(server, key="anything") as socket:
        socket.send(json.dumps([task]))
        assert receive(socket, 1) == [{"data": [{"taskType": "imageCaption", "taskUUID": task["taskUUID"]}]}]
        deadline = time.monotonic() + 30
        item: dict[str, Any] = {}
        while item.get("status") != "success" and time.monotonic() < deadline:
            socket.send(json.dumps([{"taskType": "getResponse", "taskUUID": task["taskUUID"]}]))
            item = receive(socket, 1)[0]["data"][0]
    assert item["text"] == expected(captioner, task)["text"]


def test_ws_frame_cap_and_bad_json(serve: Callable[..., LiveServer]) -> None:
    server = serve(max_body_bytes=4096)
    with ws_session(server, key="k") as socket:
        socket.send("not json")
        assert receive(socket, 1)[0]["errors"][0]["code"] == "invalidJson"
        socket.send(json.dumps([caption_task("A" * 10_000)]))
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_ws_idle_connection_is_closed(serve: Callable[..., LiveServer]) -> None:
    server = serve(ws_idle_timeout=0.5)
    with ws_session(server, key="k") as socket, pytest.raises(ConnectionClosed):
        socket.recv(timeout=5)


def test_many_clients_at_once_lose_no_task(serve: Callable[..., LiveServer], captioner: Captioner, png: str) -> None:
    server = serve(api_key=KEY)
    results: dict[str, dict[str, Any]] = {}
    sent: list[dict[str, Any]] = []
    lock = threading.Lock()

    def ws_client(n: int) -> None:
        tasks = [caption_task(png, prompt=f"ws {n}.{k}") for k in range(3)]
        with lock:
            sent.extend(tasks)
        with ws_session(server) as socket:
            socket.send(json.dumps(tasks))
            for frame in receive(socket, len(tasks), timeout=90):
                with lock:
                    results[frame["data"][0]["taskUUID"]] = frame["data"][0]

    def rest_client(n: int) -> None:
        tasks = [caption_task(png, prompt=f"rest {n}.{k}", deliveryMethod="async" if k else "sync") for k in range(3)]
        with lock:
            sent.extend(tasks)
        body = post(server, tasks, key=KEY).json()
        for item in body["data"]:
            done = item if "text" in item else poll(server, item["taskUUID"], timeout=90, key=KEY).json()["data"][0]
            with lock:
                results[done["taskUUID"]] = done

    failures: list[BaseException] = []

    def guarded(client: Callable[[int], None], n: int) -> None:
        try:
            client(n)
        except BaseException as err:
            failures.append(err)

    threads = [threading.Thread(target=guarded, args=(ws_client, n)) for n in range(4)]
    threads += [threading.Thread(target=guarded, args=(rest_client, n)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    assert len(sent) == 18
    assert set(results) == {task["taskUUID"] for task in sent}
    sample = next(task for task in sent if task["prompt"] == "ws 2.1")
    assert results[sample["taskUUID"]]["text"] == expected(captioner, sample)["text"]


# -- settings and the registry (pure units) -------------------------------------------------------


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True),
                                                ("localhost", True), ("0.0.0.0", False), ("192.168.1.5", False),
                                                ("example.org", False)])
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_public_bind_requires_a_long_api_key_or_an_explicit_no_auth() -> None:
    with pytest.raises(ServerConfigError, match="--api-key"):
        ServerSettings(host="0.0.0.0").check()
    with pytest.raises(ServerConfigError, match="at least 16 characters"):
        ServerSettings(host="0.0.0.0", api_key="k").check()
    ServerSettings(host="0.0.0.0", api_key="k" * 16).check()
    ServerSettings(host="0.0.0.0", no_auth=True).check()
    ServerSettings(host="127.0.0.1", api_key="k").check()  # loopback: any key the operator likes
    with pytest.raises(ServerConfigError, match="not both"):
        ServerSettings(host="0.0.0.0", api_key="k" * 16, no_auth=True).check()
    with pytest.raises(ServerConfigError, match="max_queue"):
        ServerSettings(max_queue=0).check()


def test_registry_ttl_per_task_cap_and_conflicts() -> None:
    now = [1000.0]
    registry = TaskRegistry(max_kept=2, clock=lambda: now[0])
    registry.begin("a", 60)
    assert registry.lookup("a") is None
    with pytest.raises(ConflictTaskUUIDError):
        registry.begin("a", 60)
    registry.finish("a", Outcome({"text": "x"}))
    registry.begin("b", 3600)
    registry.finish("b", Outcome({"text": "y"}))
    now[0] += 61
    with pytest.raises(TaskNotFoundError):
        registry.lookup("a")
    registry.begin("a", 60)  # expired: the UUID is free again
    assert registry.lookup("b") == Outcome({"text": "y"})
    for name in ("c", "d"):
        registry.begin(name, 3600)
        registry.finish(name, Outcome({"text": name}))
    with pytest.raises(TaskNotFoundError):
        registry.lookup("b")  # beyond max_kept, the oldest finished result goes first
    assert registry.counts() == (1, 2)


def test_a_slow_image_url_never_holds_the_model(
    serve: Callable[..., LiveServer], loopback_http: LoopbackHTTP, make_image: Callable[..., bytes], png: str
) -> None:
    """The image is read before the task takes the model: captions behind a held URL run at once."""
    server = serve(allow_private_fetch=True)  # the loopback image host stands in for a public one
    loopback_http.image = make_image(20, 20)
    loopback_http.hold()
    slow = caption_task(f"{loopback_http.url}/slow.png", deliveryMethod="async")
    assert post(server, [slow]).status_code == 200
    loopback_http.wait_for(1)
    quick = post(server, [caption_task(png)])
    assert quick.status_code == 200 and quick.json()["data"][0]["text"]
    still = post(server, [{"taskType": "getResponse", "taskUUID": slow["taskUUID"]}]).json()["data"][0]
    assert still["status"] == "processing"  # its image host has not answered yet
    loopback_http.release()
    assert poll(server, str(slow["taskUUID"])).json()["data"][0]["text"]


def test_an_image_url_of_this_server_is_read_from_its_store(serve: Callable[..., LiveServer], png: str) -> None:
    """imageUpload, then caption the imageURL it answered: no fetch (the server's own address is private)."""
    server = serve()
    upload = post(server, [{"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": png}])
    image_url = upload.json()["data"][0]["imageURL"]
    assert image_url.startswith(f"{server.http}/images/")

    answer = post(server, [caption_task(image_url)])

    assert answer.status_code == 200, answer.text
    assert answer.json()["data"][0]["text"] == expected(server.service.captioner, caption_task(png))["text"]
