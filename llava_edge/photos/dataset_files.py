"""Dataset layouts that trainers read captions from (text sidecars: ``text_sidecar``).

- Hugging Face ``imagefolder``: ``metadata.jsonl`` in the dataset folder, one ``{"file_name": "a.jpg",
  "text": "..."}`` line per image, ``file_name`` relative to that folder with ``/`` separators. A new image's
  line is appended with one fsynced write; replacing or appending to an existing line rewrites the file
  atomically. A line cut short by a kill (the last one, without its newline) is dropped before the next write;
  a bad line anywhere else makes the file corrupt, and it is left as it is.
- kohya metadata JSON: ``{"<key>": {"caption": "..."}}`` (``merge_captions_to_metadata.py``; the key is the
  image's stem, or its path with ``--full_path``), other keys of an entry (``tags``, ...) kept, rewritten
  atomically with ``indent=2``.

Read-modify-write cycles hold a lock on the file's folder (``files.folder_lock``). Neither file is read or
written through a symbolic link (``files.open_own``): one there is refused with an ``OutputFileError``.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava_edge.errors import OutputFileError
from llava_edge.photos import files
from llava_edge.photos.caption_text import Action, IfExists, compose
from llava_edge.photos.targets import KohyaKey, TextOptions

_JSONL, _KOHYA = "metadataJsonl", "kohyaJson"
"""The options that name the files, for errors."""


def jsonl_file_name(image: Path, jsonl: Path) -> str:
    """``image``'s ``file_name`` in ``jsonl``: relative to its folder, with ``/`` separators.

    Raises:
        OutputFileError: the image is not in that folder or below it.
    """
    relative = os.path.relpath(os.path.abspath(image), os.path.abspath(jsonl.parent))
    if relative == os.pardir or relative.startswith(os.pardir + os.sep) or os.path.isabs(relative):
        raise OutputFileError(f"{image} is outside {jsonl.parent}, the folder of {jsonl}; an imagefolder dataset lists "
                              "only files in its folder. Put metadata.jsonl at the dataset's root.",
                              parameter=_JSONL)
    return relative.replace(os.sep, "/")


def read_jsonl_caption(image: Path, jsonl: Path, column: str) -> str | None:
    """The caption ``jsonl`` holds for ``image``, or ``None``.

    Raises:
        OutputFileError: the file is a symbolic link, or a line other than the last is not JSON.
    """
    found = _read_jsonl(jsonl)
    if found.stat is None:
        return None
    name = jsonl_file_name(image, jsonl)
    for _, record in found.lines:
        if _same_name(record.get("file_name"), name):
            value = record.get(column)
            return value if isinstance(value, str) else None
    return None


def write_jsonl(
    image: Path, caption: str, *, jsonl: Path, column: str, text: TextOptions, if_exists: IfExists
) -> Action:
    """Add or update ``image``'s line in ``jsonl``.

    Raises:
        OutputFileError: the image is outside the file's folder, the file is a symbolic link, or a line other
            than the last is not JSON.
    """
    name = jsonl_file_name(image, jsonl)
    with files.folder_lock(jsonl.parent):
        found = _read_jsonl(jsonl)
        lines = found.lines
        index = next((i for i, (_, record) in enumerate(lines) if _same_name(record.get("file_name"), name)), None)
        existing = lines[index][1].get(column) if index is not None else None
        new, action = compose(existing if isinstance(existing, str) else None, caption, if_exists,
                              prefix=text.prefix, suffix=text.suffix)
        if new is None:
            return action
        if index is None:
            line = _json_line({"file_name": name, column: new})
            if found.size > found.good_end:
                files.truncate(jsonl, found.good_end, parameter=_JSONL)
            if found.good_end and not found.newline_at_good_end:
                line = b"\n" + line  # another program left the last line open
            files.append_bytes(jsonl, line, parameter=_JSONL)
            return action
        record = dict(lines[index][1])
        record[column] = new
        lines[index] = (_json_line(record), record)
        files.replace_file(jsonl, b"".join(line for line, _ in lines), original=found.stat)
    return action


def kohya_key(image: Path, style: KohyaKey) -> str:
    return image.stem if style == "stem" else os.fspath(image)


def read_kohya_caption(image: Path, path: Path, style: KohyaKey) -> str | None:
    entry = _read_kohya(path)[1].get(kohya_key(image, style))
    value = entry.get("caption") if isinstance(entry, dict) else None
    return value if isinstance(value, str) else None


def write_kohya(
    image: Path, caption: str, *, path: Path, style: KohyaKey, text: TextOptions, if_exists: IfExists
) -> Action:
    """Set ``image``'s caption in the kohya metadata JSON at ``path``.

    Raises:
        OutputFileError: the file is not a JSON object of objects.
    """
    key = kohya_key(image, style)
    with files.folder_lock(path.parent):
        found, metadata = _read_kohya(path)
        entry = metadata.get(key, {})
        if not isinstance(entry, dict):
            raise OutputFileError(f"{path} holds {type(entry).__name__} for {key!r}, not an object; fix or move the "
                                  "file.", parameter=_KOHYA)
        existing = entry.get("caption")
        new, action = compose(existing if isinstance(existing, str) else None, caption, if_exists,
                              prefix=text.prefix, suffix=text.suffix)
        if new is None:
            return action
        metadata[key] = {**entry, "caption": new}
        files.replace_file(path, (json.dumps(metadata, indent=2, ensure_ascii=False) + "\n").encode(), original=found)
    return action


@dataclass(frozen=True)
class _JsonlFile:
    """A ``metadata.jsonl`` as read."""

    lines: list[tuple[bytes, dict[str, Any]]]
    """The records as (line, record)."""
    good_end: int
    """Where the last complete record ends; a last line without its newline that does not parse (a killed
    append) is left out."""
    size: int
    newline_at_good_end: bool
    stat: os.stat_result | None = None
    """``None``: there is no file."""


def _read_jsonl(path: Path) -> _JsonlFile:
    read = files.read_own(path, parameter=_JSONL)
    if read is None:
        return _JsonlFile([], 0, 0, False)
    found, data = read
    lines: list[tuple[bytes, dict[str, Any]]] = []
    start = good_end = 0
    while start < len(data):
        newline = data.find(b"\n", start)
        end = len(data) if newline < 0 else newline + 1
        line = data[start:end]
        start = end
        if not line.strip():
            good_end = end
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError as err:
            if newline < 0:
                break  # the remains of a killed append
            raise OutputFileError(f"{path} has a line that is not a JSON object ending at byte {end} ({err}); fix or "
                                  "move the file.", parameter=_JSONL) from err
        lines.append((line if line.endswith(b"\n") else line + b"\n", record))
        good_end = end
    return _JsonlFile(lines, good_end, len(data), data[good_end - 1:good_end] == b"\n", found)


def _read_kohya(path: Path) -> tuple[os.stat_result | None, dict[str, Any]]:
    read = files.read_own(path, parameter=_KOHYA)
    if read is None:
        return None, {}
    found, data = read
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise OutputFileError(f"{path} is not UTF-8 JSON; fix or move it.", parameter=_KOHYA) from err
    if not text.strip():
        return found, {}
    try:
        metadata = json.loads(text)
    except ValueError as err:
        raise OutputFileError(f"{path} is not valid JSON ({err}); fix or move it.", parameter=_KOHYA) from err
    if not isinstance(metadata, dict):
        raise OutputFileError(f"{path} is not a kohya metadata file (a JSON object); fix or move it.",
                              parameter=_KOHYA)
    return found, metadata


def _json_line(record: dict[str, Any]) -> bytes:
    """One JSON line in UTF-8; a name that is not UTF-8 (``\\udcNN``) is kept as an escape, which ``datasets``
    reads back into the same file name."""
    try:
        return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(record) + "\n").encode("ascii")


def _same_name(stored: object, name: str) -> bool:
    return isinstance(stored, str) and posixpath.normpath(stored) == posixpath.normpath(name)
