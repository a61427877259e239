"""The content hash of an image: sha256 over its decoded pixels, so that writing metadata (ours or another
program's) does not change it and a rerun still recognises the image.

Only the first frame counts, the one a caption describes: its mode, size, palette and raw pixel bytes as
decoded, before EXIF orientation. Later frames (of an animated GIF or WebP, a multi-page TIFF) are never
decoded, so the work is one frame's, within the decoder's pixel limits, however many frames the file holds
(a GIF frame costs a few bytes to send and a whole canvas to decode). For a still image this is the hash of
every frame, as before. The value is ``"sha256-pixels:<hex>"``; the prefix names the method, so a later one
can be told apart.
"""

from __future__ import annotations

import hashlib
import io

from PIL import Image, UnidentifiedImageError

from llava_edge.errors import InvalidImageError
from llava_edge.image_formats import decoder_hint, register_decoders

PREFIX = "sha256-pixels:"


def pixel_hash(data: bytes, *, name: str = "the image") -> str:
    """The content hash of encoded image ``data`` (any format Pillow and the registered decoders read).

    Raises:
        InvalidImageError: the data does not decode (whatever the decoder raised); ``name`` is used in the message.
    """
    register_decoders()
    digest = hashlib.sha256()
    try:
        with Image.open(io.BytesIO(data)) as frame:  # positioned at the first frame; no other is read
            frame.load()
            digest.update(f"{frame.mode} {frame.size[0]}x{frame.size[1]}\n".encode())
            if frame.mode == "P":
                digest.update(bytes(frame.getpalette() or ()))
            digest.update(frame.tobytes())
    except UnidentifiedImageError as err:
        hint = decoder_hint(data)
        raise InvalidImageError(f"{name} is not an image Pillow can read" + (f"; {hint}." if hint else "."),
                                code="unsupportedImageFormat") from err
    except MemoryError:
        raise
    except Exception as err:  # a crafted file makes Pillow's plugins raise anything (SyntaxError, struct.error...)
        raise InvalidImageError(f"The pixels of {name} cannot be decoded ({err}); nothing was written.") from err
    return PREFIX + digest.hexdigest()
