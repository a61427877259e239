"""XMP sidecars: ``photo.xmp`` (``adobe``) or ``photo.jpg.xmp`` (``darktable``) beside the image.

A new sidecar is the built packet itself. An existing one is merged: exiv2 reads it, only the properties we set
are replaced (following ``policy``), everything else (ratings, darktable's edit history, other tools' fields)
is kept, and the result replaces the file atomically. A sidecar exiv2 cannot parse is refused and left as it
was. Only the sidecar's own description counts as an existing one, not the image's. A sidecar that is a
symbolic link is refused (``files.open_own``), never read or written through.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from llava_edge.errors import CorruptMetadataError, PhotoMetadataError, ReadOnlyImageError
from llava_edge.photos import exiv2_io, files
from llava_edge.photos.caption_text import Action, IfExists
from llava_edge.photos.policy import Existing, plan_update
from llava_edge.photos.targets import XmpStyle
from llava_edge.photos.xmp_packet import Marker, build_packet


def sidecar_path(image: Path, style: XmpStyle) -> Path:
    """``photo.jpg`` -> ``photo.xmp`` (``adobe``) or ``photo.jpg.xmp`` (``darktable``)."""
    if style == "darktable" or not image.suffix:
        return image.with_name(image.name + ".xmp")
    return image.with_suffix(".xmp")


def read_sidecar(path: Path) -> Existing | None:
    """What the sidecar at ``path`` holds, or ``None`` when there is none.

    Raises:
        CorruptMetadataError: the file is not an XMP sidecar exiv2 can parse.
        OutputFileError: it is a symbolic link.
    """
    _, data = _stat_and_read(path)
    if not data.strip():
        return None
    return exiv2_io.read_existing(_open(data, path), iim=False, exif=False)


def write_sidecar(
    path: Path,
    caption: str,
    *,
    keywords: Sequence[str] | None,
    alt_text: str,
    marker: Marker | None,
    if_exists: IfExists,
) -> Action:
    """Write or merge the caption into the sidecar at ``path``; return what was done.

    Raises:
        CorruptMetadataError: an existing sidecar cannot be parsed (it is left as it was).
        OutputFileError: the sidecar is a symbolic link.
        ReadOnlyImageError: the sidecar or its folder is read-only.
        PhotoMetadataError: it could not be written (disk full, changed meanwhile).
    """
    exiv2_io.module()
    with files.folder_lock(path.parent):
        found, data = _stat_and_read(path)
        if not data.strip():  # no sidecar, or an empty file: nothing in it to keep
            update = plan_update(Existing(), caption, keywords=keywords, alt_text=alt_text, marker=marker,
                                 if_exists=if_exists)
            data = build_packet(update.fields)
        else:
            opened = _open(data, path)
            existing = exiv2_io.read_existing(opened, iim=False, exif=False)
            update = plan_update(existing, caption, keywords=keywords, alt_text=alt_text, marker=marker,
                                 if_exists=if_exists)
            if update.fields.is_empty():
                return update.action
            exiv2_io.apply(opened, update, build_packet(update.fields), iim=False, exif=False)
            data = exiv2_io.serialize(opened, str(path))
        if found is not None and files.is_read_only(path, found):
            raise ReadOnlyImageError(f"The XMP sidecar {path} is read-only; make it writable (chmod u+w) and run "
                                     "again.")
        _replace(path, data, found)
    return update.action


def _stat_and_read(path: Path) -> tuple[os.stat_result | None, bytes]:
    try:
        read = files.read_own(path, parameter="xmpSidecar")
    except PermissionError as err:
        raise ReadOnlyImageError(f"Cannot read the XMP sidecar {path} ({err.strerror}); fix its permissions.") from err
    return (None, b"") if read is None else read


def _open(data: bytes, path: Path) -> exiv2_io.Opened:
    opened = exiv2_io.open_bytes(data, str(path), advice="Repair it, or move it aside and run again.")
    if opened.kind != "XMP":
        raise CorruptMetadataError(
            f"{path} is not an XMP sidecar (exiv2 reads it as {opened.kind}); move it aside and run again."
        )
    return opened


def _replace(path: Path, data: bytes, found: os.stat_result | None) -> None:
    try:
        files.replace_file(path, data, original=found)
    except PermissionError as err:
        raise ReadOnlyImageError(f"Cannot write the XMP sidecar {path}: its folder is read-only ({err.strerror}). "
                                 "Make the folder writable, or use the other --xmp-style.") from err
    except files.FileChangedError as err:
        raise PhotoMetadataError(f"{path} changed while the caption was being written; nothing was replaced. "
                                 "Run again.") from err
    except OSError as err:
        raise PhotoMetadataError(f"Cannot write the XMP sidecar {path}: {err.strerror or err}. Nothing was "
                                 "replaced; free some disk space and run again.") from err
