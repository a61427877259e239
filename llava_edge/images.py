"""Image inputs: every form a caption request may carry, decoded to an RGB Pillow image within limits.

Accepted forms: a Pillow image, bytes, a file path (Python API only), an http(s) URL, a ``data:`` URI,
bare base64, or the UUID of an image kept in the ``ImageStore``. EXIF orientation is applied, the
first frame of an animation is used, and every mode (RGBA, P, L, CMYK, 16-bit, float) becomes RGB.
"""

from __future__ import annotations

import base64
import binascii
import io
import itertools
import os
import re
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from llava_edge.errors import InvalidImageError
from llava_edge.image_formats import register_decoders
from llava_edge.outbound import TransferError, TransferLimits, fetch_bytes
from llava_edge.schema import is_uuid4

if TYPE_CHECKING:
    from llava_edge.image_store import ImageStore

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "GIF", "BMP"}) | register_decoders()
"""What Pillow decodes here, plus HEIC/HEIF (pillow-heif, the ``photos`` extra) and AVIF when available."""
_DATA_URI = re.compile(
    r"^data:(?P<media>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.IGNORECASE
)
_BASE64_CHARS = re.compile(r"^[A-Za-z0-9+/=\s_-]+$")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HIGH_DEPTH = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
"""What Pillow keeps per pixel in memory for a mode; every other mode (RGB included) takes 4 bytes."""
_STRIP_PIXELS = 1 << 20
"""Pixels converted at a time from 16/32-bit to 8-bit: float64 scratch of 8 MiB, not 8 bytes per pixel."""

ImageInput = Any
"""``str | bytes | os.PathLike | PIL.Image.Image``."""


@dataclass(frozen=True)
class ImageLimits:
    """Limits applied to every image before it is decoded."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    """Width x height; larger images are refused before decoding (decompression bombs)."""
    max_decode_bytes: int = 384 * 1024 * 1024
    """Memory a decode to RGB may take, estimated from the mode and size in the header before any pixel is
    read (``decode_memory``). 40 MP in any mode fits (8 bytes per pixel at most); raise it along with ``max_pixels``."""
    transfer: TransferLimits = field(default_factory=TransferLimits)
    allow_paths: bool = True
    """Read local file paths. The server turns this off: a request never names files."""


def load_image(
    source: ImageInput, *, limits: ImageLimits | None = None, store: ImageStore | None = None
) -> Image.Image:
    """Decode any accepted input into an RGB image.

    Raises:
        InvalidImageError: the input is of no accepted form, cannot be fetched or decoded, or breaks a limit.
    """
    limits = limits or ImageLimits()
    if isinstance(source, Image.Image):
        _check_pixels(source, limits)
        return to_rgb(source)
    return decode_image_bytes(read_image_bytes(source, limits=limits, store=store), limits)


def read_image_bytes(source: ImageInput, *, limits: ImageLimits, store: ImageStore | None = None) -> bytes:
    """The encoded bytes behind an image reference, before decoding."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _capped(bytes(source), limits)
    if isinstance(source, os.PathLike):
        return _read_path(Path(source), limits)
    if not isinstance(source, str):
        raise InvalidImageError(
            f"An image must be a path, bytes, a PIL image or a string, not {type(source).__name__}."
        )
    text = source.strip()
    if text.lower().startswith(("http://", "https://")):
        return _fetch(text, limits)
    if text[:5].lower() == "data:":
        return _capped(_decode_data_uri(text), limits)
    if is_uuid4(text):
        return _from_store(text, store, limits)
    if limits.allow_paths and len(text) < 4096 and os.path.isfile(text):
        return _read_path(Path(text), limits)
    try:
        return _capped(_decode_base64(text), limits)
    except InvalidImageError:
        if limits.allow_paths and _looks_like_path(text):
            raise InvalidImageError(f"No image file at {text}.") from None
        raise


def decode_image_bytes(data: bytes, limits: ImageLimits) -> Image.Image:
    """Decode encoded image bytes (PNG, JPEG, WEBP, GIF, BMP) into RGB, within the pixel limit.

    Raises:
        InvalidImageError: for anything the bytes make the decoder raise, from the header to the EXIF orientation.
    """
    if not data:
        raise InvalidImageError("The image is empty (0 bytes).")
    if data.startswith(_PNG_SIGNATURE):
        _check_png_crcs(data)
    with decoding(data):
        image = Image.open(io.BytesIO(data))
        _check_format(image)
        _check_pixels(image, limits)
        image.seek(0)
        image.load()
        return _to_rgb(image, owned=True)


def image_size(data: bytes, limits: ImageLimits) -> tuple[int, int]:
    """Width and height read from the header alone (no pixel is decoded), after the format and the image's own
    limits (``max_pixels``, ``max_decode_bytes``) are checked: enough to refuse a request before decoding it.

    Raises:
        InvalidImageError: as ``decode_image_bytes`` for what the header shows.
    """
    if not data:
        raise InvalidImageError("The image is empty (0 bytes).")
    with decoding(data), Image.open(io.BytesIO(data)) as image:
        _check_format(image)
        _check_pixels(image, limits)
        return image.size


@contextmanager
def decoding(data: bytes | None = None) -> Iterator[None]:
    """Where Pillow reads untrusted pixels or metadata: whatever it raises becomes an ``InvalidImageError``
    (Pillow's plugins raise ``SyntaxError``, ``struct.error``, ``IndexError``... on crafted files, EXIF
    included), so a bad image is always the client's 4xx, never a server error. ``MemoryError`` stays what it
    is. ``data``: the bytes, to say what they look like when they are no image at all. A warning about corrupt
    metadata is no error (the picture still decodes); a decompression-bomb warning is."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (InvalidImageError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InvalidImageError(f"The image is too large to decode safely: {err}") from err
    except UnidentifiedImageError as err:
        seen = _what_it_looks_like(data) if data is not None else "no known image format"
        raise InvalidImageError(
            f"The data is not an image Pillow can read ({seen}). Send PNG, JPEG or WEBP.",
            code="unsupportedImageFormat",
        ) from err
    except Exception as err:  # any decoder failure is the image's fault (see the docstring)
        raise InvalidImageError(f"The image is corrupt or truncated: {_reason(err)}.") from err


def _reason(err: Exception) -> str:
    """A decoder's complaint, short; its class name when it says nothing."""
    text = str(err).strip()[:200]
    return text or type(err).__name__


def _what_it_looks_like(data: bytes) -> str:
    """A coarse description of data that is no image, without echoing its bytes (it may come from a
    fetched URL, and quoting it would make the server an oracle for other hosts' content)."""
    start = data[:64].lstrip()
    if start[:1] == b"<":
        return "it looks like HTML or XML"
    if start[:1] in (b"{", b"["):
        return "it looks like JSON"
    if start and all(32 <= byte < 127 or byte in (9, 10, 13) for byte in start):
        return "it looks like text"
    return "no known image format"


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright, first-frame, 8-bit RGB: EXIF orientation applied, alpha composited on white. The image given
    is left as it was."""
    with decoding():
        return _to_rgb(image, owned=False)


def decode_memory(mode: str, size: tuple[int, int], *, transparent: bool = False) -> int:
    """About the most memory, in bytes, that decoding an image of this mode and size to RGB holds at once:
    the two largest consecutive copies (decoded, upright, each conversion ``to_rgb`` makes), since each copy
    is freed once the next exists. ``transparent``: the header names a transparent colour (``tRNS``)."""
    stored = _BYTES_PER_PIXEL.get(mode, 4)
    sizes = [stored, stored, *(per_pixel for _, per_pixel in _conversions(mode, transparent))]
    return size[0] * size[1] * max(a + b for a, b in itertools.pairwise(sizes))


_Conversion = tuple[Callable[[Image.Image], Image.Image], int]
"""One step towards RGB and the bytes per pixel of what it makes."""


def _to_rgb(image: Image.Image, *, owned: bool) -> Image.Image:
    """``to_rgb``. ``owned``: nobody else holds ``image`` (a fresh decode), so it is turned upright in place
    and closed as soon as its converted copy exists; at most two full-size copies are alive at once."""
    image.seek(0)  # not ``n_frames``: counting a GIF's frames reads every frame header (~7 us each, 23 bytes each)
    if owned:
        ImageOps.exif_transpose(image, in_place=True)
    else:
        image = ImageOps.exif_transpose(image) or image  # a copy (upright or not); the caller's stays as it was
    for convert, _ in _conversions(image.mode, "transparency" in image.info):
        converted = convert(image)
        if owned and converted is not image:
            image.close()
        image, owned = converted, True
    return image


def _conversions(mode: str, transparent: bool) -> list[_Conversion]:
    if mode in _HIGH_DEPTH:
        return [(_high_depth_to_l, 1), (_as_rgb, 4)]
    if mode in ("P", "LA", "PA") or (mode in ("RGB", "L") and transparent):
        return [(_as_rgba, 4), (_on_white, 4)]
    if mode == "RGBA":
        return [(_on_white, 4)]
    return [(_as_rgb, 4)]


def _as_rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


def _as_rgba(image: Image.Image) -> Image.Image:
    return image.convert("RGBA")


def _on_white(rgba: Image.Image) -> Image.Image:
    """RGBA composited on opaque white, as RGB (the same pixels as ``alpha_composite`` on white, in one copy)."""
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba)
    return background


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit integer and float images to 8 bits by their own range (no clipping), in strips
    of rows: float64 only for ``_STRIP_PIXELS`` at a time, each pixel computed as one full-size pass would."""
    width, height = image.size
    rows = max(1, _STRIP_PIXELS // width)
    bands = [(top, min(top + rows, height)) for top in range(0, height, rows)]

    def strip(top: int, bottom: int) -> np.ndarray[Any, Any]:
        return np.asarray(image.crop((0, top, width, bottom)))

    extremes = [(values.min(), values.max()) for values in (strip(top, bottom) for top, bottom in bands)]
    low, high = float(np.min([lo for lo, _ in extremes])), float(np.max([hi for _, hi in extremes]))
    scaled = np.zeros((height, width), dtype=np.uint8)
    if high > low:
        factor = 255.0 / (high - low)
        for top, bottom in bands:
            values = strip(top, bottom).astype(np.float64)
            values -= low
            values *= factor
            scaled[top:bottom] = values.round().astype(np.uint8)
    return Image.fromarray(scaled)


def _check_png_crcs(data: bytes) -> None:
    """Refuse a PNG whose critical chunk (IHDR, PLTE, IDAT, IEND) fails its CRC, as libpng does. Pillow skips
    IDAT's CRC, so flipped bits in the pixel data would otherwise decode to garbage. Truncation is left to Pillow."""
    view, pos = memoryview(data), len(_PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data):
            return
        if kind[:1].isupper() and zlib.crc32(view[pos + 4 : end - 4]) != struct.unpack_from(">I", data, end - 4)[0]:
            raise InvalidImageError(
                f"The PNG is corrupt: its {kind.decode('latin-1')!r} chunk at byte {pos} fails its CRC check."
            )
        if kind == b"IEND":
            return
        pos = end


def _check_format(image: Image.Image) -> None:
    if image.format not in ALLOWED_FORMATS:
        raise InvalidImageError(
            f"Image format {image.format} is not supported; send {', '.join(sorted(ALLOWED_FORMATS))}.",
            code="unsupportedImageFormat",
        )


def _check_pixels(image: Image.Image, limits: ImageLimits) -> None:
    """Refuse an image by its header (Image.open reads no pixels): no pixels, too many, or too many bytes."""
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImageError(f"The image has no pixels ({width}x{height}).")
    if width * height > limits.max_pixels:
        raise InvalidImageError(
            f"The image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}. "
            "Downscale it first."
        )
    needed = decode_memory(image.mode, image.size, transparent="transparency" in image.info)
    if needed > limits.max_decode_bytes:
        raise InvalidImageError(
            f"Decoding the {width}x{height} image (mode {image.mode}) would take about {needed / 2**20:.0f} MiB; "
            f"the limit is {limits.max_decode_bytes / 2**20:.0f} MiB. Downscale it or convert it to 8-bit first."
        )


def _capped(data: bytes, limits: ImageLimits) -> bytes:
    if len(data) > limits.max_bytes:
        raise InvalidImageError(f"The image is {len(data)} bytes; the limit is {limits.max_bytes}.")
    return data


def _looks_like_path(text: str) -> bool:
    return len(text) < 4096 and "\n" not in text and (os.sep in text or "." in text[-6:])


def _read_path(path: Path, limits: ImageLimits) -> bytes:
    if not limits.allow_paths:
        raise InvalidImageError("Local file paths are not accepted here; send a data URI, base64, URL or UUID.")
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise InvalidImageError(f"{path} is {size} bytes; the limit is {limits.max_bytes}.")
        return path.read_bytes()
    except FileNotFoundError as err:
        raise InvalidImageError(f"No image file at {path}.") from err
    except OSError as err:
        raise InvalidImageError(f"Cannot read {path}: {err.strerror}.") from err


def _fetch(url: str, limits: ImageLimits) -> bytes:
    try:
        body, content_type = fetch_bytes(url, limits.transfer)
    except (TransferError, ValueError) as err:  # ValueError: a malformed URL ("http://[", "http://h:abc/")
        raise InvalidImageError(f"Could not fetch the image at {url[:200]}: {err}.") from err
    if content_type.startswith("text/"):
        shown = content_type if re.fullmatch(r"text/[a-z0-9.+-]{1,40}", content_type) else "text"  # remote bytes
        raise InvalidImageError(f"The URL {url[:200]} served {shown}, not an image.", code="unsupportedImageFormat")
    return body


def _decode_data_uri(text: str) -> bytes:
    match = _DATA_URI.match(text)
    if match is None or not match.group("b64"):
        raise InvalidImageError("A data URI must look like data:image/png;base64,<data>.")
    media = (match.group("media") or "").lower()
    if not media.startswith("image/"):
        raise InvalidImageError(
            f"The data URI's media type is {media or 'missing'}; it must be image/png, image/jpeg or image/webp.",
            code="unsupportedImageFormat",
        )
    return _decode_base64(text[match.end():])


def _decode_base64(text: str) -> bytes:
    if not _BASE64_CHARS.match(text):
        raise InvalidImageError(
            "The image is not a URL, data URI, UUID or base64 string "
            f"(starts with {text[:40]!r}). Send one of those."
        )
    compact = re.sub(r"\s+", "", text)
    try:
        if "-" in compact or "_" in compact:
            return base64.urlsafe_b64decode(compact + "=" * (-len(compact) % 4))
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidImageError(f"The image is not valid base64: {err}.") from err


def _from_store(image_uuid: str, store: ImageStore | None, limits: ImageLimits) -> bytes:
    if store is None:
        raise InvalidImageError(f"Image {image_uuid} cannot be looked up: no image store is configured.")
    return _capped(store.read(image_uuid), limits)
