"""Caption many images with one loaded model.

``discover_images`` turns folders and globs into image paths, ``caption_many`` captions them one by
one and yields a ``BatchRecord`` per image (a bad image becomes an error record; the run goes on),
and ``run_batch`` writes the records to a sink with a progress bar and counts them. A record is keyed
by its image name and the sha256 of its bytes, so a rerun can skip what an output already holds.

A file name that is not valid UTF-8 (``b"caf\\xe9.png"`` on Linux) is the ``str`` Python gives for it,
each undecodable byte a lone surrogate (``os.fsdecode``: ``"caf\\udce9.png"``). ``json_text`` writes it
as the JSON escape ``\\udce9``, so the text stays valid UTF-8 and ``json.loads`` gives the exact name
back (and ``os.fsencode`` the exact bytes). ``printable_name`` writes it ``caf\\xe9.png`` for people
(CSV cells, the console, messages).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

from tqdm.auto import tqdm  # type: ignore[import-untyped,unused-ignore]

from llava_edge.api import CaptionDone, Captioner, CaptionResult, SchemaInput, structured_output
from llava_edge.errors import LlavaEdgeError
from llava_edge.events import Progress, StageView, TextDelta
from llava_edge.generation import GenerationOptions, RuntimeOptions, Timings
from llava_edge.images import ImageInput, ImageLimits, read_image_bytes
from llava_edge.schema import RESPONSE_TASK_TYPE, caption_response

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})
"""Files a folder or glob contributes; explicit file arguments are taken whatever their name."""
BATCH_RUNTIME = RuntimeOptions(prefix_cache_bytes=0)
"""How ``caption_many`` loads a model itself. The image-prefix cache is off: a batch sees each image
once, and the cache would keep every image's evaluated state (memory growing image after image)."""
_GLOB_CHARS = re.compile(r"[*?[]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_TIMING_FIELDS = frozenset(field.name for field in fields(Timings))

Skip = Callable[[str, Callable[[], str]], bool]
"""``skip(name, digest)``: True when the image ``name`` whose sha256 ``digest()`` returns is done."""


@dataclass(frozen=True)
class ImageItem:
    """One image of a batch: ``name`` goes in the record and the resume key; ``source`` is what is read
    (a path, URL, data URI or the bytes themselves)."""

    name: str
    source: ImageInput


@dataclass(frozen=True)
class BatchRecord:
    """The outcome for one image: a Runware response item, or a Runware error item."""

    image: str
    """The image's name; a file name that is not UTF-8 keeps its bytes as lone surrogates."""
    sha256: str | None
    """Of the encoded image bytes; ``None`` when they could not be read."""
    model: str | None = None
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    finish_reason: str | None = None
    timings: Timings | None = None
    skipped: bool = False
    """Already in the output of an earlier run; nothing was computed or written."""
    photo: dict[str, Any] | None = None
    """Where the caption was written besides the output (``PhotoRecord.to_json``); with ``--write-metadata`` and
    friends only. ``sha256`` is then of the image as the run left it, so that a rerun finds it done."""
    data: Any = None
    """With a schema: the answer's parsed JSON value (``None`` when it was cut by max_tokens)."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str | None:
        return self.response["text"] if self.response is not None else None

    @property
    def key(self) -> tuple[str, str]:
        """The resume key: image name and content hash ("" when the image could not be read)."""
        return self.image, self.sha256 or ""

    def to_json(self) -> dict[str, Any]:
        """The output record: ``{image, sha256, model, response, finishReason, timings[, data]}`` or
        ``{image, sha256, error}`` (``data``: the parsed answer, in runs with a schema)."""
        record: dict[str, Any] = {"image": self.image, "sha256": self.sha256}
        if self.error is not None:
            return {**record, "error": self.error}
        timings = asdict(self.timings) if self.timings is not None else None
        photo = {"photo": self.photo} if self.photo is not None else {}
        data = {"data": self.data} if self.data is not None else {}
        return {**record, "model": self.model, "response": self.response, "finishReason": self.finish_reason,
                "timings": timings, **data, **photo}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> BatchRecord:
        """The inverse of ``to_json``; timing fields this version does not know are dropped."""
        timings = record.get("timings")
        return cls(
            image=record["image"], sha256=record.get("sha256"), model=record.get("model"),
            response=record.get("response"), error=record.get("error"), finish_reason=record.get("finishReason"),
            timings=Timings(**{k: v for k, v in timings.items() if k in _TIMING_FIELDS}) if timings else None,
            photo=record.get("photo"), data=record.get("data"),
        )


class PhotoHook(Protocol):
    """The per-image photo step (``photo_step.PhotoStep``): asked before the model runs, called after."""

    def described(self, image: str) -> bool: ...

    def write(self, captioner: Captioner, image: str, data: bytes, result: CaptionResult, detail: str,
              options: GenerationOptions | None) -> dict[str, Any]: ...


class Sink(Protocol):
    """Where records go (files, the console). ``done`` answers the resume question."""

    def done(self, image: str, digest: Callable[[], str]) -> bool: ...

    def write(self, record: BatchRecord) -> None: ...


@dataclass
class BatchSummary:
    """What a batch run did."""

    captioned: int = 0
    failed: int = 0
    skipped: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    """Stopped by Ctrl-C or SIGTERM; what was written is complete, and a rerun resumes."""

    def count(self, record: BatchRecord) -> None:
        if record.skipped:
            self.skipped += 1
        elif record.ok:
            self.captioned += 1
        else:
            self.failed += 1

    @property
    def images_per_s(self) -> float:
        done = self.captioned + self.failed
        return done / self.elapsed_s if self.elapsed_s > 0 else 0.0


def discover_images(sources: Iterable[str], *, recursive: bool = False) -> list[str]:
    """Expand folders and glob patterns into image files; keep other sources (files, URLs, data URIs).

    A folder gives its image files (by suffix, hidden ones left out), in sorted order, and those of its
    subfolders with ``recursive``; a glob gives its matching image files (``**`` with ``recursive``).
    Duplicates are dropped, the first occurrence kept.
    """
    found: dict[str, None] = {}
    for source in sources:
        for name in _expand(source, recursive):
            found.setdefault(name, None)
    return list(found)


def caption_many(
    images: Iterable[str | os.PathLike[str] | ImageItem],
    prompt: str | None = None,
    *,
    captioner: Captioner | None = None,
    model: str | None = None,
    detail: str = "auto",
    options: GenerationOptions | None = None,
    skip: Skip | None = None,
    on_event: Callable[[str, Progress | TextDelta], None] | None = None,
    stop: threading.Event | None = None,
    photo: PhotoHook | None = None,
    schema: SchemaInput | None = None,
) -> Iterator[BatchRecord]:
    """Caption images one after another with one loaded model, yielding a record as each completes.

    An image that cannot be read or captioned (corrupt, unsupported, too large) yields an error record
    carrying its Runware error item; the run goes on. Each record's taskUUID is derived from the image
    name and content, so the same image gets the same taskUUID in every run.

    Args:
        images: paths, URLs, data URIs, or ``ImageItem(name, source)``.
        prompt: the instruction (default: a detailed description).
        captioner: a loaded ``Captioner`` to use; without one, ``model`` is loaded (with
            ``BATCH_RUNTIME``) and closed when the generator finishes.
        model: the model to load when no ``captioner`` is given.
        detail, options: as for ``Captioner.describe``.
        skip: ``skip(name, digest)``; images it reports done yield a record with ``skipped=True``.
        on_event: ``on_event(name, event)`` for each ``Progress`` and ``TextDelta`` of the image in hand.
        stop: once set, the image in hand is abandoned at its next step (a tile, a prefill batch or a
            token) and the run ends without a record for it.
        photo: writes each caption into the image, sidecars and dataset files; an image counts as done when
            ``photo.described`` says so (and ``skip`` too, when given), and its errors become error records.
        schema: a JSON Schema, ``"photo"`` or a ``StructuredOutput``: each answer is JSON that follows it, and
            its record carries the parsed value (``data``). Checked before any image (``SchemaError``).
    """
    structure = structured_output(schema)
    owned = captioner is None
    loaded = captioner if captioner is not None else Captioner(model, runtime=BATCH_RUNTIME)
    job = _Job(prompt, detail, options, on_event, stop, photo, structure)
    try:
        for image in images:
            if stop is not None and stop.is_set():
                return
            item = image if isinstance(image, ImageItem) else ImageItem(os.fspath(image), image)
            record = _caption_one(loaded, item, job, skip)
            if record is None:
                return
            yield record
    finally:
        if owned:
            loaded.close()


def run_batch(
    records: Iterable[BatchRecord], sink: Sink, *, total: int, progress: bool | None = None,
    stop: threading.Event | None = None, stage: ImageStage | None = None,
) -> BatchSummary:
    """Write records to ``sink`` as they come, with a progress bar, until done or interrupted.

    Args:
        records: from ``caption_many`` or a Ray dataset.
        total: how many records to expect (for the bar's ETA; skipped ones are taken off).
        progress: show the bar; ``None`` shows it only when stderr is a terminal.
        stop: once set (by a signal handler, say), the run ends after the record in hand (``caption_many``
            given the same event ends sooner, abandoning the image in hand).
        stage: shows the image in hand's stage beside the bar (pass it to ``caption_many`` as ``on_event``).
    """
    summary = BatchSummary()
    started = time.perf_counter()
    with tqdm(total=total, unit="img", disable=None if progress is None else not progress) as bar:
        if stage is not None:
            stage.bar = bar
        try:
            for record in records:
                summary.count(record)
                if record.skipped:
                    bar.total -= 1
                    bar.refresh()
                    continue
                sink.write(record)
                bar.set_postfix(failed=summary.failed, refresh=False)
                bar.update()
                if stop is not None and stop.is_set():
                    summary.interrupted = True
                    break
        except KeyboardInterrupt:
            summary.interrupted = True
        if stop is not None and stop.is_set():
            summary.interrupted = True
        if stage is not None:
            stage.bar = None
            bar.set_description_str("", refresh=False)
    summary.elapsed_s = time.perf_counter() - started
    return summary


class ImageStage:
    """``caption_many``'s ``on_event`` that shows the image in hand's stage (``CLIP 3/5 tiles · prefill
    1,152/2,890 tokens · ETA 0:42``, then the tokens generated) as the description of ``run_batch``'s bar,
    at most ``per_second`` times a second. Shows nothing while it has no bar or the bar is off."""

    def __init__(self, *, per_second: float = 8.0):
        self.bar: Any = None
        self._interval = 1.0 / per_second
        self._image: str | None = None
        self._view = StageView()
        self._shown = 0.0

    def __call__(self, image: str, event: Progress | TextDelta) -> None:
        if self.bar is None or self.bar.disable:
            return
        if image != self._image:
            self._image, self._view = image, StageView()
        self._view.update(event)
        now = time.monotonic()
        if now - self._shown >= self._interval:
            self._shown = now
            name = printable_name(os.path.basename(image) or image)
            self.bar.set_description_str(f"{name}: {self._view.line()}", refresh=True)


def read_item(item: ImageItem, limits: ImageLimits, store: Any = None) -> tuple[bytes, str]:
    """The encoded bytes of an image and their sha256.

    Raises:
        InvalidImageError: the image cannot be read or breaks ``limits.max_bytes``.
    """
    data = read_image_bytes(item.source, limits=limits, store=store)
    return data, hashlib.sha256(data).hexdigest()


def item_digest(item: ImageItem, limits: ImageLimits | None = None) -> str:
    """The resume hash of an image as ``caption_many`` computes it ("" when it cannot be read)."""
    try:
        return read_item(item, limits or ImageLimits())[1]
    except LlavaEdgeError:
        return ""


def task_uuid_for(name: str, sha256: str) -> str:
    """A UUID v4-format taskUUID derived from the image name and content (stable across runs)."""
    digest = hashlib.sha256(f"{name}\0{sha256}".encode("utf-8", "surrogatepass")).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def json_text(value: Any) -> str:
    """``value`` as one line of JSON, non-ASCII text as it is, and lone surrogates (the undecodable bytes
    of a file name) as ``\\udcXX`` escapes: valid UTF-8 that ``json.loads`` turns back into the same value."""
    text = json.dumps(value, ensure_ascii=False)  # a surrogate can only be inside a string here
    return _SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def printable_name(name: str) -> str:
    """``name`` as valid text, as ``ls -b`` shows it: each byte of a file name that is not UTF-8 (a lone
    surrogate ``\\udcNN``) as ``\\xNN``, any other lone surrogate as ``\\uNNNN``; other names unchanged."""
    return _SURROGATE.sub(_escape_surrogate, name)


def _escape_surrogate(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


@dataclass(frozen=True)
class _Job:
    """What every image of a ``caption_many`` run shares."""

    prompt: str | None
    detail: str
    options: GenerationOptions | None
    on_event: Callable[[str, Progress | TextDelta], None] | None
    stop: threading.Event | None
    photo: PhotoHook | None = None
    schema: SchemaInput | None = None


def _describe(captioner: Captioner, item: ImageItem, data: bytes, job: _Job) -> CaptionResult | None:
    """Caption one image, passing its events on; ``None`` when ``job.stop`` was set part-way."""
    events = captioner.stream(data, job.prompt, detail=job.detail, options=job.options, schema=job.schema)
    with closing(events):
        for event in events:
            if isinstance(event, CaptionDone):
                return event.result
            if job.stop is not None and job.stop.is_set():
                return None
            if job.on_event is not None:
                job.on_event(item.name, event)
    raise AssertionError("the caption ended without a result")  # pragma: no cover


def _caption_one(captioner: Captioner, item: ImageItem, job: _Job, skip: Skip | None) -> BatchRecord | None:
    """The record for one image; ``None`` when the run was stopped while it was being captioned."""
    failure: LlavaEdgeError | None = None
    try:
        data, sha256 = read_item(item, captioner.image_limits, captioner.image_store)
    except LlavaEdgeError as err:
        data, sha256, failure = b"", "", err
    try:
        done = _done(item, sha256, job.photo, skip)
    except LlavaEdgeError as err:
        done, failure = False, failure or err
    if done:
        return BatchRecord(item.name, sha256 or None, skipped=True)
    task_uuid = task_uuid_for(item.name, sha256)
    if failure is None:
        try:
            result = _describe(captioner, item, data, job)
            if result is None:
                return None
            photo = None
            if job.photo is not None:
                photo = job.photo.write(captioner, item.name, data, result, job.detail, job.options)
                sha256 = item_digest(item, captioner.image_limits) or sha256
        except LlavaEdgeError as err:
            failure = err
        else:
            return BatchRecord(
                item.name, sha256, model=result.model, response=caption_response(task_uuid, result.text),
                finish_reason=result.finish_reason, timings=result.timings, photo=photo, data=result.data,
            )
    error = failure.to_runware(task_type=RESPONSE_TASK_TYPE, task_uuid=task_uuid)
    return BatchRecord(item.name, sha256 or None, error=error)


def _done(item: ImageItem, sha256: str, photo: PhotoHook | None, skip: Skip | None) -> bool:
    """Whether an earlier run did this image: ``skip`` says so, and ``photo`` finds it described.

    Raises:
        LlavaEdgeError: from ``photo.described`` (corrupt metadata, a format that cannot be written).
    """
    if photo is None:
        return skip is not None and skip(item.name, lambda: sha256)
    return photo.described(item.name) and (skip is None or skip(item.name, lambda: sha256))


def _expand(source: str, recursive: bool) -> list[str]:
    if os.path.isdir(source):
        return _walk(source, recursive)
    if _GLOB_CHARS.search(source) and not os.path.exists(source) and not _is_reference(source):
        matches = glob.glob(source, recursive=recursive)
        return sorted(os.path.normpath(path) for path in matches if os.path.isfile(path) and _is_image_name(path))
    return [os.path.normpath(source) if os.path.isfile(source) else source]


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
