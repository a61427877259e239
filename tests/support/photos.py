"""Photos for the photos wing's tests: small pictures in every format, with camera EXIF and an ICC profile
that a metadata write must keep."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageCms

from llava_edge.photos.targets import Targets
from llava_edge.photos.xmp_packet import Marker

IN_PLACE = ("JPEG", "PNG", "WEBP", "TIFF")
SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "GIF": ".gif", "HEIF": ".heic",
          "AVIF": ".avif", "BMP": ".bmp"}
MARKER = Marker("Q4_K_M", "Describe this image.")
METADATA = Targets(metadata=True)
CAPTION = "A red kite over a green field. Clouds drift behind it."

PhotoFactory = Callable[..., Path]
"""``photo(fmt, name="kite", **encode_options)`` -> a new file (the ``photo`` fixture)."""


def encode(fmt: str, *, width: int = 48, height: int = 32, seed: int = 0, orientation: int | None = None) -> bytes:
    """A noisy picture with EXIF Make/Model (and Orientation) and an sRGB ICC profile, in ``fmt``."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    exif[0x0110] = "Model 7"  # Model
    if orientation is not None:
        exif[0x0112] = orientation
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    if fmt == "GIF":
        image.convert("P").save(buffer, "GIF")
    elif fmt == "BMP":
        image.save(buffer, "BMP")
    else:
        if fmt == "HEIF":
            import pillow_heif

            pillow_heif.register_heif_opener()
        image.save(buffer, fmt, exif=exif.tobytes(), icc_profile=icc, quality=90)
    return buffer.getvalue()


def decoded(path: Path) -> np.ndarray[Any, Any]:
    """The pixels of ``path`` as Pillow decodes them (an independent check, not the wing's pixel hash)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).copy()
