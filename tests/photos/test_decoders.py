"""HEIC/HEIF (pillow-heif) and AVIF (Pillow's own plugin) decode as inputs, upright, and hash by their pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps
from support.photos import encode

from llava_edge import images
from llava_edge.image_formats import container_brand, decoder_hint, register_decoders
from llava_edge.photos.pixels import pixel_hash


def _half_red(fmt: str, orientation: int) -> bytes:
    """40 wide x 20 tall, left half red, with this EXIF orientation."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_decode_upright(heif_installed: None, fmt: str) -> None:
    assert fmt in register_decoders()
    data = _half_red(fmt, orientation=6)  # stored sideways: "rotate 90 degrees clockwise to display"
    assert container_brand(data) == fmt and decoder_hint(data) is None

    with Image.open(io.BytesIO(data)) as image:
        assert image.format == fmt
        upright = ImageOps.exif_transpose(image).convert("RGB")

    assert upright.size == (20, 40)
    red, black = upright.getpixel((10, 5)), upright.getpixel((10, 35))
    assert isinstance(red, tuple) and red[0] > 200 and black == (0, 0, 0)
    assert pixel_hash(data).startswith("sha256-pixels:")


@pytest.mark.skipif(not {"HEIF", "AVIF"} <= images.ALLOWED_FORMATS,
                    reason="llava_edge/images.py does not call image_formats.register_decoders yet (#14)")
@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_the_decode_path_accepts_heic_and_avif(heif_installed: None, fmt: str) -> None:
    rgb = images.load_image(_half_red(fmt, orientation=6))
    assert rgb.mode == "RGB" and rgb.size == (20, 40)


def test_a_heic_without_its_decoder_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("llava_edge.image_formats.register_decoders", lambda: frozenset({"AVIF"}))
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
    assert decoder_hint(heic) == "HEIC/HEIF images need pillow-heif: pip install 'llava-edge[photos]'"
    assert decoder_hint(encode("PNG")) is None


def test_pixel_hash_ignores_metadata_and_sees_pixels() -> None:
    plain = encode("PNG")
    assert pixel_hash(plain) == pixel_hash(encode("PNG", orientation=3))
    assert pixel_hash(plain) != pixel_hash(encode("PNG", seed=1))
