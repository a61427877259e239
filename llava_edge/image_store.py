"""Images kept by UUID on disk, so a later request can name an image instead of sending it again.

The server's ``imageUpload`` task writes here and any image field accepts the UUID it answers. Files
are named by the store (``<uuid>.<ext>``), never by anything in a request, and written atomically.
"""

from __future__ import annotations

import io
import os
import tempfile
import uuid
from pathlib import Path

from PIL import Image

from llava_edge.errors import InvalidImageError
from llava_edge.paths import data_dir
from llava_edge.schema import is_uuid4

_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}


class ImageStore:
    """A directory of images named by UUID v4."""

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root) if root is not None else data_dir() / "images"

    def put(self, data: bytes) -> str:
        """Store encoded image bytes (already checked by the caller) and return their new UUID."""
        extension = _EXTENSIONS.get(_format_of(data), "bin")
        self.root.mkdir(parents=True, exist_ok=True)
        image_uuid = str(uuid.uuid4())
        handle, temp_name = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        try:
            with os.fdopen(handle, "wb") as temp:
                temp.write(data)
                temp.flush()
                os.fsync(temp.fileno())
            os.replace(temp_name, self.root / f"{image_uuid}.{extension}")
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        return image_uuid

    def path(self, image_uuid: str) -> Path:
        """The file of a stored image.

        Raises:
            InvalidImageError: the UUID is malformed or no image is stored under it.
        """
        if not is_uuid4(image_uuid):
            raise InvalidImageError(f"{image_uuid!r} is not an image UUID.")
        matches = sorted(self.root.glob(f"{image_uuid.lower()}.*"))
        if not matches:
            raise InvalidImageError(
                f"No stored image has UUID {image_uuid}. Upload it first (imageUpload) or send the image itself."
            )
        return matches[0]

    def read(self, image_uuid: str) -> bytes:
        """The bytes of a stored image (see ``path`` for the errors)."""
        return self.path(image_uuid).read_bytes()

    def delete(self, image_uuid: str) -> None:
        """Remove a stored image; a UUID with no image is ignored."""
        try:
            self.path(image_uuid).unlink(missing_ok=True)
        except InvalidImageError:
            pass


def _format_of(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return str(image.format)
    except Exception:
        return ""
