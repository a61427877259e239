"""Outbound HTTP (``llava_edge.outbound``): the address classifier, the refusal of non-public addresses
before any connection, redirects, one deadline over everything, TLS on the URL's name, and messages that
carry no remote bytes. Every server is on loopback; names are faked with a patched ``socket.getaddrinfo``."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from support.net_fakes import FakeDNS, RawHTTP, Tripwire, reply, trickle

from llava_edge import outbound
from llava_edge.host.tls import tls_context
from llava_edge.outbound import (
    RefusedAddressError,
    TransferError,
    TransferLimits,
    address_class,
    check_url,
    fetch_bytes,
    send_json,
)

STRICT = TransferLimits(allow_private=False, timeout=2, deadline=3)
"""The server's policy: no private addresses."""


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    fake = FakeDNS()
    monkeypatch.setattr(socket, "getaddrinfo", fake.getaddrinfo)
    return fake


# -- the classifier ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("10.0.0.1", "private"), ("172.16.5.4", "private"),
    ("192.168.1.1", "private"), ("169.254.169.254", "link-local"), ("100.64.0.1", "shared (CGNAT)"),
    ("100.127.255.254", "shared (CGNAT)"), ("192.0.0.1", "reserved"), ("192.0.0.9", "reserved"),
    ("192.0.2.1", "reserved"), ("198.18.0.1", "reserved"), ("198.19.255.255", "reserved"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"), ("0.0.0.0", "unspecified"), ("0.1.2.3", "unspecified"),
    ("::", "unspecified"), ("::1", "loopback"), ("::ffff:10.0.0.1", "IPv4-mapped"),
    ("::ffff:8.8.8.8", "IPv4-mapped"), ("::127.0.0.1", "IPv4-compatible"),
    ("64:ff9b::10.0.0.1", "private, through NAT64"), ("64:ff9b::127.0.0.1", "loopback, through NAT64"),
    ("64:ff9b:1::1", "local-use NAT64"), ("2002:7f00:1::1", "loopback, through 6to4"), ("fe80::1", "link-local"),
    ("fc00::1", "private"), ("fd12:3456::1", "private"), ("fec0::1", "site-local"), ("ff02::1", "multicast"),
    ("2001:db8::1", "reserved"), ("100::1", "reserved"), ("2001::1", "reserved"),
    ("8.8.8.8", None), ("1.1.1.1", None), ("2606:4700::1", None), ("2001:4860:4860::8888", None),
    ("64:ff9b::8.8.8.8", None), ("2002:808:808::1", None),
])
def test_address_classes(address: str, kind: str | None) -> None:
    """NAT64 (64:ff9b::/96) and 6to4 are judged by the IPv4 address inside; mapped/compatible never pass."""
    assert address_class(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://2130706433/", "http://0x7f000001/", "http://0177.0.0.1/", "http://127.1/",
    "http://0x7f.1/", "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/", "http://[::127.0.0.1]/",
    "http://[::1]/", "http://0.0.0.0/", "http://0/", "http://[::]/", "https://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1:8080/x", "http://[fc00::1]/", "http://[fe80::1]/", "http://[64:ff9b::a00:1]/",
    "http://100.64.0.1/", "http://224.0.0.1/", "http://240.0.0.1/",
])
def test_address_literals_in_any_form_are_refused_without_resolving(url: str, dns: FakeDNS) -> None:
    with pytest.raises(RefusedAddressError, match=r"non-public address .*--allow-private-fetch"):
        check_url(url, STRICT)
    check_url(url, TransferLimits())  # the Python API allows them
    check_url(url, TransferLimits(allow_private=False, private_hosts={str(urlsplit(url).hostname)}))
    assert dns.calls == []


def test_an_allowed_host_given_as_an_ip_literal_is_exempt() -> None:
    check_url("http://[::1]:8080/x", TransferLimits(allow_private=False, private_hosts={"::1"}))
    with pytest.raises(RefusedAddressError, match=r"--allow-fetch-host 127\.0\.0\.1 or"):
        check_url("http://127.0.0.1/x", TransferLimits(allow_private=False, private_hosts={"localhost"}))


# -- names, connections and redirects ---------------------------------------------------------------


def test_names_resolving_to_private_addresses_are_refused_before_connecting(
    dns: FakeDNS, tripwire: Tripwire
) -> None:
    dns.add("images.example", ["127.0.0.1"])
    dns.add("mixed.example", ["8.8.8.8", "127.0.0.1"])  # one private answer among public ones is enough
    dns.add("metadata.example", ["169.254.169.254"])
    for host in ("localhost", "images.example", "mixed.example", "metadata.example"):
        url = f"http://{host}:{tripwire.port}/x.png"
        with pytest.raises(RefusedAddressError, match=f"host '{host}' resolves to a non-public address"):
            fetch_bytes(url, STRICT)
        with pytest.raises(RefusedAddressError):
            send_json(url, b"{}", method="POST", limits=STRICT)
    assert tripwire.connections == 0


def test_the_python_api_default_still_reads_from_loopback(raw_http: Callable[..., RawHTTP]) -> None:
    server = raw_http(reply("200 OK", {"Content-Type": "image/png"}, b"PNGDATA"))
    assert fetch_bytes(f"{server.url}/a.png", TransferLimits()) == (b"PNGDATA", "image/png")


def test_one_resolution_then_the_checked_address_with_the_name_as_host(
    dns: FakeDNS, raw_http: Callable[..., RawHTTP]
) -> None:
    """A rebinding resolver answers differently the second time: there is no second time."""
    server = raw_http(reply("200 OK", {"Content-Type": "image/png"}, b"PNGDATA"))
    dns.add("images.example", ["127.0.0.1"], ["10.255.255.1"])
    limits = TransferLimits(allow_private=False, private_hosts={"images.example"}, timeout=2, deadline=3)
    assert fetch_bytes(f"http://images.example:{server.port}/a.png?size=1", limits)[0] == b"PNGDATA"
    assert dns.calls == ["images.example"]
    assert server.heads[0].startswith(b"GET /a.png?size=1 HTTP/1.1\r\n")
    assert f"\r\nHost: images.example:{server.port}\r\n".encode() in server.heads[0]


def _redirecting(location: str) -> Callable[[socket.socket, bytes], None]:
    """Redirect ``/start`` to ``location``; answer an image anywhere else."""
    def answer(conn: socket.socket, head: bytes) -> None:
        if head.startswith(b"GET /start "):
            reply("302 Found", {"Location": location})(conn, head)
        else:
            reply("200 OK", {"Content-Type": "image/png"}, b"PNGDATA")(conn, head)
    return answer


@pytest.mark.parametrize("target", ["http://localhost:{port}/x", "http://2130706433:{port}/x",
                                    "http://[::ffff:127.0.0.1]:{port}/x", "http://10.0.0.1/x",
                                    "http://169.254.169.254/latest/meta-data/"])
def test_a_redirect_to_a_private_address_is_refused(
    target: str, tripwire: Tripwire, raw_http: Callable[..., RawHTTP]
) -> None:
    location = target.format(port=tripwire.port)
    server = raw_http(_redirecting(location))
    limits = TransferLimits(allow_private=False, private_hosts={"127.0.0.1"}, timeout=2, deadline=3)
    assert fetch_bytes(f"{server.url}/elsewhere", limits)[0] == b"PNGDATA"  # the first hop itself is allowed
    with pytest.raises(RefusedAddressError, match=r"^redirect refused: it leads to a non-public address") as err:
        fetch_bytes(f"{server.url}/start", limits)
    assert location.split("//")[1].split("/")[0] not in str(err.value)  # the redirect's target is not echoed
    assert tripwire.connections == 0


def test_a_redirect_within_the_rules_is_followed(raw_http: Callable[..., RawHTTP]) -> None:
    server = raw_http(_redirecting("/image.png"))
    assert fetch_bytes(f"{server.url}/start", TransferLimits())[0] == b"PNGDATA"
    assert [head.split(b" ")[1] for head in server.heads] == [b"/start", b"/image.png"]


def test_send_json_never_follows_a_redirect(tripwire: Tripwire, raw_http: Callable[..., RawHTTP]) -> None:
    for status in ("301 Moved Permanently", "302 Found", "307 Temporary Redirect", "308 Permanent Redirect"):
        server = raw_http(reply(status, {"Location": f"http://127.0.0.1:{tripwire.port}/steal"}))
        assert send_json(f"{server.url}/hook", b"{}", method="POST", limits=TransferLimits()) == int(status[:3])
    assert tripwire.connections == 0


# -- one deadline ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", [b"", b"HTTP/1.1 200 OK\r\nX-Slow: "], ids=["status-line", "header"])
def test_trickled_header_bytes_end_at_the_deadline(prefix: bytes, raw_http: Callable[..., RawHTTP]) -> None:
    server = raw_http(trickle(prefix, every=0.05, limit=60))  # without the deadline a call would take 60 s
    limits = TransferLimits(timeout=2, deadline=0.6)
    for call in (lambda: fetch_bytes(f"{server.url}/a.png", limits),
                 lambda: send_json(f"{server.url}/hook", b"{}", method="PUT", limits=limits)):
        started = time.monotonic()
        with pytest.raises(TransferError, match=r"longer than 0.6 s"):
            call()
        assert time.monotonic() - started < 10 * 0.6  # hang guard
    # the server saw the connections end, not just the caller give up (hang guard: 10x the deadline)
    assert len(server.wait_closed(2, timeout=10 * 0.6)) == 2


def test_a_trickled_body_and_redirects_share_the_deadline(raw_http: Callable[..., RawHTTP]) -> None:
    """Each hop alone ends well inside the deadline; only together do they pass it."""
    def answer(conn: socket.socket, head: bytes) -> None:
        if head.startswith(b"GET /start "):
            time.sleep(0.5)
            return reply("302 Found", {"Location": "/slow"})(conn, head)
        body = b"a" * 10
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 10\r\n\r\n")
        for byte in body:  # the whole answer in 0.5 s
            time.sleep(0.05)
            conn.sendall(bytes([byte]))
        return None

    server = raw_http(answer)
    with pytest.raises(TransferError, match=r"longer than 0.8 s"):
        fetch_bytes(f"{server.url}/start", TransferLimits(timeout=2, deadline=0.8))


def test_a_slow_resolver_ends_at_the_deadline(dns: FakeDNS) -> None:
    dns.add("slow.example", ["8.8.8.8"])
    dns.delay = 30.0
    started = time.monotonic()
    with pytest.raises(TransferError, match=r"longer than 0.4 s"):
        fetch_bytes("http://slow.example/a.png", TransferLimits(deadline=0.4))
    assert time.monotonic() - started < 10 * 0.4  # hang guard: without the deadline the lookup alone takes 30 s


def test_a_silent_server_times_out(raw_http: Callable[..., RawHTTP]) -> None:
    server = raw_http(lambda conn, head: time.sleep(2))
    with pytest.raises(TransferError, match=r"timed out: the server sent nothing for 0\.3 s"):
        fetch_bytes(server.url, TransferLimits(timeout=0.3))


# -- messages ------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(("answer", "message"), [
    (reply("500 SECRET reason", {"X-Secret": "SECRET"}, b"SECRET body"), "the server answered HTTP 500"),
    (reply("404 SECRET", {}, b"<html>SECRET</html>"), "the server answered HTTP 404"),
    (lambda conn, head: conn.sendall(b"SSH-2.0-OpenSSH_SECRET\r\n"), "not valid HTTP"),
    (lambda conn, head: conn.sendall(b"+OK SECRET ready\r\n-ERR SECRET\r\n"), "not valid HTTP"),
    (reply("302 Found", {"Location": "ftp://SECRET.example/x"}), "redirect refused: it leads to a URL that is not"),
    (reply("302 Found", {"Location": "http://SECRET.example/x"}), "redirect refused: it leads to a host that is not"),
    (lambda conn, head: conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nSECRET"),
     "closed before the whole body arrived"),
])
def test_messages_carry_no_remote_bytes(
    answer: Any, message: str, raw_http: Callable[..., RawHTTP]
) -> None:
    server = raw_http(answer)
    limits = TransferLimits(allowed_hosts={"127.0.0.1"}, timeout=2, deadline=3)
    with pytest.raises(TransferError, match=message) as err:
        fetch_bytes(f"{server.url}/a.png", limits)
    assert "SECRET" not in str(err.value) and "Errno" not in str(err.value)


def test_a_closed_port_gives_a_coarse_reason() -> None:
    port = _closed_port()
    for call in (lambda: fetch_bytes(f"http://127.0.0.1:{port}/a.png", TransferLimits()),
                 lambda: send_json(f"http://127.0.0.1:{port}/h", b"{}", method="POST", limits=TransferLimits())):
        with pytest.raises(TransferError) as err:
            call()
        assert str(err.value) == "could not connect to '127.0.0.1'"


# -- TLS ------------------------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for images.example (key, cert), made by the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=images.example",
                    "-addext", "subjectAltName=DNS:images.example"], check=True, capture_output=True, timeout=30)
    return key, cert


def test_tls_uses_the_url_name_for_sni_and_the_certificate_check(
    certificate: tuple[Path, Path], dns: FakeDNS, raw_http: Callable[..., RawHTTP], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert = certificate
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(cert, key)
    names: list[str | None] = []
    served.sni_callback = lambda sock, name, context: names.append(name)  # type: ignore[assignment,misc,func-returns-value]
    trusting = ssl.create_default_context(cafile=str(cert))
    monkeypatch.setattr(outbound, "_tls_context", lambda: trusting)
    server = raw_http(reply("200 OK", {"Content-Type": "image/png"}, b"PNGDATA"), tls=served)
    dns.add("images.example", ["127.0.0.1"])
    dns.add("other.example", ["127.0.0.1"])
    limits = TransferLimits(allow_private=False, private_hosts={"images.example", "other.example", "127.0.0.1"},
                            timeout=2, deadline=3)
    assert fetch_bytes(f"https://images.example:{server.port}/a.png", limits)[0] == b"PNGDATA"
    assert names == ["images.example"]
    assert f"\r\nHost: images.example:{server.port}\r\n".encode() in server.heads[0]
    for url in (f"https://other.example:{server.port}/a.png", f"https://127.0.0.1:{server.port}/a.png"):
        with pytest.raises(TransferError, match=r"TLS certificate of .* could not be verified"):
            fetch_bytes(url, limits)


def test_the_macos_trust_store_context_checks_certificates_through_the_deadline_handshake(
    certificate: tuple[Path, Path], raw_http: Callable[..., RawHTTP], monkeypatch: pytest.MonkeyPatch
) -> None:
    """truststore (macOS) verifies after the handshake that ``_connect`` runs itself: an untrusted
    certificate is still refused, with the same coarse reason."""
    pytest.importorskip("truststore", reason="truststore is installed on macOS (and with huggingface-hub)")
    key, cert = certificate
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(cert, key)
    monkeypatch.setattr(outbound, "_tls_context", lambda: tls_context("darwin"))
    server = raw_http(reply("200 OK", {"Content-Type": "image/png"}, b"PNGDATA"), tls=served)
    limits = TransferLimits(allow_private=True, timeout=2, deadline=3)
    with pytest.raises(TransferError, match=r"TLS certificate of .* could not be verified"):
        fetch_bytes(f"https://127.0.0.1:{server.port}/a.png", limits)
