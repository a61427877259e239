"""The public API: ``Captioner`` (load once, caption many), ``caption()`` and ``run_task()``.

Composes models -> images -> runtime. The CLI, the server, batch jobs and benchmarks all use
``Captioner``; the module-level functions keep one cached ``Captioner`` per model choice.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Generator
from contextlib import closing
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Self

from PIL import Image

from llava_edge.cost import CostModel
from llava_edge.errors import CaptionCancelledError, LlavaEdgeError
from llava_edge.events import Progress, TextDelta
from llava_edge.generation import GenerationOptions, PromptChunk, RuntimeOptions, Timings
from llava_edge.host import refuse_unsupported_os
from llava_edge.image_store import ImageStore
from llava_edge.images import ImageInput, ImageLimits, load_image
from llava_edge.models.catalog import ModelFiles, Registry, load_registry
from llava_edge.models.resolve import model_files
from llava_edge.runtime.engine import LlavaRuntime
from llava_edge.runtime.grammar import structured_output as structured_output
from llava_edge.runtime.quantize import quantize_gguf
from llava_edge.schema import DEFAULT_PROMPT, CaptionRequest, caption_response, parse_caption_request
from llava_edge.structured import StructuredOutput
from llava_edge.structured.answers import FinishedAnswer, answer_events
from llava_edge.token_budget import AUTO_HIGH_MIN_SIDE as AUTO_HIGH_MIN_SIDE
from llava_edge.token_budget import LOW_DETAIL_SIDE, resolved_detail, token_budget

_log = logging.getLogger("llava_edge.models")
SchemaInput = dict[str, Any] | str | StructuredOutput
"""A JSON Schema, the name of a built-in one (``"photo"``, ``"json"``), or one prepared by ``structured_output``."""


@dataclass(frozen=True)
class CaptionResult:
    """A caption with everything measured about it."""

    text: str
    finish_reason: str
    timings: Timings
    model: str
    data: Any = None
    """With a ``schema``: the answer's JSON value, validated against it; ``None`` when the answer is incomplete
    (``finish_reason`` ``"length"``, or a stop string cut it) and for free text or a raw grammar."""


@dataclass(frozen=True)
class CaptionDone:
    """The last event of ``Captioner.stream``: the caption and its Runware response item."""

    result: CaptionResult
    response: dict[str, Any]
    """``{"taskType": "imageCaption", "taskUUID", "text"[, "cost"]}``."""


CaptionEvent = Progress | TextDelta | CaptionDone
"""What ``Captioner.stream`` yields: ``Progress`` (CLIP tiles, prefill tokens), a ``TextDelta`` per
generated token, then one ``CaptionDone``."""


class Captioner:
    """A loaded model pair that captions many images.

    Args:
        model: a variant id (``"Q4_K_M"``), alias, Runware AIR id (``"runware:150@2"``) or
            ``"synthetic-tiny"``; ``None`` is the registry's default.
        model_path, mmproj_path: explicit local GGUF files instead of ``model`` (``files``: resolved ones).
        runtime: how to load (device, n_ctx, threads, ...).
        generation: default sampling options for every call.
        offline: only use the local cache (default: ``HF_HUB_OFFLINE``).
        image_limits, image_store, cost_model: input limits, where image UUIDs are looked up, pricing.

    Raises:
        UnsupportedPlatformError: on Windows (use WSL2); ModelNotCachedError, UnknownModelError, ModelFileError.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        model_path: str | os.PathLike[str] | None = None,
        mmproj_path: str | os.PathLike[str] | None = None,
        runtime: RuntimeOptions | None = None,
        generation: GenerationOptions | None = None,
        registry: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        offline: bool | None = None,
        image_limits: ImageLimits | None = None,
        image_store: ImageStore | None = None,
        cost_model: CostModel | None = None,
        files: ModelFiles | None = None,
    ):
        refuse_unsupported_os()
        self.files: ModelFiles = files or model_files(
            model, model_path=model_path, mmproj_path=mmproj_path, registry=registry,
            cache_dir=cache_dir, offline=offline, quantize=quantize_gguf,
        )
        self.registry = registry
        self.cache_dir = cache_dir
        self.generation = generation or GenerationOptions()
        self.image_limits = image_limits or ImageLimits()
        self.image_store = image_store or ImageStore()
        self.cost_model = cost_model or CostModel.from_env()
        self.runtime = LlavaRuntime(self.files, runtime)
        self.on_result: Callable[[CaptionResult], None] | None = None
        """Called with each finished caption's result, in its thread (the server's metrics); None: nobody listens."""
        _log.info("loaded model %s (%s) in %.2f s", self.model_name, self.files.model_path.name, self.runtime.load_s)

    @property
    def model_name(self) -> str:
        return self.files.name

    def another(self, model: str | ModelFiles) -> Captioner:
        """A ``Captioner`` for another model on this machine (a name, or the files of one loaded before), with this
        one's settings (runtime, generation defaults, image limits and store, cost model). Nothing is downloaded.

        Raises:
            ModelNotCachedError: the model's files are not here; UnknownModelError, ModelFileError.
        """
        named, files = (None, model) if isinstance(model, ModelFiles) else (model, None)
        return Captioner(
            named, files=files, runtime=self.runtime.options, generation=self.generation, registry=self.registry,
            cache_dir=self.cache_dir, offline=True, image_limits=self.image_limits, image_store=self.image_store,
            cost_model=self.cost_model,
        )

    def close(self) -> None:
        """Free the model (logged; closing it again does nothing)."""
        began = time.perf_counter()
        if self.runtime.close():
            _log.info("unloaded model %s in %.2f s", self.model_name, time.perf_counter() - began)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stream(
        self,
        image: ImageInput | list[ImageInput],
        prompt: str | list[str] | None = None,
        *,
        task_uuid: str | None = None,
        include_cost: bool = False,
        detail: str = "auto",
        options: GenerationOptions | None = None,
        limits: ImageLimits | None = None,
        schema: SchemaInput | None = None,
        grammar: str | None = None,
        image_tokens: int | None = None,
        token_selection: str | None = None,
    ) -> Generator[CaptionEvent, None, None]:
        """Caption one image, reporting as it goes.

        Yields ``Progress`` while CLIP encodes the tiles (``stage="encode"``, per tile) and the prompt is
        evaluated (``stage="prefill"``, per batch of tokens; the two interleave, tile by tile), then a
        ``TextDelta`` per generated token (the deltas joined are exactly the final text), then one
        ``CaptionDone`` with the result and the Runware response item. The image is read at the first
        step, and the model is held until the last.

        Several images (a conversation that shows more than one) are given as a list, with ``prompt`` a
        list of as many texts: text ``i`` follows image ``i`` in the prompt. Together they must fit the
        context (``ContextOverflowError`` gives the numbers).

        ``schema`` (a JSON Schema, ``"photo"``, or a ``StructuredOutput``) constrains every token so the answer
        is JSON that follows it; the result's ``data`` is the parsed value (``None`` when the answer was cut).
        ``grammar`` (GBNF, root rule ``root``) constrains it without parsing. A schema is checked before the
        image is read (``SchemaError``); without a prompt, the ``photo`` schema asks for its fields.

        ``image_tokens`` caps the tokens each image feeds (``None``: all; ``llava_edge.image_token_count``
        tells how many an image takes): every view is still encoded, then that many tokens are chosen from
        the whole grid by ``token_selection`` (``"diverse"``, the default; ``"pooled"``; ``"uniform"``) and
        prefilled, so the prefill shrinks in proportion. A budget at or above the image's count changes
        nothing. ``detail="low"`` makes 576 tokens, so a larger budget there means 576.

        Closing the iterator (or leaving a ``for`` loop over it) stops the caption at the next step
        (between two tiles, two prefill batches or two tokens); the next caption runs as on a fresh
        model. ``Captioner.runtime.cancel()`` stops it from another thread (``CaptionCancelledError``).

        Raises:
            LlavaEdgeError: as ``describe``, from the iteration.
        """
        structure = structured_output(schema, grammar)
        budget = token_budget(image_tokens, token_selection)
        pictures = self._pictures(image, detail, limits or self.image_limits)
        text = prompt or (structure and structure.prompt) or DEFAULT_PROMPT
        options = options or self.generation
        if structure is not None:
            options = replace(options, grammar=structure.grammar, grammar_depth=structure.max_depth)
        with closing(self.runtime.stream(pictures, text, options, budget)) as events:
            for event in answer_events(events, structure):
                if not isinstance(event, FinishedAnswer):
                    yield event
                    continue
                result = CaptionResult(event.text, event.finish_reason, event.timings, self.model_name, event.data)
                if self.on_result is not None:
                    self.on_result(result)
                yield CaptionDone(result, self._response(task_uuid or str(uuid.uuid4()), result, include_cost))

    def _pictures(self, image: ImageInput | list[ImageInput], detail: str, limits: ImageLimits) -> list[Image.Image]:
        """The image (or each of several, given as a list) read and prepared for ``detail``."""
        sources = image if isinstance(image, list) else [image]
        return [prepare_image(load_image(source, limits=limits, store=self.image_store), detail) for source in sources]

    def describe(
        self,
        image: ImageInput,
        prompt: str | None = None,
        *,
        detail: str = "auto",
        options: GenerationOptions | None = None,
        limits: ImageLimits | None = None,
        schema: SchemaInput | None = None,
        grammar: str | None = None,
        image_tokens: int | None = None,
        token_selection: str | None = None,
    ) -> CaptionResult:
        """Caption one image and return the text with its timings (the Python-native result); with ``schema``
        (as for ``stream``) ``data`` holds the parsed JSON value; ``image_tokens`` and ``token_selection`` as
        for ``stream``."""
        events = self.stream(image, prompt, detail=detail, options=options, limits=limits, schema=schema,
                             grammar=grammar, image_tokens=image_tokens, token_selection=token_selection)
        return _finished(events).result

    def caption(
        self,
        image: ImageInput,
        prompt: str | None = None,
        *,
        task_uuid: str | None = None,
        include_cost: bool = False,
        detail: str = "auto",
        options: GenerationOptions | None = None,
        schema: SchemaInput | None = None,
        grammar: str | None = None,
        image_tokens: int | None = None,
        token_selection: str | None = None,
    ) -> dict[str, Any]:
        """Caption one image and answer with the Runware response item
        ``{"taskType": "imageCaption", "taskUUID", "text"[, "cost"]}``; with ``schema`` (as for ``stream``) the
        item also has ``data``, the parsed JSON value (``None`` when the answer was cut); ``image_tokens`` and
        ``token_selection`` as for ``stream``."""
        events = self.stream(image, prompt, task_uuid=task_uuid, include_cost=include_cost, detail=detail,
                             options=options, schema=schema, grammar=grammar, image_tokens=image_tokens,
                             token_selection=token_selection)
        done = _finished(events)
        return {**done.response, "data": done.result.data} if schema is not None else done.response

    def run_task(
        self, request: dict[str, Any], *, allow_local_files: bool = False, image: bytes | None = None,
        cancelled: threading.Event | None = None,
    ) -> dict[str, Any]:
        """Answer one Runware caption task (``caption`` or legacy ``imageCaption``) with its response item.

        The loaded model answers; ``model`` must still name a known variant (or this model's name).
        ``image``: the task's image already read (the server fetches URLs before a task takes the model).
        ``cancelled``: once set (by another thread), the caption stops at its next step with
        ``CaptionCancelledError``.

        Raises:
            LlavaEdgeError: carrying the Runware error item, with the task's taskType and taskUUID.
        """
        task = parse_caption_request(request)
        try:
            self._check_model_name(task.model)
            limits = replace(self.image_limits, allow_paths=allow_local_files)
            source = task.image if image is None else image
            events = self.stream(source, task.prompt, detail=task.detail, options=self._options_for(task),
                                 limits=limits, image_tokens=task.image_tokens, token_selection=task.token_selection)
            result = _finished(events, cancelled).result
        except LlavaEdgeError as err:
            err.task_type = err.task_type or task.task_type
            err.task_uuid = err.task_uuid or task.task_uuid
            raise
        return self._response(task.task_uuid, result, task.include_cost)

    def layout(
        self, image: ImageInput, prompt: str | None = None, *, detail: str = "auto", image_tokens: int | None = None,
        token_selection: str | None = None,
    ) -> list[PromptChunk]:
        """The prompt chunks the model would evaluate for this image and prompt (no compute)."""
        budget = token_budget(image_tokens, token_selection)
        picture = prepare_image(load_image(image, limits=self.image_limits, store=self.image_store), detail)
        return self.runtime.layout(picture, prompt or DEFAULT_PROMPT, budget)

    def _options_for(self, task: CaptionRequest) -> GenerationOptions:
        fields: dict[str, Any] = {"max_tokens": task.max_tokens, "temperature": task.temperature,
                                  "top_p": task.top_p, "seed": task.seed}
        return replace(self.generation, **{name: value for name, value in fields.items() if value is not None})

    def _check_model_name(self, name: str) -> None:
        if name.strip().lower() != self.model_name.lower():
            self._registry.resolve(name)

    @cached_property
    def _registry(self) -> Registry:
        return load_registry(self.registry)

    def _response(self, task_uuid: str, result: CaptionResult, include_cost: bool) -> dict[str, Any]:
        cost = self.cost_model.cost(result.timings.generated_tokens, result.timings.total_s) if include_cost else None
        return caption_response(task_uuid, result.text, cost)


def _finished(events: Generator[CaptionEvent, None, None], cancelled: threading.Event | None = None) -> CaptionDone:
    """Run a caption's events to the end; its ``CaptionDone``. When ``cancelled`` is set, the caption stops
    at its next step (closing the stream) with ``CaptionCancelledError``."""
    with closing(events):
        for event in events:
            if isinstance(event, CaptionDone):
                return event
            if cancelled is not None and cancelled.is_set():
                raise CaptionCancelledError("Nobody waits for this caption any more; it was stopped.")
    raise AssertionError("the caption ended without a result")  # pragma: no cover


def prepare_image(image: Image.Image, detail: str) -> Image.Image:
    """Apply ``detail`` to an RGB image.

    - "high": the whole image; libmtmd uses the full LLaVA-1.6 anyres grid (up to 2,880 tokens).
    - "low": the image scaled to fit one 336x336 CLIP view (576 tokens, several times faster on a CPU).
    - "auto": "low" when the long side is under ``AUTO_HIGH_MIN_SIDE`` (504 px, 1.5 views: the anyres
      tiles would only magnify the image, adding tokens but no detail), else "high".
    """
    if resolved_detail(*image.size, detail) == "low" and max(image.size) > LOW_DETAIL_SIDE:
        scaled = image.copy()
        scaled.thumbnail((LOW_DETAIL_SIDE, LOW_DETAIL_SIDE), Image.Resampling.BICUBIC)
        return scaled
    return image


class _CaptionerCache:
    """Keeps the last Captioner used by the module-level functions; reloads only when the model changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[str | None, RuntimeOptions | None] | None = None
        self._captioner: Captioner | None = None

    def get(self, model: str | None, runtime: RuntimeOptions | None) -> Captioner:
        with self._lock:
            if self._captioner is None or self._key != (model, runtime):
                if self._captioner is not None:
                    self._captioner.close()
                    self._captioner = None
                self._captioner = Captioner(model, runtime=runtime)
                self._key = (model, runtime)
            return self._captioner


_cache = _CaptionerCache()


def caption(
    image: ImageInput,
    prompt: str | None = None,
    *,
    model: str | None = None,
    task_uuid: str | None = None,
    include_cost: bool = False,
    detail: str = "auto",
    options: GenerationOptions | None = None,
    runtime: RuntimeOptions | None = None,
    schema: SchemaInput | None = None,
    grammar: str | None = None,
    image_tokens: int | None = None,
    token_selection: str | None = None,
) -> dict[str, Any]:
    """Caption an image with a cached model and return the Runware response item.

    ``image`` may be a path, bytes, a PIL image, an http(s) URL, a data URI, bare base64 or the UUID of
    a stored image. The model loads on the first call and stays loaded for the next ones. ``schema`` (a JSON
    Schema or ``"photo"``) makes the answer JSON that follows it, parsed into the item's ``data``; ``grammar``
    (GBNF) constrains it without parsing. ``image_tokens`` (with ``token_selection``) feeds at most that many
    tokens per image, as ``Captioner.stream`` describes.
    """
    return _cache.get(model, runtime).caption(
        image, prompt, task_uuid=task_uuid, include_cost=include_cost, detail=detail, options=options,
        schema=schema, grammar=grammar, image_tokens=image_tokens, token_selection=token_selection,
    )


def run_task(request: dict[str, Any], *, runtime: RuntimeOptions | None = None) -> dict[str, Any]:
    """Answer a Runware caption request (either shape) in process, with the model it names."""
    task = parse_caption_request(request)
    return _cache.get(task.model, runtime).run_task(request)
