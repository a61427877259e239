"""Caption many images with one loaded model.

``caption_many`` captions images one by one and yields a ``BatchRecord`` per image (a bad image becomes an
error record; the run goes on), and ``run_batch`` writes the records to a sink with a progress bar and counts
them. Which images a run takes is ``discovery``; the records and how names are written, ``records``.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Protocol

from tqdm.auto import tqdm  # type: ignore[import-untyped,unused-ignore]

from llava_edge.api import CaptionDone, Captioner, CaptionResult, SchemaInput, structured_output
from llava_edge.batch.records import BatchRecord, BatchSummary, ImageItem, printable_name, task_uuid_for
from llava_edge.errors import LlavaEdgeError
from llava_edge.events import Progress, StageView, TextDelta
from llava_edge.generation import GenerationOptions, RuntimeOptions
from llava_edge.images import ImageLimits, read_image_bytes
from llava_edge.schema import RESPONSE_TASK_TYPE, caption_response
from llava_edge.token_budget import token_budget

BATCH_RUNTIME = RuntimeOptions(prefix_cache_bytes=0)
"""How ``caption_many`` loads a model itself. The image-prefix cache is off: a batch sees each image
once, and the cache would keep every image's evaluated state (memory growing image after image)."""

Skip = Callable[[str, Callable[[], str]], bool]
"""``skip(name, digest)``: True when the image ``name`` whose sha256 ``digest()`` returns is done."""


class PhotoHook(Protocol):
    """The per-image photo step (``photo_step.PhotoStep``): asked before the model runs, called after."""

    def described(self, image: str) -> bool: ...

    def write(self, captioner: Captioner, image: str, data: bytes, result: CaptionResult, detail: str,
              options: GenerationOptions | None, *, image_tokens: int | None = None,
              token_selection: str | None = None) -> dict[str, Any]: ...


class Sink(Protocol):
    """Where records go (files, the console). ``done`` answers the resume question."""

    def done(self, image: str, digest: Callable[[], str]) -> bool: ...

    def write(self, record: BatchRecord) -> None: ...


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
    image_tokens: int | None = None,
    token_selection: str | None = None,
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
        image_tokens, token_selection: the image token budget, as for ``Captioner.describe``; each record's
            ``timings.image_tokens`` is what was fed. Checked before any image (``InvalidRequestError``).
    """
    structure = structured_output(schema)
    token_budget(image_tokens, token_selection)
    owned = captioner is None
    loaded = captioner if captioner is not None else Captioner(model, runtime=BATCH_RUNTIME)
    job = _Job(prompt, detail, options, on_event, stop, photo, structure, image_tokens, token_selection)
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
    image_tokens: int | None = None
    token_selection: str | None = None


def _describe(captioner: Captioner, item: ImageItem, data: bytes, job: _Job) -> CaptionResult | None:
    """Caption one image, passing its events on; ``None`` when ``job.stop`` was set part-way."""
    events = captioner.stream(data, job.prompt, detail=job.detail, options=job.options, schema=job.schema,
                              image_tokens=job.image_tokens, token_selection=job.token_selection)
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
                photo = job.photo.write(captioner, item.name, data, result, job.detail, job.options,
                                        image_tokens=job.image_tokens, token_selection=job.token_selection)
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


