"""Test images: a deterministic picture in any mode and format, and data URIs."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable

from PIL import Image

ImageFactory = Callable[..., bytes]
"""``make_image(width, height, format="PNG", mode="RGB", **save)`` -> encoded bytes (the fixture)."""


def encode_image(width: int = 64, height: int = 48, format: str = "PNG", mode: str = "RGB", **save: object) -> bytes:
    image = Image.new(mode, (width, height))
    image.putdata([_pixel(mode, x, y) for y in range(height) for x in range(width)])
    return encoded(image, format, **save)


def encoded(image: Image.Image, format: str = "PNG", **save: object) -> bytes:
    """``image`` saved in ``format``, as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=format, **save)
    return buffer.getvalue()


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def _pixel(mode: str, x: int, y: int) -> object:
    value = (x * 7 + y * 3) % 256
    if mode in ("L", "P"):
        return value
    if mode == "I;16":
        return (x * 1000 + y * 10) % 65536
    if mode == "RGBA":
        return (value, 255 - value, (x * y) % 256, 128)
    if mode == "CMYK":
        return (value, 0, 255 - value, 10)
    return (value, 255 - value, (x * y) % 256)
