"""Captions written into the image file: XMP ``dc:description``/``dc:subject``/``AltTextAccessibility`` and the
marker, IPTC IIM ``Caption-Abstract`` and ``Keywords`` (JPEG and TIFF, the formats that have IIM), EXIF
``ImageDescription`` (all four formats carry EXIF), for JPEG, PNG, WebP and TIFF.

exiv2 rewrites the metadata of an in-memory copy; the pixel data is never re-encoded. Before the copy replaces
the file it must decode to the same pixels (``pixels.pixel_hash``) and read back with our description, or
nothing is replaced. Other metadata (camera EXIF, GPS, ICC profiles, other tools' XMP) is kept. The file is
replaced atomically (``files.replace_file``); a symlink is followed and stays a symlink. Another name of a
hard-linked file keeps the old content, as with any program that saves by renaming.

HEIC/HEIF and AVIF cannot be written in place without re-encoding (exiv2 only reads them): the writer sends
their metadata to an XMP sidecar instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llava_edge.errors import InvalidImageError, PhotoMetadataError, ReadOnlyImageError, UnsupportedMetadataFormatError
from llava_edge.photos import exiv2_io, files
from llava_edge.photos.caption_text import IfExists
from llava_edge.photos.pixels import pixel_hash
from llava_edge.photos.policy import Update, plan_update
from llava_edge.photos.xmp_packet import Marker, build_packet

IN_PLACE = frozenset({"JPEG", "PNG", "WEBP", "TIFF"})
"""Formats whose metadata is written into the file."""
WITH_IIM = frozenset({"JPEG", "TIFF"})
"""Formats with an IPTC IIM slot."""
TO_SIDECAR = frozenset({"HEIF", "AVIF"})
"""Formats whose metadata goes to an XMP sidecar (exiv2 reads them but cannot write them)."""


@dataclass(frozen=True)
class ImageFile:
    """An image file as read: the real path (symlinks resolved), its stat then, and its bytes."""

    path: Path
    found: os.stat_result
    data: bytes

    @classmethod
    def read(cls, path: Path) -> ImageFile:
        """Read ``path``.

        Raises:
            PhotoMetadataError: there is no such file, or it cannot be read.
        """
        real = Path(os.path.realpath(path))
        try:
            found = os.stat(real)
            with open(real, "rb") as file:
                return cls(real, found, file.read())
        except FileNotFoundError as err:
            raise PhotoMetadataError(f"No image file at {path}; nothing was written.") from err
        except OSError as err:
            raise PhotoMetadataError(f"Cannot read {path} ({err.strerror or err}); nothing was written.") from err


@dataclass
class Prepared:
    """An in-place write decided and checked, not yet done (``commit``)."""

    image: ImageFile
    opened: exiv2_io.Opened
    update: Update


def open_metadata(image: ImageFile) -> exiv2_io.Opened:
    """exiv2's view of ``image``; its ``kind`` says whether it can be written in place.

    Raises:
        CorruptMetadataError: the existing metadata cannot be parsed.
    """
    return exiv2_io.open_bytes(image.data, str(image.path))


def prepare(
    image: ImageFile,
    opened: exiv2_io.Opened,
    caption: str,
    *,
    keywords: Sequence[str] | None,
    alt_text: str,
    marker: Marker | None,
    if_exists: IfExists,
) -> Prepared:
    """Decide what to write into ``image`` (``policy.plan_update``) and check that it can be written.

    Raises:
        UnsupportedMetadataFormatError: the format is not one of ``IN_PLACE``.
        ReadOnlyImageError: something is to be written and the file is read-only.
    """
    check_kind(image.path, opened.kind)
    existing = exiv2_io.read_existing(opened, iim=opened.kind in WITH_IIM, exif=True)
    update = plan_update(existing, caption, keywords=keywords, alt_text=alt_text, marker=marker, if_exists=if_exists)
    if not update.fields.is_empty() and files.is_read_only(image.path, image.found):
        raise ReadOnlyImageError(
            f"{image.path} is read-only, so its metadata cannot be written. Make it writable (chmod u+w) or write "
            "an XMP sidecar instead (--xmp-sidecar)."
        )
    return Prepared(image, opened, update)


def check_kind(path: Path, kind: str) -> None:
    """Raise ``UnsupportedMetadataFormatError`` unless ``kind`` is written in place."""
    if kind not in IN_PLACE:
        raise UnsupportedMetadataFormatError(
            f"{path} is {kind}, which llava-edge cannot write metadata into; JPEG, PNG, WebP and TIFF can be "
            "written in place. Write an XMP sidecar instead (--xmp-sidecar)."
        )


def commit(prepared: Prepared, *, content_hash: str, keep_times: bool) -> None:
    """Write what ``prepare`` decided: set the fields, check the copy, replace the file.

    ``content_hash``: the pixel hash of the file as read (the copy must have the same).

    Raises:
        PhotoMetadataError: exiv2 failed, the copy's pixels or description differ, the file changed meanwhile,
            or the disk is full. The file is left as it was.
        ReadOnlyImageError: its folder is read-only.
    """
    image, update = prepared.image, prepared.update
    if update.fields.is_empty():
        return
    iim = prepared.opened.kind in WITH_IIM
    exiv2_io.apply(prepared.opened, update, build_packet(update.fields), iim=iim, exif=True)
    data = exiv2_io.serialize(prepared.opened, str(image.path))
    _verify(image.path, data, content_hash, update)
    try:
        files.replace_file(image.path, data, original=image.found, keep_times=keep_times)
    except PermissionError as err:
        raise ReadOnlyImageError(
            f"Cannot write {image.path}: its folder is read-only ({err.strerror}). Make the folder writable, or "
            "write an XMP sidecar elsewhere."
        ) from err
    except files.FileChangedError as err:
        raise PhotoMetadataError(f"{image.path} changed while its metadata was being written; it was left as the "
                                 "other program saved it. Run again.") from err
    except OSError as err:
        raise PhotoMetadataError(f"Cannot write {image.path}: {err.strerror or err}. It was left as it was; free "
                                 "some disk space and run again.") from err


def _verify(path: Path, data: bytes, content_hash: str, update: Update) -> None:
    """The rewritten copy decodes to the same pixels and holds the new description."""
    try:
        same_pixels = pixel_hash(data, name=str(path)) == content_hash
    except InvalidImageError:
        same_pixels = False
    if not same_pixels:
        raise PhotoMetadataError(f"Writing the metadata of {path} would have changed its pixels; it was left as it "
                                 "was. Please report this with the file; write an XMP sidecar meanwhile.")
    written = exiv2_io.read_existing(exiv2_io.open_bytes(data, str(path)), iim=False, exif=False)
    if update.caption is not None and written.description.get("x-default") != update.caption:
        raise PhotoMetadataError(f"The description written into {path} did not read back; it was left as it was. "
                                 "Please report this with the file; write an XMP sidecar meanwhile.")
