"""Text sidecars: the caption in ``<stem>.txt`` (TagGUI, JoyCaption, kohya's taggers) or ``<stem>.caption``
(kohya's ``make_captions.py``) beside the image, UTF-8 with no trailing newline, replaced atomically
(``files.replace_file``: a new file gets the usual permissions, a replaced one keeps its own). A sidecar that
is a symbolic link is refused (``files.open_own``), never read or written through.

The one writer of these files, for both ways a ``caption`` run makes them: ``write_text_sidecar`` for the
photo step's text-sidecar target (``--sidecar-ext``, or ``--sidecar`` with other photo flags), which merges
the caption with what the file holds (``if_exists``, trigger words), and ``replace_text_sidecar`` for the
plain ``--sidecar`` output, which holds the model's caption as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from llava_edge.errors import OutputFileError
from llava_edge.photos import files
from llava_edge.photos.caption_text import Action, IfExists, compose
from llava_edge.photos.targets import TextOptions

PLAIN_EXTENSION = ".txt"
"""The extension of the plain ``--sidecar`` captions."""


def text_sidecar_path(image: Path, extension: str) -> Path:
    """``photos/cat.jpg`` + ``.caption`` -> ``photos/cat.caption``."""
    return image.with_suffix(extension) if image.suffix else image.with_name(image.name + extension)


def read_text_sidecar(path: Path) -> str | None:
    """The caption in a text sidecar, or ``None`` when there is none.

    Raises:
        OutputFileError: the file is not UTF-8 text, or a symbolic link.
    """
    read = files.read_own(path, parameter="sidecarExt")
    if read is None:
        return None
    try:
        return read[1].decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise OutputFileError(f"{path} is not UTF-8 text, so a caption cannot be merged into it; move it aside and "
                              "run again.", parameter="sidecarExt") from err


def write_text_sidecar(
    image: Path, caption: str, *, extension: str, text: TextOptions, if_exists: IfExists
) -> tuple[Path, Action]:
    """Merge the caption into ``image``'s text sidecar with this extension (``compose``: ``if_exists``, prefix
    and suffix); an unchanged sidecar is not rewritten.

    Raises:
        OutputFileError: the sidecar would be the image itself, is a symbolic link, or is not UTF-8 text.
    """
    path = _sidecar_of(image, extension)
    new, action = compose(read_text_sidecar(path), caption, if_exists, prefix=text.prefix, suffix=text.suffix)
    if new is not None:
        _replace(path, new)
    return path, action


def replace_text_sidecar(image: Path, caption: str, *, extension: str = PLAIN_EXTENSION) -> Path:
    """Make ``image``'s text sidecar hold exactly ``caption``, whatever it held before (always rewritten, so
    it is not older than the image).

    Raises:
        OutputFileError: the sidecar would be the image itself, or is a symbolic link.
        OSError: it could not be written (a read-only folder, a full disk); nothing was replaced.
    """
    path = _sidecar_of(image, extension)
    _replace(path, caption)
    return path


def _sidecar_of(image: Path, extension: str) -> Path:
    path = text_sidecar_path(image, extension)
    if _same_file(path, image):
        raise OutputFileError(f"The caption file of {image} would be the image itself ({path}). Rename the image to "
                              "its real suffix (.png, .jpg, ...).", parameter="sidecarExt")
    return path


def _replace(path: Path, caption: str) -> None:
    found = files.stat_own(path, parameter="sidecarExt")
    files.replace_file(path, caption.encode("utf-8"), original=found)


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False
