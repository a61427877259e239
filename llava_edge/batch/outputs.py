"""Where batch records go: an append-only JSONL or CSV file, ``.txt`` sidecars, or the console.

A killed run never leaves a corrupt file. Each record is appended with a single ``write`` and the file
is fsynced at intervals and on close; reopening cuts off a truncated last record (the only damage a
kill can do) and reads the records already there, so that a rerun skips them. A sidecar is written to
a hidden temporary file beside the image and renamed over ``image.txt``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Self

from llava_edge.batch.runner import BatchRecord
from llava_edge.errors import OutputFileError

FORMATS = ("jsonl", "csv")
FSYNC_INTERVAL_S = 1.0
CSV_COLUMNS = (
    "image", "sha256", "model", "taskUUID", "text", "finishReason", "errorCode", "errorMessage", "errorParameter",
    "total_s", "first_token_s", "image_tokens", "prompt_tokens", "generated_tokens",
)

_Entry = tuple[tuple[str, str] | None, int]
"""A record found in a file: its resume key (``None`` when it does not parse) and the offset of its end."""
_HEADER = ("", "")
"""The key of a good entry that is no record (the CSV header)."""


class _AppendLog:
    """An append-only file of records: resume keys, tail repair, one write per record, periodic fsync."""

    def __init__(self, path: str | os.PathLike[str], *, fsync_interval_s: float = FSYNC_INTERVAL_S):
        self.path = Path(path)
        self.fsync_interval_s = fsync_interval_s
        self.repaired_bytes = 0
        """Bytes of a truncated last record cut off when the file was opened."""
        self._keys: set[tuple[str, str]] = set()
        self._images: set[str] = set()
        created = not self.path.exists()
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            _lock(self._fd, self.path)
            self._recover()
            if created:
                _fsync_directory(self.path.parent)
        except BaseException:
            os.close(self._fd)
            raise
        self._synced_at = time.monotonic()

    def done(self, image: str, digest: Callable[[], str]) -> bool:
        return image in self._images and (image, digest()) in self._keys

    def write(self, record: BatchRecord) -> None:
        """Append ``record`` unless the file already holds its key."""
        if record.key in self._keys:
            return
        self._append(self._encode(record))
        self._remember(record.key)
        if time.monotonic() - self._synced_at >= self.fsync_interval_s:
            self._sync()

    def close(self) -> None:
        if self._fd is not None:
            self._sync()
            os.close(self._fd)
            self._fd = None

    def _encode(self, record: BatchRecord) -> bytes:
        raise NotImplementedError

    def _entries(self, data: bytes) -> Iterator[_Entry]:
        raise NotImplementedError

    def _start(self) -> None:
        """Write what an empty file begins with."""

    def _recover(self) -> None:
        with open(self.path, "rb") as existing:
            data = existing.read()
        end = self._scan(self._entries(data))
        if end < len(data):
            assert self._fd is not None
            os.ftruncate(self._fd, end)
            os.fsync(self._fd)
            self.repaired_bytes = len(data) - end
        if end == 0:
            self._start()

    def _scan(self, entries: Iterable[_Entry]) -> int:
        """Keep the keys of the good records; return where the last one ends. Records that do not parse
        are the remains of a killed run only at the end of the file; anywhere else the file is corrupt."""
        end, bad_at = 0, None
        for key, entry_end in entries:
            if key is None:
                bad_at = end if bad_at is None else bad_at
                continue
            if bad_at is not None:
                raise OutputFileError(
                    f"{self.path} has a record that does not parse after byte {bad_at}, followed by good ones. "
                    "Fix or move the file, or write to another --out."
                )
            self._remember(key)
            end = entry_end
        return end

    def _remember(self, key: tuple[str, str]) -> None:
        if key == _HEADER:
            return
        self._keys.add(key)
        self._images.add(key[0])

    def _append(self, data: bytes) -> None:
        assert self._fd is not None, "the file is closed"
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def _sync(self) -> None:
        assert self._fd is not None
        os.fsync(self._fd)
        self._synced_at = time.monotonic()


class JsonlWriter(_AppendLog):
    """One JSON object per line (``BatchRecord.to_json``)."""

    def _encode(self, record: BatchRecord) -> bytes:
        return (json.dumps(record.to_json(), ensure_ascii=False) + "\n").encode()

    def _entries(self, data: bytes) -> Iterator[_Entry]:
        for line, end in _lines(data):
            if line.strip():
                yield _json_key(line), end


class CsvWriter(_AppendLog):
    """A header row of ``CSV_COLUMNS``, then one row per record (captions may span lines, quoted)."""

    def _encode(self, record: BatchRecord) -> bytes:
        return _csv_line(_csv_row(record))

    def _start(self) -> None:
        self._append(_csv_line(list(CSV_COLUMNS)))

    def _entries(self, data: bytes) -> Iterator[_Entry]:
        consumed = 0

        def complete_lines() -> Iterator[str]:
            nonlocal consumed
            for line, consumed in _lines(data):  # noqa: B007 - assigns the nonlocal offset read after each yield
                yield line.decode("utf-8", "replace")

        reader = csv.reader(complete_lines(), strict=True)
        header = next(reader, None)
        if header is None:
            return
        if tuple(header) != CSV_COLUMNS:
            raise OutputFileError(f"{self.path} is not a llava-edge CSV (its header is {header[:4]}...). "
                                  "Write to another --out.")
        yield _HEADER, consumed
        try:
            for row in reader:
                yield ((row[0], row[1]) if len(row) == len(CSV_COLUMNS) else None), consumed
        except csv.Error as err:
            if consumed < data.rfind(b"\n") + 1:
                raise OutputFileError(f"{self.path} is not valid CSV ({err}, before byte {consumed}). "
                                      "Fix or move the file, or write to another --out.") from err
            yield None, consumed


class SidecarWriter:
    """Writes each caption to ``<image without suffix>.txt`` beside the image, atomically.

    Error records leave no file. An image counts as done when its sidecar exists and is not older than
    the image (sidecars hold only the caption, so there is no hash to compare).
    """

    def done(self, image: str, digest: Callable[[], str]) -> bool:
        try:
            return os.stat(sidecar_path(image)).st_mtime >= os.stat(image).st_mtime
        except OSError:
            return False

    def write(self, record: BatchRecord) -> None:
        if record.text is not None:
            write_atomically(Path(sidecar_path(record.image)), record.text.encode())

    def close(self) -> None:
        pass


class ConsoleWriter:
    """Prints captions to stdout (text, or one JSON object per image) and errors to stderr (or stdout as
    JSON). Keeps nothing, so it never reports an image done."""

    def __init__(self, *, as_json: bool = False, with_names: bool = False, captions: bool = True):
        self.as_json, self.with_names, self.captions = as_json, with_names, captions

    def done(self, image: str, digest: Callable[[], str]) -> bool:
        return False

    def write(self, record: BatchRecord) -> None:
        if record.error is not None:
            self._error(record)
        elif not self.captions:
            return
        elif self.as_json:
            timings = record.to_json()["timings"]
            _print({"image": record.image, "text": record.text, "model": record.model,
                    "finishReason": record.finish_reason, "timings": timings})
        else:
            print(f"{record.image}: {record.text}" if self.with_names else record.text, flush=True)

    def close(self) -> None:
        pass

    def _error(self, record: BatchRecord) -> None:
        assert record.error is not None
        if self.as_json:
            _print({"image": record.image, "error": record.error})
        else:
            print(f"{record.image}: error: {record.error['message']} [{record.error['code']}]",
                  file=sys.stderr, flush=True)


class Sinks:
    """Several writers as one sink: an image is done when every file writer holds it."""

    def __init__(self, files: list[_AppendLog | SidecarWriter], console: ConsoleWriter | None = None):
        self.files, self.console = files, console

    def done(self, image: str, digest: Callable[[], str]) -> bool:
        return bool(self.files) and all(writer.done(image, digest) for writer in self.files)

    def write(self, record: BatchRecord) -> None:
        for writer in self.files:
            writer.write(record)
        if self.console is not None:
            self.console.write(record)

    def close(self) -> None:
        for writer in self.files:
            writer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_sinks(
    images: list[str], *, out: str | os.PathLike[str] | None = None, out_format: str | None = None,
    sidecar: bool = False, as_json: bool = False,
) -> Sinks:
    """The sinks for a ``caption`` run: the ``out`` file (JSONL or CSV, from ``out_format`` or the suffix),
    sidecars, and the console when there is no ``out`` (captions too, unless they go to sidecars).

    Raises:
        OutputFileError: ``out`` is corrupt, of another format or in use; sidecars would collide.
    """
    if sidecar:
        check_sidecars(images)
    files: list[_AppendLog | SidecarWriter] = [SidecarWriter()] if sidecar else []
    if out is not None:
        chosen = out_format or ("csv" if Path(out).suffix.lower() == ".csv" else "jsonl")
        files.insert(0, CsvWriter(out) if chosen == "csv" else JsonlWriter(out))
        return Sinks(files)
    return Sinks(files, ConsoleWriter(as_json=as_json, with_names=len(images) > 1, captions=not sidecar))


def sidecar_path(image: str) -> str:
    """``photos/cat.jpg`` -> ``photos/cat.txt``."""
    return os.path.splitext(image)[0] + ".txt"


def check_sidecars(images: list[str]) -> None:
    """Sidecars need local files, and two images must not share one (``cat.jpg`` and ``cat.png``)."""
    owners: dict[str, str] = {}
    for image in images:
        if not os.path.isfile(image):
            raise OutputFileError(f"--sidecar writes beside image files, and {image[:200]} is not one.")
        other = owners.setdefault(sidecar_path(image), image)
        if other != image:
            raise OutputFileError(f"{other} and {image} would share the sidecar {sidecar_path(image)}. "
                                  "Rename one, or write to --out instead.")


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old file or the new one, never a mix."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _lines(data: bytes) -> Iterator[tuple[bytes, int]]:
    """Complete lines (ending in a newline) with the offset just past each; a partial tail is left out."""
    start = 0
    while (newline := data.find(b"\n", start)) >= 0:
        yield data[start:newline + 1], newline + 1
        start = newline + 1


def _json_key(line: bytes) -> tuple[str, str] | None:
    try:
        record = json.loads(line)
        return str(record["image"]), record.get("sha256") or ""
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _csv_row(record: BatchRecord) -> list[Any]:
    item = record.error or record.response or {}
    timings = record.to_json().get("timings") or {}
    error = record.error or {}
    return [
        record.image, record.sha256 or "", record.model or "", item.get("taskUUID", ""), record.text or "",
        record.finish_reason or "", error.get("code", ""), error.get("message", ""), error.get("parameter", ""),
        *(timings.get(name, "") for name in CSV_COLUMNS[9:]),
    ]


def _csv_line(row: list[Any]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(row)
    return buffer.getvalue().encode()


def _print(record: dict[str, Any]) -> None:
    print(json.dumps(record, ensure_ascii=False), flush=True)


def _lock(fd: int, path: Path) -> None:
    """One run per output file: a second one would write every record twice."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows has no flock; runs are not guarded there
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OutputFileError(
            f"Another llava-edge run is writing to {path}. Wait for it, or use another --out."
        ) from None


def _fsync_directory(directory: Path) -> None:
    """Make a new file's directory entry durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
