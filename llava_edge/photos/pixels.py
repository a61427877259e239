"""The content hash of an image: sha256 over its decoded pixels, so that writing metadata (ours or another
program's) does not change it and a rerun still recognises the image.

Every frame counts (multi-page TIFF, animated WebP), each as its mode, size, palette and raw pixel bytes as
decoded, before EXIF orientation. The value is ``"sha256-pixels:<hex>"``; the prefix names the method, so a
later one can be told apart.
"""

from __future__ import annotations

import hashlib
import io

from PIL import Image, ImageSequence, UnidentifiedImageError

from llava_edge.errors import InvalidImageError
from llava_edge.image_formats import decoder_hint, register_decoders

PREFIX = "sha256-pixels:"


def pixel_hash(data: bytes, *, name: str = "the image") -> str:
    """The content hash of encoded image ``data`` (any format Pillow and the registered decoders read).

    Raises:
        InvalidImageError: the data does not decode; ``name`` is used in the message.
    """
    register_decoders()
    digest = hashlib.sha256()
    try:
        with Image.open(io.BytesIO(data)) as image:
            for frame in ImageSequence.Iterator(image):
                frame.load()
                digest.update(f"{frame.mode} {frame.size[0]}x{frame.size[1]}\n".encode())
                if frame.mode == "P":
                    digest.update(bytes(frame.getpalette() or ()))
                digest.update(frame.tobytes())
    except UnidentifiedImageError as err:
        hint = decoder_hint(data)
        raise InvalidImageError(f"{name} is not an image Pillow can read" + (f"; {hint}." if hint else "."),
                                code="unsupportedImageFormat") from err
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        raise InvalidImageError(f"The pixels of {name} cannot be decoded ({err}); nothing was written.") from err
    return PREFIX + digest.hexdigest()
