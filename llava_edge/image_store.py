"""Images kept on disk by content, so a later request can name an image instead of sending it again.

The server's ``imageUpload`` task writes here and any image field accepts the UUID it answers. That UUID is
derived from the sha256 of the bytes (``content_uuid``), so the same bytes uploaded twice are one file under
one UUID. Files are named by the store (``<uuid>.<ext>``), never by anything in a request, and written
atomically (a temporary file, then a rename). The store keeps within a quota of bytes and of files by
removing the least recently used images first (a lookup marks an image used by touching its mtime), and it
refuses an upload that would leave the disk with less than a margin free.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

from PIL import Image

from llava_edge.errors import ImageStoreError, InvalidImageError, ServerConfigError
from llava_edge.paths import data_dir
from llava_edge.schema import is_uuid4

_log = logging.getLogger("llava_edge.image_store")
_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}
_STORED_NAME = re.compile(r"^(?P<uuid>[0-9a-f-]{36})\.(?:png|jpg|webp|gif|bmp|bin)$")
_TEMP_PREFIX = ".upload-"
_STALE_TEMP_SECONDS = 3600.0
"""A temporary file this old was left by a process that died mid-write; the next ``put`` removes it."""

DEFAULT_MAX_BYTES = 2 * 1024**3
DEFAULT_MAX_FILES = 10_000
DEFAULT_MIN_FREE_BYTES = 256 * 1024**2


def content_uuid(data: bytes) -> str:
    """The UUID the store gives these bytes: the first 128 bits of their sha256, with the version-4 and
    variant bits set, so it is a canonical UUID v4 (``schema.is_uuid4``)."""
    return str(uuid.UUID(bytes=hashlib.sha256(data).digest()[:16], version=4))


class ImageStore:
    """A directory of images named by a UUID v4 derived from their content, kept within a quota.

    Args:
        root: the directory; default ``<data dir>/images``.
        max_bytes: the stored images take at most this many bytes in all (default 2 GiB).
        max_files: at most this many images are kept (default 10,000).
        min_free_bytes: ``put`` refuses a write that would leave the disk with less free space than this
            (default 256 MiB).

    When a new image would break a quota, the least recently stored or looked-up images are removed first.
    The quota holds within one process; processes sharing a directory may overshoot it briefly.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_files: int = DEFAULT_MAX_FILES,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
    ):
        if max_bytes < 1 or max_files < 1 or min_free_bytes < 0:
            raise ServerConfigError(
                f"The image store needs max_bytes >= 1, max_files >= 1 and min_free_bytes >= 0 (got {max_bytes}, "
                f"{max_files} and {min_free_bytes}). Fix the image store settings."
            )
        self.root = Path(root) if root is not None else data_dir() / "images"
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.min_free_bytes = min_free_bytes
        self._lock = threading.Lock()

    def put(self, data: bytes) -> str:
        """Store encoded image bytes (already checked by the caller) and return their UUID. The same bytes
        always give the same UUID and one file; storing them again only marks them recently used.

        Raises:
            InvalidImageError: the image alone is larger than the store's byte quota.
            ImageStoreError: the disk would keep less than ``min_free_bytes`` free, or the write failed;
                nothing partial is left.
        """
        image_uuid = content_uuid(data)
        target = self.root / f"{image_uuid}.{_EXTENSIONS.get(_format_of(data), 'bin')}"
        with self._lock:
            if _size_of(target) == len(data) and _touch(target):
                return image_uuid
            if len(data) > self.max_bytes:
                raise InvalidImageError(
                    f"The image is {len(data)} bytes; this server stores at most {self.max_bytes} bytes of uploads "
                    "in all. Send the image inline (a data URI or base64) instead of uploading it."
                )
            self.root.mkdir(parents=True, exist_ok=True)
            self._make_room(len(data), keep=target.name)
            self._check_free_space(len(data))
            self._write(target, data)
        return image_uuid

    def path(self, image_uuid: str) -> Path:
        """The file of a stored image; looking it up marks it recently used.

        Raises:
            InvalidImageError: the UUID is malformed or no image is stored under it.
        """
        if not is_uuid4(image_uuid):
            raise InvalidImageError(f"{image_uuid!r} is not an image UUID.")
        matches = sorted(self.root.glob(f"{image_uuid.lower()}.*"))
        if not matches or not _touch(matches[0]):
            raise _not_stored(image_uuid)
        return matches[0]

    def read(self, image_uuid: str) -> bytes:
        """The bytes of a stored image (see ``path`` for the errors)."""
        try:
            return self.path(image_uuid).read_bytes()
        except FileNotFoundError:  # removed for the quota between the lookup and the read
            raise _not_stored(image_uuid) from None

    def delete(self, image_uuid: str) -> None:
        """Remove a stored image; a UUID with no image is ignored."""
        try:
            self.path(image_uuid).unlink(missing_ok=True)
        except InvalidImageError:
            pass

    def usage(self) -> tuple[int, int]:
        """``(bytes, files)``: what the stored images take now."""
        entries = self._scan()
        return sum(size for _, size, _ in entries), len(entries)

    def _make_room(self, incoming: int, *, keep: str) -> None:
        """Remove the least recently used images until ``incoming`` more bytes and one more file fit."""
        entries = sorted(self._scan(), reverse=True)  # most recently used first: pop() takes the oldest
        total = sum(size for _, size, _ in entries)
        while entries and (total + incoming > self.max_bytes or len(entries) + 1 > self.max_files):
            _, size, path = entries.pop()
            if path.name != keep:
                path.unlink(missing_ok=True)
            total -= size

    def _scan(self) -> list[tuple[float, int, Path]]:
        """``(mtime, size, path)`` of each stored image; temporary files left by a dead writer are removed."""
        entries: list[tuple[float, int, Path]] = []
        stale_before = time.time() - _STALE_TEMP_SECONDS
        try:
            listing = list(os.scandir(self.root))
        except FileNotFoundError:
            return entries
        for entry in listing:
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                info = entry.stat(follow_symlinks=False)
                if entry.name.startswith(_TEMP_PREFIX):
                    if info.st_mtime < stale_before:
                        os.unlink(entry.path)
                    continue
            except FileNotFoundError:
                continue
            match = _STORED_NAME.match(entry.name)
            if match and is_uuid4(match["uuid"]):
                entries.append((info.st_mtime, info.st_size, Path(entry.path)))
        return entries

    def _check_free_space(self, incoming: int) -> None:
        free = shutil.disk_usage(self.root).free
        if free - incoming < self.min_free_bytes:
            _log.warning("image store %s: %.0f MiB free, uploads must leave %.0f MiB", self.root, free / 2**20,
                         self.min_free_bytes / 2**20)
            raise ImageStoreError(
                f"Not enough free disk space to store the image: {free / 2**20:.0f} MiB free in the image store, "
                f"and uploads must leave {self.min_free_bytes / 2**20:.0f} MiB. Nothing was stored. Send the image "
                "inline (a data URI or base64) instead, or ask the operator to free disk space."
            )

    def _write(self, target: Path, data: bytes) -> None:
        """Write to a temporary file in the store, then rename it into place: readers never see a partial file."""
        temp_name = None
        try:
            handle, temp_name = tempfile.mkstemp(dir=self.root, prefix=_TEMP_PREFIX)
            with os.fdopen(handle, "wb") as temp:
                temp.write(data)
                temp.flush()
                os.fsync(temp.fileno())
            os.replace(temp_name, target)
        except OSError as err:
            if temp_name is not None:
                Path(temp_name).unlink(missing_ok=True)
            full = err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
            _log.warning("image store %s: writing %s failed: %s", self.root, target.name, err)
            raise ImageStoreError(
                f"Could not store the image: {err.strerror or type(err).__name__}. Nothing was stored. "
                + ("Free disk space, or send the image inline (a data URI or base64)." if full else
                   "Check that the image store directory is writable, or send the image inline.")
            ) from err
        except BaseException:
            if temp_name is not None:
                Path(temp_name).unlink(missing_ok=True)
            raise


def _not_stored(image_uuid: str) -> InvalidImageError:
    return InvalidImageError(
        f"No stored image has UUID {image_uuid}. Upload it first (imageUpload) or send the image itself; "
        "stored images are removed, least recently used first, when the store is over its quota."
    )


def _touch(path: Path) -> bool:
    """Mark a stored image used now (its mtime orders the quota's removals); False if it is gone."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    except OSError:  # a read-only store: the image is there, only its place in the removal order is stale
        return path.exists()
    return True


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _format_of(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return str(image.format)
    except Exception:
        return ""
