"""The ``--out`` files of a batch: an append-only JSONL or CSV file of records that a rerun resumes.

A killed run never leaves a corrupt file. Each record is appended with a single ``write`` and the file
is fsynced at intervals and on close; reopening cuts off a truncated last record (the only damage a
kill can do) and reads the records already there, so that a rerun skips them. The file is never opened
through a symbolic link (``photos.files.open_own``): an ``--out`` in a dataset folder could be a link planted
there, leading to a file outside.

Both files are UTF-8 text whatever the file names. JSONL keeps every value exactly (a name that is not
UTF-8 as ``\\udcXX`` escapes, see ``records.json_text``). CSV is for spreadsheets: a byte of a name that
is not UTF-8 is written ``\\xNN`` (``records.printable_name``), and a text cell that a spreadsheet would run
as a formula is neutralised (``CsvWriter``). A rerun matches each image by its name written that way.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from llava_edge.batch.records import BatchRecord, json_text, printable_name
from llava_edge.errors import OutputFileError
from llava_edge.host.files import acquire_lock
from llava_edge.photos.files import open_own, read_all

FORMATS = ("jsonl", "csv")
FSYNC_INTERVAL_S = 1.0
CSV_COLUMNS = (
    "image", "sha256", "model", "taskUUID", "text", "finishReason", "errorCode", "errorMessage", "errorParameter",
    "total_s", "first_token_s", "image_tokens", "prompt_tokens", "generated_tokens", "data",
)
"""``data``: the parsed answer as JSON, in runs with a schema (empty when there is none or it was cut)."""
_TIMING_COLUMNS = CSV_COLUMNS[9:-1]
_CSV_COLUMNS_BEFORE_DATA = CSV_COLUMNS[:-1]
"""The header of files written before ``data`` was added: a rerun appends to them without it."""

_Entry = tuple[tuple[str, str] | None, int]
"""A record found in a file: its resume key (``None`` when it does not parse) and the offset of its end."""
_HEADER = ("", "")
"""The key of a good entry that is no record (the CSV header)."""
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")
"""Cells a spreadsheet may run as a formula (OWASP CSV injection), and ``'`` so the escape can be undone."""


class AppendLog:
    """An append-only file of records: resume keys, tail repair, one write per record, periodic fsync."""

    def __init__(self, path: str | os.PathLike[str], *, fsync_interval_s: float = FSYNC_INTERVAL_S):
        self.path = Path(path)
        self.fsync_interval_s = fsync_interval_s
        self.repaired_bytes = 0
        """Bytes of a truncated last record cut off when the file was opened."""
        self._keys: set[tuple[str, str]] = set()
        self._images: set[str] = set()
        created = not os.path.lexists(self.path)
        self._release_lock = _lock(self.path)
        try:
            self._fd: int | None = open_own(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, mode=0o644)
        except BaseException:
            self._release_lock()
            raise
        try:
            self._recover()
            if created:
                _fsync_directory(self.path.parent)
        except BaseException:
            os.close(self._fd)
            self._release_lock()
            raise
        self._synced_at = time.monotonic()

    def done(self, image: str, digest: Callable[[], str]) -> bool:
        name = self._stored_name(image)
        return name in self._images and (name, digest()) in self._keys

    def write(self, record: BatchRecord) -> None:
        """Append ``record`` unless the file already holds its key."""
        key = (self._stored_name(record.image), record.key[1])
        if key in self._keys:
            return
        self._append(self._encode(record))
        self._remember(key)
        if time.monotonic() - self._synced_at >= self.fsync_interval_s:
            self._sync()

    def close(self) -> None:
        if self._fd is not None:
            self._sync()
            os.close(self._fd)
            self._fd = None
            self._release_lock()

    def _encode(self, record: BatchRecord) -> bytes:
        raise NotImplementedError

    def _stored_name(self, image: str) -> str:
        """``image`` as the file writes it, to compare with the names read back."""
        return image

    def _entries(self, data: bytes) -> Iterator[_Entry]:
        raise NotImplementedError

    def _start(self) -> None:
        """Write what an empty file begins with."""

    def _recover(self) -> None:
        assert self._fd is not None
        data = read_all(self._fd)
        end = self._scan(self._entries(data))
        if end < len(data):
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


class JsonlWriter(AppendLog):
    """One JSON object per line (``BatchRecord.to_json``)."""

    def _encode(self, record: BatchRecord) -> bytes:
        return (json_text(record.to_json()) + "\n").encode()

    def _entries(self, data: bytes) -> Iterator[_Entry]:
        for line, end in _lines(data):
            if line.strip():
                yield _json_key(line), end


class CsvWriter(AppendLog):
    """A header row of ``CSV_COLUMNS``, then one row per record (captions may span lines, quoted).

    Text cells (names, captions, error messages) that begin with ``=``, ``+``, ``-``, ``@``, a tab or a
    carriage return get a ``'`` in front, as OWASP recommends against formula injection, and so do cells
    that begin with ``'``: drop one leading ``'`` to get the value back. Bytes of a file name that are not
    UTF-8 are written ``\\xNN``. Numbers are written as they are.
    """

    _columns: tuple[str, ...] = CSV_COLUMNS

    def _encode(self, record: BatchRecord) -> bytes:
        return _csv_line(_csv_row(record)[:len(self._columns)])

    def _stored_name(self, image: str) -> str:
        return _csv_text(image)

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
        if tuple(header) not in (CSV_COLUMNS, _CSV_COLUMNS_BEFORE_DATA):
            raise OutputFileError(f"{self.path} is not a llava-edge CSV (its header is {header[:4]}...). "
                                  "Write to another --out.")
        self._columns = tuple(header)
        yield _HEADER, consumed
        try:
            for row in reader:
                yield ((row[0], row[1]) if len(row) == len(self._columns) else None), consumed
        except csv.Error as err:
            if consumed < data.rfind(b"\n") + 1:
                raise OutputFileError(f"{self.path} is not valid CSV ({err}, before byte {consumed}). "
                                      "Fix or move the file, or write to another --out.") from err
            yield None, consumed


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
    text = [
        record.image, record.sha256 or "", record.model or "", item.get("taskUUID", ""), record.text or "",
        record.finish_reason or "", error.get("code", ""), error.get("message", ""), error.get("parameter", ""),
    ]
    data = "" if record.data is None else _csv_text(json.dumps(record.data, ensure_ascii=False))
    return [*(_csv_text(str(cell)) for cell in text), *(timings.get(name, "") for name in _TIMING_COLUMNS), data]


def _csv_text(value: str) -> str:
    """A text cell as ``CsvWriter`` writes it: printable, and never a formula."""
    value = printable_name(value)
    return "'" + value if value.startswith(_FORMULA_START) else value


def _csv_line(row: list[Any]) -> bytes:
    buffer = io.StringIO()
    # csv quotes a cell holding "\n" but not one holding only "\r", which readers take for a line end
    if any("\r" in str(cell) for cell in row):
        csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL).writerow(row)
    else:
        csv.writer(buffer, lineterminator="\n").writerow(row)
    return buffer.getvalue().encode()


def _lock(path: Path) -> Callable[[], None]:
    """One run per output file (a second one would write every record twice): the lock file
    ``.<name>.lock`` beside it, held until the file is closed; returns its release.

    Raises:
        OutputFileError: another run holds it.
    """
    try:
        release = acquire_lock(path.parent / f".{path.name}.lock", wait=False)
    except OSError:  # a folder where no lock file can be made: the run is not guarded
        return lambda: None
    if release is None:
        raise OutputFileError(f"Another llava-edge run is writing to {path}. Wait for it, or use another --out.")
    return release


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
