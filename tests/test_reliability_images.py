"""Hostile image inputs end in a clear InvalidImageError within bounded time and memory.

Adds to test_images.py (a short PNG, zero bytes, non-images, TIFF, the pixel and byte limits, bad base64,
a text/plain data URI, HTML / 404 / endless / redirecting URLs): truncated and corrupted PNG, JPEG and WEBP,
zero-byte files and payloads, decompression bombs in five formats (measured in a fresh process), wrong
base64 and media types, HTML served as an image, servers that never answer, trickle or lie about their size.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support.image_host import ImageRoutes
from support.images import ImageFactory, data_uri

from llava_edge.errors import InvalidImageError
from llava_edge.images import ImageLimits, load_image
from llava_edge.outbound import TransferLimits

FORMATS = ("PNG", "JPEG", "WEBP")
CLEAR_CODES = ("invalidInputsImage", "unsupportedImageFormat")


def refused(source: object, *fragments: str, limits: ImageLimits | None = None) -> str:
    """load_image refuses ``source`` with an InvalidImageError saying each fragment (a 20 s hang guard: every
    refusal here is 10x faster, a timeout or deadline of at most 2 s included)."""
    started = time.monotonic()
    with pytest.raises(InvalidImageError) as caught:
        load_image(source, limits=limits)
    assert time.monotonic() - started < 20
    error = caught.value
    assert error.code in CLEAR_CODES and error.parameter == "inputs.image"
    for fragment in fragments:
        assert fragment in str(error)
    return str(error)


def png(width: int, height: int, *chunks: tuple[bytes, bytes], idat: bytes | None = None) -> bytes:
    """A PNG written by hand (valid CRCs), so its header may claim anything."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))  # 8-bit grayscale
    body = idat if idat is not None else zlib.compress(b"\0" * (width + 1) * height)
    return (b"\x89PNG\r\n\x1a\n" + header + b"".join(chunk(*c) for c in chunks) + chunk(b"IDAT", body)
            + chunk(b"IEND", b""))


# --- truncated and corrupted files ---------------------------------------------------------------------


@pytest.mark.parametrize("format_", FORMATS)
@pytest.mark.parametrize("keep", [0.5, 0.9, 20])
def test_truncated(make_image: ImageFactory, format_: str, keep: float) -> None:
    data = make_image(64, 48, format=format_)
    cut = int(len(data) * keep) if keep < 1 else int(keep)
    refused(data[:cut])


def test_png_missing_only_its_end_chunk_is_still_whole(make_image: ImageFactory) -> None:
    """Every pixel is there; libpng and browsers show it too."""
    data = make_image(64, 48)
    assert load_image(data[:-12]).tobytes() == load_image(data).tobytes()


@pytest.mark.parametrize("where", ["IHDR", "IDAT"])
def test_png_with_flipped_bits_fails_its_crc(make_image: ImageFactory, where: str) -> None:
    """Pillow skips IDAT's CRC, so without the check these bits became garbage pixels and a garbage caption."""
    data = bytearray(make_image(64, 48))
    data[data.index(where.encode()) + 6] ^= 0x10
    refused(bytes(data), f"'{where}' chunk", "fails its CRC check")


@pytest.mark.parametrize("format_", ["JPEG", "WEBP"])
def test_jpeg_and_webp_with_flipped_bits_never_crash(make_image: ImageFactory, format_: str) -> None:
    """Neither format checksums its pixel data: a flip deep in it decodes to wrong pixels (there is nothing to
    detect), a flip in a marker or header is an error. Either way, quickly, and never a crash."""
    clean = make_image(64, 48, format=format_)
    for offset in range(12, len(clean), max(1, len(clean) // 40)):
        data = bytearray(clean)
        data[offset] ^= 0xA5
        started = time.monotonic()
        try:
            image = load_image(bytes(data))
        except InvalidImageError as error:
            assert error.code in CLEAR_CODES
        else:
            assert image.mode == "RGB" and image.width * image.height <= 64 * 48 * 4
        assert time.monotonic() - started < 10  # hang guard: each decodes or is refused in milliseconds


# --- empty inputs ----------------------------------------------------------------------------------------


def test_zero_byte_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.touch()
    refused(empty, "empty (0 bytes)")
    refused(str(empty), "empty (0 bytes)")


@pytest.mark.parametrize("source", ["", "   ", "data:image/png;base64,", "data:image/png;base64,   "])
def test_empty_strings(source: str) -> None:
    refused(source)


# --- decompression bombs: refused from the header, before any pixel is decoded ---------------------------------


def _bombs(make_image: ImageFactory) -> dict[str, bytes]:
    jpeg = bytearray(make_image(8, 8, format="JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    webp = bytearray(make_image(8, 8, format="WEBP", lossless=True))
    bits = webp.index(b"VP8L") + 9  # after the chunk size and the 0x2f signature: 14-bit width-1, height-1
    low = struct.unpack_from("<I", webp, bits)[0] & ~((1 << 28) - 1)
    struct.pack_into("<I", webp, bits, low | 16383 | 16383 << 14)
    gif = bytearray(make_image(8, 8, format="GIF"))
    gif[6:10] = struct.pack("<HH", 65535, 65535)
    rows = zlib.compressobj(9)
    zeros = rows.compress(b"\0" * 8001 * 8000) + rows.flush()  # 64 MB of pixels in about 64 kB
    text = zlib.compressobj(9)
    text_bomb = b"".join(text.compress(b"\0" * 2**20) for _ in range(200)) + text.flush()  # 200 MB of "text"
    return {
        "png-claims-100000x100000": png(100_000, 100_000, idat=zlib.compress(b"")),
        "png-8000x8000-zeros": png(8000, 8000, idat=zeros),
        "png-ztxt-200MB": png(4, 4, (b"zTXt", b"Comment\0\0" + text_bomb)),
        "jpeg-claims-65000x65000": bytes(jpeg),
        "webp-claims-16384x16384": bytes(webp),
        "gif-claims-65535x65535": bytes(gif),
    }


_BOMB_PROBE = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from llava_edge.errors import InvalidImageError
    from llava_edge.host.process import peak_rss_bytes
    from llava_edge.images import load_image

    results = {}
    for path in sorted(Path(sys.argv[1]).iterdir()):
        before = peak_rss_bytes()
        started = time.perf_counter()
        try:
            load_image(path.read_bytes())
            outcome = "decoded"
        except InvalidImageError as error:
            outcome = str(error)
        grown = (peak_rss_bytes() - before) / 2**20
        results[path.name] = [outcome, time.perf_counter() - started, grown]
    print(json.dumps(results))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="measures with the POSIX resource module")
def test_decompression_bombs_are_refused_in_bounded_time_and_memory(make_image: ImageFactory, tmp_path: Path) -> None:
    for name, data in _bombs(make_image).items():
        assert len(data) < 1_000_000
        (tmp_path / name).write_bytes(data)
    result = subprocess.run([sys.executable, "-c", _BOMB_PROBE, str(tmp_path)], check=False, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report: dict[str, list[Any]] = json.loads(result.stdout)
    for name, (outcome, seconds, grown_mib) in report.items():
        assert outcome != "decoded", name
        assert ("pixels; the limit is" in outcome or "too large" in outcome), (name, outcome)
        assert grown_mib < 64, (name, seconds, grown_mib)  # measured under 2 MiB each: never decoded


# --- wrong base64 and wrong media types ------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, fragment",
    [
        ("abc", "not an image"),  # valid alphabet, wrong length: two bytes of nothing
        ("PGh0bWw+PGJvZHk+aGk8L2JvZHk+PC9odG1sPg==", "not an image"),  # base64 of an HTML page
        ("aGVsbG8=\x00aGVsbG8=", "not a URL, data URI, UUID or base64"),
        ("iVBORw0KGgo" + "é" * 10, "not a URL, data URI, UUID or base64"),
    ],
)
def test_wrong_base64(source: str, fragment: str) -> None:
    refused(source, fragment)


def test_oversized_base64_is_refused_after_decoding_without_decoding_the_image() -> None:
    refused("A" * 28_000_000, "the limit is 20971520")


@pytest.mark.parametrize(
    "media, fragment",
    [
        ("image/svg+xml", "not an image Pillow can read"),
        ("application/octet-stream", "media type is application/octet-stream"),
        ("text/html", "media type is text/html"),
    ],
)
def test_data_uri_with_a_wrong_media_type(make_image: ImageFactory, media: str, fragment: str) -> None:
    payload = b'<svg xmlns="http://www.w3.org/2000/svg"/>' if media == "image/svg+xml" else make_image()
    refused(data_uri(payload, media), fragment)


def test_data_uri_without_base64_is_refused(make_image: ImageFactory) -> None:
    refused("data:image/png,%89PNG%0D%0A", "must look like data:image/png;base64")


def test_data_uri_media_type_is_a_hint_the_bytes_decide(make_image: ImageFactory) -> None:
    image = load_image(data_uri(make_image(20, 10, format="JPEG"), "image/png"))
    assert image.size == (20, 10)


# --- hostile servers --------------------------------------------------------------------------------------


class _HostileRoutes(ImageRoutes):
    """test_images' routes plus servers that lie, stall, trickle or loop."""

    def do_GET(self) -> None:
        if self.path == "/html-as-png":
            return self._answer(b"<html><body>Sign in to view this image</body></html>", "image/png")
        if self.path == "/claims-10GB":
            return self._answer(b"\x89PNG", "image/png", length=10 * 2**30)
        if self.path == "/silent":
            time.sleep(3)  # bounded, so the server thread ends
            return self._answer(b"", "image/png")
        if self.path == "/trickle":
            return self._trickle()
        if self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()
            return None
        return super().do_GET()

    def _answer(self, body: bytes, content_type: str, length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass

    def _trickle(self) -> None:
        """Ten bytes every 0.2 s for 3 s: never idle long enough for a read timeout."""
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        for _ in range(15):
            try:
                self.wfile.write(b"\0" * 10)
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.2)


@pytest.fixture
def hostile() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HostileRoutes)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_html_served_as_an_image(hostile: str) -> None:
    refused(f"{hostile}/html-as-png", "not an image Pillow can read", "it looks like HTML or XML")


def test_declared_size_over_the_cap_is_refused_before_reading(hostile: str) -> None:
    refused(f"{hostile}/claims-10GB", "the body is 10737418240 bytes; the limit is")


def test_server_that_never_answers_times_out(hostile: str) -> None:
    refused(f"{hostile}/silent", "timed out", limits=ImageLimits(transfer=TransferLimits(timeout=0.5)))


def test_redirect_loop_ends(hostile: str) -> None:
    refused(f"{hostile}/loop", "HTTP 302")


def test_trickling_body_stops_at_the_deadline(hostile: str) -> None:
    limits = ImageLimits(transfer=TransferLimits(timeout=2, deadline=0.5))
    refused(f"{hostile}/trickle", "longer than 0.5 s", limits=limits)
