"""Where batch records go: an ``--out`` file (``record_files``: append-only JSONL or CSV), ``.txt`` sidecars, or
the console, as one sink (``open_sinks``).

A sidecar holds only the caption; it is written through the one writer of text sidecars
(``photos.text_sidecar``: a hidden temporary file beside the image, renamed over ``image.txt``).
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from llava_edge.batch.record_files import AppendLog, CsvWriter, JsonlWriter
from llava_edge.batch.records import BatchRecord, json_text, printable_name
from llava_edge.errors import OutputFileError
from llava_edge.photos.text_sidecar import PLAIN_EXTENSION, replace_text_sidecar, text_sidecar_path


class SidecarWriter:
    """Writes each caption to ``<image without suffix>.txt`` beside the image, atomically, through the one
    writer of text sidecars (``photos.text_sidecar.replace_text_sidecar``).

    Error records leave no file. An image counts as done when its sidecar exists and is not older than
    the image (sidecars hold only the caption, so there is no hash to compare). An image whose sidecar
    would be the image itself (``scan.txt``) or another input image (``cat.txt`` beside ``cat.jpg``) is
    refused before the run by ``check_sidecars``; this writer never counts an image done by its own file,
    nor writes a caption over it.
    """

    def done(self, image: str, digest: Callable[[], str]) -> bool:
        try:
            sidecar, source = os.lstat(sidecar_path(image)), os.stat(image)  # a link is no sidecar of ours
        except OSError:
            return False
        return (stat.S_ISREG(sidecar.st_mode) and not os.path.samestat(sidecar, source)
                and sidecar.st_mtime >= source.st_mtime)

    def write(self, record: BatchRecord) -> None:
        if record.text is None:
            return
        sidecar = sidecar_path(record.image)
        if _same_file(sidecar, record.image):
            raise OutputFileError(_over_itself(record.image, sidecar))
        replace_text_sidecar(Path(record.image), record.text)

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
            data = {"data": record.data} if record.data is not None else {}
            _print({"image": record.image, "text": record.text, "model": record.model,
                    "finishReason": record.finish_reason, "timings": timings, **data})
        else:
            print(f"{printable_name(record.image)}: {record.text}" if self.with_names else record.text, flush=True)

    def close(self) -> None:
        pass

    def _error(self, record: BatchRecord) -> None:
        assert record.error is not None
        if self.as_json:
            _print({"image": record.image, "error": record.error})
        else:
            message = printable_name(f"{record.image}: error: {record.error['message']} [{record.error['code']}]")
            print(message, file=sys.stderr, flush=True)


class Sinks:
    """Several writers as one sink: an image is done when every file writer holds it."""

    def __init__(self, files: list[AppendLog | SidecarWriter], console: ConsoleWriter | None = None):
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
    files: list[AppendLog | SidecarWriter] = [SidecarWriter()] if sidecar else []
    if out is not None:
        chosen = out_format or ("csv" if Path(out).suffix.lower() == ".csv" else "jsonl")
        files.insert(0, CsvWriter(out) if chosen == "csv" else JsonlWriter(out))
        return Sinks(files)
    return Sinks(files, ConsoleWriter(as_json=as_json, with_names=len(images) > 1, captions=not sidecar))


def sidecar_path(image: str) -> str:
    """``photos/cat.jpg`` -> ``photos/cat.txt`` (``text_sidecar.text_sidecar_path``)."""
    return str(text_sidecar_path(Path(image), PLAIN_EXTENSION))


def check_sidecars(images: list[str]) -> None:
    """Sidecars need local files; two images must not share one (``cat.jpg`` and ``cat.png``), and no
    sidecar may be an input image: ``scan.txt``'s own, or ``cat.jpg``'s when ``cat.txt`` is an input too.
    Its caption would replace that image, and a rerun would count the image done without a caption.

    Raises:
        OutputFileError: naming the images and what to rename; nothing was captioned.
    """
    inputs: dict[tuple[int, int], str] = {}
    for image in images:
        try:
            found = os.stat(image)
        except (OSError, ValueError):
            found = None
        if found is None or not stat.S_ISREG(found.st_mode):
            raise OutputFileError(f"--sidecar writes beside image files, and {printable_name(image[:200])} is not one.")
        inputs.setdefault((found.st_dev, found.st_ino), image)
    owners: dict[str, str] = {}
    for image in images:
        sidecar = sidecar_path(image)
        other = owners.setdefault(os.path.normcase(os.path.abspath(sidecar)), image)
        if other != image:
            raise OutputFileError(printable_name(f"{other} and {image} would share the sidecar {sidecar}. "
                                                 "Rename one, or write to --out instead."))
        try:
            existing = os.stat(sidecar)
        except (OSError, ValueError):
            continue
        taken = inputs.get((existing.st_dev, existing.st_ino))
        if taken is not None:
            raise OutputFileError(_over_itself(image, sidecar) if _same_file(taken, image) else printable_name(
                f"--sidecar would write the caption of {image} over the input image {taken} (its sidecar is "
                f"{sidecar}). Rename one of them, or write to --out instead."))


def _over_itself(image: str, sidecar: str) -> str:
    return printable_name(f"--sidecar would write the caption of {image} over that image itself (its sidecar is "
                          f"{sidecar}). Rename the image to its real suffix (.png, .jpg, ...), or write to --out "
                          "instead.")


def _same_file(first: str, second: str) -> bool:
    try:
        return os.path.samefile(first, second)
    except (OSError, ValueError):
        return False


def _print(record: dict[str, Any]) -> None:
    print(json_text(record), flush=True)


