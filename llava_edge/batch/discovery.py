"""Which images a ``caption`` run takes: ``discover_images`` turns folders and globs into image paths and keeps
other sources (files, URLs, data URIs) as they are."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})
"""Files a folder or glob contributes; explicit file arguments are taken whatever their name."""
_GLOB_CHARS = re.compile(r"[*?[]")


def discover_images(sources: Iterable[str], *, recursive: bool = False) -> list[str]:
    """Expand folders and glob patterns into image files; keep other sources (files, URLs, data URIs).

    A folder gives its image files (by suffix, hidden ones left out), in sorted order, and those of its
    subfolders with ``recursive``; a glob gives its matching image files (``**`` with ``recursive``).
    Neither follows a link to a folder out of the folder named (a glob's part before its first wildcard), so
    the sidecars written beside the images stay inside it: a dataset cannot lead a run's writes elsewhere.
    Duplicates are dropped, the first occurrence kept.
    """
    found: dict[str, None] = {}
    for source in sources:
        for name in _expand(source, recursive):
            found.setdefault(name, None)
    return list(found)


def _expand(source: str, recursive: bool) -> list[str]:
    if os.path.isdir(source):
        return _walk(source, recursive)
    if _GLOB_CHARS.search(source) and not os.path.exists(source) and not _is_reference(source):
        return _glob(source, recursive)
    return [os.path.normpath(source) if os.path.isfile(source) else source]


def _glob(pattern: str, recursive: bool) -> list[str]:
    """The pattern's image files, none reached through a link to a folder outside its fixed part."""
    root = os.path.realpath(_fixed_part(pattern))
    matches = glob.glob(pattern, recursive=recursive)
    return sorted(os.path.normpath(path) for path in matches
                  if os.path.isfile(path) and _is_image_name(path) and _inside(root, os.path.dirname(path)))


def _fixed_part(pattern: str) -> str:
    """``photos/**/*.png`` -> ``photos``; ``*.png`` -> ``.``."""
    folder = os.path.dirname(pattern)
    while _GLOB_CHARS.search(folder):
        folder = os.path.dirname(folder)
    return folder or os.curdir


def _inside(root: str, folder: str) -> bool:
    real = os.path.realpath(folder or os.curdir)
    return os.path.commonpath([root, real]) == root


def _walk(root: str, recursive: bool) -> list[str]:
    found: list[str] = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith(".")) if recursive else []
        found.extend(os.path.normpath(os.path.join(folder, name)) for name in sorted(files) if _is_image_name(name))
    return found


def _is_image_name(path: str) -> bool:
    name = os.path.basename(path)
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _is_reference(source: str) -> bool:
    return source.lower().startswith(("http://", "https://", "data:"))
