"""Image inputs: every accepted form, every mode conversion, and each limit breaking cleanly."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from support.image_host import ImageRoutes
from support.images import ImageFactory, data_uri

from llava_edge.errors import InvalidImageError
from llava_edge.image_store import ImageStore
from llava_edge.images import ImageLimits, load_image
from llava_edge.outbound import TransferLimits


@pytest.fixture
def web(make_image: ImageFactory) -> Iterator[str]:
    """A loopback HTTP server with an image, an HTML page, a 404 and a trickling endless body."""
    ImageRoutes.routes = {
        "/cat.png": (200, "image/png", make_image(40, 30)),
        "/page.html": (200, "text/html", b"<html><body>not an image</body></html>"),
        "/untyped": (200, "", make_image(40, 30)),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), ImageRoutes)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_every_input_form_gives_the_same_pixels(make_image: ImageFactory, tmp_path: Path, web: str) -> None:
    png = make_image(40, 30)
    path = tmp_path / "cat.png"
    path.write_bytes(png)
    store = ImageStore(tmp_path / "store")
    stored = store.put(png)
    expected = Image.open(io.BytesIO(png)).convert("RGB").tobytes()
    forms = [png, path, str(path), Image.open(io.BytesIO(png)), f"{web}/cat.png", data_uri(png),
             base64.b64encode(png).decode(), stored]
    for form in forms:
        image = load_image(form, store=store)
        assert image.mode == "RGB" and image.size == (40, 30)
        assert image.tobytes() == expected, type(form)


def test_exif_orientation_is_applied(make_image: ImageFactory) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    jpeg = make_image(40, 20, format="JPEG", exif=exif.tobytes())
    assert load_image(jpeg).size == (20, 40)


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "CMYK", "I;16"])
def test_modes_become_rgb(make_image: ImageFactory, mode: str) -> None:
    format_ = "JPEG" if mode == "CMYK" else "PNG"
    image = load_image(make_image(16, 8, format=format_, mode=mode))
    assert image.mode == "RGB" and image.size == (16, 8)


def test_sixteen_bit_keeps_its_range() -> None:
    source = Image.new("I;16", (2, 1))
    source.putdata([0, 65535])
    buffer = io.BytesIO()
    source.save(buffer, format="PNG")
    image = load_image(buffer.getvalue())
    assert [image.getpixel((0, 0)), image.getpixel((1, 0))] == [(0, 0, 0), (255, 255, 255)]


def test_transparency_is_composited_on_white() -> None:
    source = Image.new("RGBA", (1, 1), (0, 0, 0, 0))
    buffer = io.BytesIO()
    source.save(buffer, format="PNG")
    assert load_image(buffer.getvalue()).getpixel((0, 0)) == (255, 255, 255)


def test_animated_image_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    red, _, blue = load_image(buffer.getvalue()).getpixel((4, 4))
    assert red > 200 and blue < 50


def expect_error(source: object, fragment: str, code: str = "invalidInputsImage", **limits: object) -> None:
    with pytest.raises(InvalidImageError) as caught:
        load_image(source, limits=ImageLimits(**limits))  # type: ignore[arg-type]
    assert caught.value.code == code
    assert caught.value.parameter == "inputs.image"
    assert fragment in str(caught.value)


def test_truncated_image(make_image: ImageFactory) -> None:
    expect_error(make_image(64, 64)[:200], "corrupt or truncated")


def test_zero_bytes() -> None:
    expect_error(b"", "empty")


def test_not_an_image() -> None:
    expect_error(b"%PDF-1.4 not an image at all", "not an image", code="unsupportedImageFormat")


def test_unsupported_format(make_image: ImageFactory) -> None:
    expect_error(make_image(8, 8, format="TIFF"), "TIFF is not supported", code="unsupportedImageFormat")


def test_decompression_bomb_is_refused_before_decoding(make_image: ImageFactory) -> None:
    expect_error(make_image(300, 300), "the limit is 10000", max_pixels=10_000)


def test_byte_limit(make_image: ImageFactory) -> None:
    expect_error(make_image(64, 64), "the limit is 100", max_bytes=100)


def test_wrong_base64() -> None:
    expect_error("!!not*base64!!", "not a URL, data URI, UUID or base64")


def test_data_uri_with_the_wrong_media_type(make_image: ImageFactory) -> None:
    expect_error(data_uri(make_image(), "text/plain"), "text/plain", code="unsupportedImageFormat")


def test_unknown_stored_uuid(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="Upload it first"):
        load_image("6f1d9f9e-3b5e-4f7a-9d2c-1b2a3c4d5e6f", store=ImageStore(tmp_path))


def test_paths_refused_when_not_allowed(tmp_path: Path, make_image: ImageFactory) -> None:
    path = tmp_path / "secret.png"
    path.write_bytes(make_image())
    expect_error(str(path), "not a URL, data URI, UUID or base64", allow_paths=False)
    expect_error(path, "paths are not accepted", allow_paths=False)


def test_an_image_served_without_a_content_type_is_read(web: str) -> None:
    assert load_image(f"{web}/untyped").size == (40, 30)


def test_html_at_an_image_url(web: str) -> None:
    expect_error(f"{web}/page.html", "served text/html", code="unsupportedImageFormat")


def test_404_at_an_image_url(web: str) -> None:
    expect_error(f"{web}/missing.png", "HTTP 404")


def test_endless_url_body_stops_at_the_deadline(web: str) -> None:
    started = time.monotonic()
    expect_error(f"{web}/endless", "longer than 1 s", transfer=TransferLimits(deadline=1.0))
    assert time.monotonic() - started < 10 * 1.0  # hang guard: the body never ends


def test_endless_url_body_stops_at_the_size_cap(web: str) -> None:
    expect_error(f"{web}/endless", "exceeds the limit of 4096 bytes", transfer=TransferLimits(max_bytes=4096))


def test_redirect_to_another_scheme_is_refused(web: str) -> None:
    expect_error(f"{web}/redirect-ftp", "redirect refused")


def test_hosts_outside_the_allow_list_are_refused(web: str) -> None:
    expect_error(f"{web}/cat.png", "not in the allowed hosts", transfer=TransferLimits(allowed_hosts={"localhost"}))
