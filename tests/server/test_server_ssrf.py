"""The server's fetch policy over real loopback sockets (no SSRF by default): no request makes the server
contact a non-public address, through caption image URLs, imageUpload, webhookURL or uploadEndpoint, in
any spelling, unless the operator allows it (``--allow-fetch-host``, ``--allow-private-fetch``). Redirects
are re-checked (and never followed for deliveries), errors carry no remote bytes, and one deadline covers
a fetch or a delivery attempt. A tripwire listener on loopback proves that refused requests connect nowhere.
"""

from __future__ import annotations

import base64
import copy
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from click.testing import CliRunner
from support.images import data_uri
from support.net_fakes import FakeDNS, RawHTTP, Tripwire, reply, trickle
from support.servers import LiveServer, LoopbackHTTP, caption_task, post

from llava_edge import Captioner
from llava_edge.outbound import TransferLimits
from llava_edge.server.settings import ServerSettings

FORMS = {
    "loopback": "127.0.0.1:{port}", "localhost": "localhost:{port}", "decimal": "2130706433:{port}",
    "hex": "0x7f000001:{port}", "octal": "0177.0.0.1:{port}", "short": "127.1:{port}",
    "ipv4-mapped": "[::ffff:127.0.0.1]:{port}", "ipv4-compatible": "[::127.0.0.1]:{port}",
    "unspecified": "0.0.0.0:{port}", "ipv6-unspecified": "[::]:{port6}", "ipv6-loopback": "[::1]:{port6}",
    "rfc1918-10": "10.0.0.1", "rfc1918-172": "172.16.0.1:{port}", "rfc1918-192": "192.168.1.1",
    "metadata": "169.254.169.254", "cgnat": "100.64.0.1", "ietf": "192.0.0.1", "benchmarking": "198.18.0.1",
    "multicast": "224.0.0.1", "reserved": "240.0.0.1", "ipv6-ula": "[fc00::1]", "ipv6-link-local": "[fe80::1]",
    "nat64-private": "[64:ff9b::a00:1]",
}


class DeliveryLog(logging.Handler):
    """Warnings of the delivery logger, with a wait for the ones that mention some text."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.arrived = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.arrived:
            self.messages.append(record.getMessage())
            self.arrived.notify_all()

    def wait_for(self, text: str, count: int, timeout: float = 5.0) -> list[str]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.matching(text)) >= count, timeout)
            return self.matching(text)

    def matching(self, text: str) -> list[str]:
        return [message for message in self.messages if text in message]


@pytest.fixture
def deliveries() -> Iterator[DeliveryLog]:
    handler = DeliveryLog()
    logger = logging.getLogger("llava_edge.server.delivery")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture(scope="module")
def default_server(captioner: Captioner) -> Iterator[LiveServer]:
    """One server with the default settings for the module's many refusals."""
    server = LiveServer(captioner, ServerSettings())
    yield server
    server.stop()


@pytest.fixture
def png(make_image: Callable[..., bytes]) -> str:
    return data_uri(make_image(32, 24))


def upload_task(image: str) -> dict[str, object]:
    return {"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": image}


def served_with_transfer(captioner: Captioner, settings: ServerSettings, **transfer: Any) -> LiveServer:
    """A live server whose image fetches start from these transfer limits (the session captioner is shared,
    so a shallow copy carries them), before the settings' policy is applied."""
    view = copy.copy(captioner)
    limits = captioner.image_limits
    view.image_limits = replace(limits, transfer=replace(limits.transfer, **transfer))
    return LiveServer(view, settings)


# -- refused by default ---------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
def test_non_public_addresses_are_refused_for_every_url_a_request_names(
    form: str, default_server: LiveServer, tripwire: Tripwire, deliveries: DeliveryLog, png: str
) -> None:
    base = "http://" + FORMS[form].format(port=tripwire.port, port6=tripwire.port6 or tripwire.port)
    tag = uuid.uuid4().hex
    tasks = [caption_task(f"{base}/{tag}/a.png"), upload_task(f"{base}/{tag}/b.png"),
             caption_task(png, webhookURL=f"{base}/{tag}/hook?token=t0ken", uploadEndpoint=f"{base}/{tag}/put")]
    answer = post(default_server, tasks).json()
    assert [error["code"] for error in answer["errors"]] == ["invalidInputsImage", "invalidInputsImage"]
    for error in answer["errors"]:
        assert "a non-public address" in error["message"], error["message"]
        assert "--allow-fetch-host" in error["message"] and "--allow-private-fetch" in error["message"]
    assert answer["data"][0]["text"]  # a refused webhook or uploadEndpoint never fails the caption
    refused = deliveries.wait_for(f"/{tag}/", 2)
    assert sorted(message.split()[0] for message in refused) == ["POST", "PUT"]
    assert all("non-public address" in message and "t0ken" not in message for message in refused)
    assert tripwire.connections == 0


def test_public_names_that_resolve_to_private_addresses_are_refused(
    default_server: LiveServer, tripwire: Tripwire, deliveries: DeliveryLog, png: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dns = FakeDNS()
    dns.add("images.example", ["127.0.0.1"])
    dns.add("cdn.example", ["8.8.8.8", "10.1.2.3"])
    dns.add("hooks.example", ["::1", "127.0.0.1"])
    monkeypatch.setattr(socket, "getaddrinfo", dns.getaddrinfo)
    port = tripwire.port
    tasks = [caption_task(f"http://images.example:{port}/a.png"), upload_task(f"http://cdn.example:{port}/b.png"),
             caption_task(png, webhookURL=f"http://hooks.example:{port}/hook",
                          uploadEndpoint=f"http://images.example:{port}/put")]
    answer = post(default_server, tasks).json()
    messages = [error["message"] for error in answer["errors"]]
    assert "host 'images.example' resolves to a non-public address (loopback)" in messages[0]
    assert "host 'cdn.example' resolves to a non-public address (private)" in messages[1]
    assert len(deliveries.wait_for("resolves to a non-public address", 2)) == 2
    assert tripwire.connections == 0


def test_a_redirect_from_an_allowed_host_to_another_is_refused(
    serve: Callable[..., LiveServer], captioner: Captioner, tripwire: Tripwire,
    raw_http: Callable[..., RawHTTP], png: str,
) -> None:
    targets = [f"http://localhost:{tripwire.port}/x.png", f"http://2130706433:{tripwire.port}/x.png",
               f"http://[::ffff:127.0.0.1]:{tripwire.port}/x.png", "http://169.254.169.254/latest/meta-data/"]
    hosts = [raw_http(reply("302 Found", {"Location": target})) for target in targets]
    image = raw_http(reply("200 OK", {"Content-Type": "image/png"}, base64.b64decode(png.split(",")[1])))
    tasks = [caption_task(f"{host.url}/start") for host in hosts]
    listed = serve(fetch_hosts=frozenset({"127.0.0.1"}))  # the operator's list: every other name is refused
    errors = post(listed, tasks).json()["errors"]
    assert len(errors) == len(tasks)
    for error in errors:
        assert "redirect refused: it leads to a host that is not in the allowed hosts" in error["message"]
    exempt = served_with_transfer(captioner, ServerSettings(), private_hosts=frozenset({"127.0.0.1"}))
    try:  # no list; 127.0.0.1 exempt from the address policy: each hop's address is checked
        assert post(exempt, [caption_task(f"{image.url}/a.png")]).json()["data"][0]["text"]
        errors = post(exempt, tasks).json()["errors"]
        assert len(errors) == len(tasks)
        for error in errors:
            assert "redirect refused: it leads to a non-public address" in error["message"], error["message"]
            assert str(tripwire.port) not in error["message"] and "localhost" not in error["message"]
    finally:
        exempt.stop()
    assert tripwire.connections == 0


def test_webhooks_and_upload_endpoints_never_follow_redirects(
    serve: Callable[..., LiveServer], tripwire: Tripwire, raw_http: Callable[..., RawHTTP],
    deliveries: DeliveryLog, png: str,
) -> None:
    server = serve(fetch_hosts=frozenset({"127.0.0.1"}), delivery_attempts=3, delivery_backoff=0.05)
    receiver = raw_http(reply("307 Temporary Redirect", {"Location": f"http://127.0.0.1:{tripwire.port}/steal"}))
    task = caption_task(png, webhookURL=f"{receiver.url}/hook", uploadEndpoint=f"{receiver.url}/put")
    assert post(server, [task]).json()["data"][0]["text"]
    assert len(deliveries.wait_for("redirects are not followed", 2)) == 2
    time.sleep(0.3)  # no retry follows either
    assert sorted(head.split(b" ")[0] for head in receiver.heads) == [b"POST", b"PUT"]
    assert tripwire.connections == 0


# -- what errors say -------------------------------------------------------------------------------------


def test_errors_carry_no_remote_bytes(
    serve: Callable[..., LiveServer], raw_http: Callable[..., RawHTTP], deliveries: DeliveryLog, png: str
) -> None:
    server = serve(allow_private_fetch=True, delivery_attempts=1)
    answers = [reply("500 SECRET reason", {"X-Secret": "SECRET"}, b"SECRET body"),
               lambda conn, head: conn.sendall(b"SSH-2.0-OpenSSH_SECRET\r\n"),
               reply("302 Found", {"Location": "ftp://SECRET.example/x.png"})]
    urls = [f"{raw_http(answer).url}/a.png" for answer in answers]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        urls.append(f"http://127.0.0.1:{probe.getsockname()[1]}/a.png")  # nothing listens: no errno comes back
    hook = raw_http(reply("503 SECRET", {}, b"SECRET"))
    tasks = [caption_task(url) for url in urls] + [caption_task(png, webhookURL=f"{hook.url}/hook")]
    answer = post(server, tasks).json()
    messages = [error["message"] for error in answer["errors"]]
    assert len(messages) == 4 and "HTTP 500" in messages[0] and "redirect refused" in messages[2]
    assert "could not connect to '127.0.0.1'" in messages[3]
    logged = deliveries.wait_for("HTTP 503", 1)
    for message in messages + logged:
        assert "SECRET" not in message and "Errno" not in message and "refused]" not in message, message


# -- the operator's opt-ins ------------------------------------------------------------------------------


def test_allow_fetch_host_allows_that_host_even_when_private(
    serve: Callable[..., LiveServer], loopback_http: LoopbackHTTP, make_image: Callable[..., bytes], png: str
) -> None:
    server = serve(fetch_hosts=frozenset({"127.0.0.1"}))
    loopback_http.image = make_image(24, 24)
    tasks = [caption_task(f"{loopback_http.url}/a.png", webhookURL=f"{loopback_http.url}/hook",
                          uploadEndpoint=f"{loopback_http.url}/put"), upload_task(f"{loopback_http.url}/b.png")]
    answer = post(server, tasks).json()
    assert not answer.get("errors") and answer["data"][0]["text"] and answer["data"][1]["imageUUID"]
    requests = loopback_http.wait_for(4)
    assert sorted((method, path) for method, path, _ in requests) == [
        ("GET", "/a.png"), ("GET", "/b.png"), ("POST", "/hook"), ("PUT", "/put")]


def test_allow_private_fetch_allows_private_names_and_addresses(
    serve: Callable[..., LiveServer], loopback_http: LoopbackHTTP, make_image: Callable[..., bytes]
) -> None:
    server = serve(allow_private_fetch=True)
    loopback_http.image = make_image(24, 24)
    by_name = loopback_http.url.replace("127.0.0.1", "localhost")
    answer = post(server, [caption_task(f"{by_name}/a.png", webhookURL=f"{loopback_http.url}/hook")]).json()
    assert answer["data"][0]["text"]
    assert sorted(path for _, path, _ in loopback_http.wait_for(2)) == ["/a.png", "/hook"]


def test_the_cli_flag_reaches_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from llava_edge import cli
    from llava_edge.command_options import ModelLoad
    from llava_edge.server import app

    seen: list[ServerSettings] = []
    monkeypatch.setattr(ModelLoad, "load", lambda self: type("Stub", (), {"model_name": "stub",
                                                                         "close": lambda self: None})())
    monkeypatch.setattr(app, "run_server", lambda captioner, settings: seen.append(settings) or True)
    for arguments, private in ((["serve"], False), (["serve", "--allow-private-fetch"], True)):
        result = CliRunner().invoke(cli.main, arguments)
        assert result.exit_code == 0, result.output
        assert seen[-1].allow_private_fetch is private
        assert seen[-1].outbound(TransferLimits()).allow_private is private


# -- one deadline ---------------------------------------------------------------------------------------


def test_a_server_trickling_header_bytes_fails_at_the_deadline(
    serve: Callable[..., LiveServer], captioner: Captioner, raw_http: Callable[..., RawHTTP],
    deliveries: DeliveryLog, png: str,
) -> None:
    slow = raw_http(trickle(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nX-Slow: ", every=0.05, limit=60))
    server = served_with_transfer(captioner, ServerSettings(allow_private_fetch=True), timeout=5, deadline=1.0)
    try:
        started = time.monotonic()
        error = post(server, [caption_task(f"{slow.url}/a.png")]).json()["errors"][0]
        assert "longer than 1 s" in error["message"] and time.monotonic() - started < 10 * 1.0  # hang guard
    finally:
        server.stop()
    hooked = serve(allow_private_fetch=True, delivery_attempts=1,
                   delivery_limits=TransferLimits(timeout=5, deadline=1.0))
    assert post(hooked, [caption_task(png, webhookURL=f"{slow.url}/hook")]).json()["data"][0]["text"]
    assert deliveries.wait_for("longer than 1 s", 1)
    assert len(slow.wait_closed(2, timeout=10 * 1.0)) == 2  # both connections were cut (the trickle runs 60 s)
