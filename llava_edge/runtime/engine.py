"""``LlavaRuntime``: one loaded LLaVA model pair, the object the rest of the package captions through.

It owns one llama.cpp model + context and one libmtmd (CLIP) context. It renders the package's pinned
prompt template (never the GGUF's embedded template), lets libmtmd tile the image (LLaVA-1.6 anyres: 576
tokens per 336 px view, up to 2,880), checks the context budget before any compute, evaluates the image
and text (reusing an image prefix when it can), and hands over to the decoding loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass, replace
from typing import Any, Self

import llama_cpp
import llama_cpp.mtmd_cpp as mtmd
from PIL import Image

from llava_edge.errors import CaptionCancelledError, RuntimeBackendError
from llava_edge.events import ENCODE, Progress, TextDelta
from llava_edge.generation import (
    UNTIL_CONTEXT_FULL,
    Generation,
    GenerationOptions,
    PromptChunk,
    RuntimeOptions,
    prompt_tokens,
)
from llava_edge.models.catalog import ModelFiles
from llava_edge.models.file_check import check_model_pair
from llava_edge.prefix_cache import PrefixCache
from llava_edge.runtime.backend import (
    ABORT_NOW,
    NO_ABORT,
    check_repack_safe,
    init_backend,
    offload_plan,
    raise_if_interrupted,
)
from llava_edge.runtime.context_budget import check_context
from llava_edge.runtime.decoding import Decoder, token_piece
from llava_edge.runtime.image_eval import SELECT, Tokenized, eval_image, eval_reduced_image, eval_text
from llava_edge.runtime.loading import identity, load_model, new_context, new_mtmd
from llava_edge.runtime.parking import Interleave, MakeWay, Parking
from llava_edge.runtime.prefix_reuse import prefix_key, restore_prefix, reuse_resident
from llava_edge.runtime.prompt_plan import IMAGE, REDUCED, TEXT, Meter, Plan, Segment, checked, plan
from llava_edge.runtime.sequence_state import snapshot
from llava_edge.runtime.text_prefix import eval_text_prompt
from llava_edge.token_budget import TokenBudget

RuntimeEvent = Progress | TextDelta | Generation
"""What ``LlavaRuntime.stream`` yields: progress, text deltas, and the ``Generation`` last."""


@dataclass(frozen=True)
class EvaluatedPrompt:
    """The context right after an image and prompt were evaluated (``LlavaRuntime.evaluated_prompt``)."""

    context: Any
    """The llama.cpp context: the prompt's last logits are ready; new tokens go at ``n_past``."""
    vocab: Any
    layout: list[PromptChunk]
    n_past: int


class LlavaRuntime:
    """One loaded LLaVA model pair. Thread-safe: calls are serialised by a lock."""

    def __init__(self, files: ModelFiles, options: RuntimeOptions | None = None):
        init_backend()
        self.files = files
        self.options = options or RuntimeOptions()
        self._lock = threading.RLock()  # re-entered by work run while a caption is parked (``interleaving``)
        self._cancelled = threading.Event()
        self._model: Any = None
        self._ctx: Any = None
        self._mtmd: Any = None
        gpu_layers, clip_on_gpu = offload_plan(self.options.device)
        check_repack_safe(self.options.repack)
        check_model_pair(files.model_path, files.mmproj_path)  # llama.cpp may abort on a bad file
        started = time.perf_counter()
        try:
            self._model = load_model(files.model_path, self.options, gpu_layers)
            self._vocab = llama_cpp.llama_model_get_vocab(self._model)
            self._ctx = new_context(self._model, self.options)
            self._mtmd = new_mtmd(files.mmproj_path, self._model, self.options, clip_on_gpu)
            raise_if_interrupted()
        except BaseException:
            self.close()
            raise
        self.load_s = time.perf_counter() - started
        self._marker = mtmd.mtmd_default_marker().decode()
        self.prefix_cache = PrefixCache(self.options.prefix_cache_bytes, self.options.prefix_cache_dir)
        self._parking = Parking(self.prefix_cache)
        self._resident: tuple[str, int] | None = None
        """(prefix key, positions) of the image prefix now in the context, from the last call."""
        self._text_resident: tuple[int, ...] | None = None
        """The tokens of the text-only prompt now in the context, from the last call."""
        self._identity = identity(files, self.options)
        self._parked_s = 0.0
        """Seconds the caption in progress spent parked before its decoding (``interleaving``)."""

    @property
    def n_ctx(self) -> int:
        return int(llama_cpp.llama_n_ctx(self._ctx))

    def cancel(self) -> None:
        """Stop the caption in progress, from another thread: llama.cpp abandons its current batch (an
        image encode already under way still finishes) and ``generate`` raises ``CaptionCancelledError``.
        The next ``generate`` call runs normally."""
        self._cancelled.set()
        if self._ctx is not None:
            llama_cpp.llama_set_abort_callback(self._ctx, ABORT_NOW, None)

    def _raise_if_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise CaptionCancelledError("The caption was cancelled before it finished.")

    def interleaving(self, turn: Interleave) -> AbstractContextManager[None]:
        """Within this block, a caption steps aside before any of its steps (a CLIP encode, a prefill batch, a
        generated token) when ``turn.wanted()``: its state is parked in RAM while ``turn.run()`` uses the model
        on this thread, then it goes on where it was (``parking``)."""
        return self._parking.allowed(turn)

    def _make_way(self) -> float:
        """Before a step: let waiting work run (``interleaving``); the seconds it took, also added to the
        caption's ``_parked_s`` (not its own time: its timings leave it out)."""
        parked_before, own = self._parked_s, self._resident[0] if self._resident else None
        seconds = self._parking.make_way(self._ctx, self._marks, self._resume, own)
        self._parked_s = parked_before + seconds
        return seconds

    def _marks(self) -> tuple[tuple[str, int] | None, tuple[int, ...] | None]:
        return self._resident, self._text_resident

    def _resume(self, marks: tuple[tuple[str, int] | None, tuple[int, ...] | None] | None) -> None:
        """After parked work: the caption's own marks back (none when its context was lost), and a cancel of
        that work forgotten."""
        self._resident, self._text_resident = marks or (None, None)
        self._cancelled.clear()
        llama_cpp.llama_set_abort_callback(self._ctx, NO_ABORT, None)

    def close(self) -> bool:
        """Free the llama.cpp and libmtmd contexts and the prefix cache's memory; the runtime is unusable
        afterwards. True when this call freed the model (False when it was closed already)."""
        with self._lock:
            freed = self._model is not None
            self.prefix_cache.clear()  # its states belong to this model: kept, they would sit beside the next one
            if self._mtmd is not None:
                mtmd.mtmd_free(self._mtmd)
                self._mtmd = None
            if self._ctx is not None:
                llama_cpp.llama_free(self._ctx)
                self._ctx = None
            if self._model is not None:
                llama_cpp.llama_model_free(self._model)
                self._model = None
        return freed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """Tokenize text with the model's own tokenizer (special tokens are not parsed)."""
        data = text.encode("utf-8")
        buffer = (llama_cpp.llama_token * (len(data) + 8))()
        count = llama_cpp.llama_tokenize(self._vocab, data, len(data), buffer, len(buffer), add_special, False)
        if count < 0:
            raise RuntimeBackendError(f"The tokenizer needed {-count} slots for {len(data)} bytes.")
        return list(buffer[:count])

    def detokenize(self, tokens: list[int] | tuple[int, ...]) -> str:
        """The text of a token sequence."""
        return b"".join(token_piece(self._vocab, token) for token in tokens).decode("utf-8", "replace")

    def prompt_text(self, prompt: str | Sequence[str], *, images: int = 1) -> str:
        """The full prompt as fed to libmtmd: the pinned template with the media marker for the image.

        ``prompt`` is one text, or one text per image (several images): text ``i`` follows image ``i``, the
        first image sits where the template puts it and each later one right before its text. Markers
        inside the texts are removed, so a prompt cannot add images of its own. With no image (``images`` 0)
        the template's image slot and the line break after it are left out."""
        parts = [prompt] if isinstance(prompt, str) else list(prompt)
        safe = [part.replace(self._marker, "") for part in parts]
        text = safe[0] + "".join(self._marker + part for part in safe[1:])
        template = self.files.template if images else _without_image(self.files.template)
        return template.replace("{image}", self._marker).replace("{prompt}", text)

    def layout(
        self, image: Image.Image | Sequence[Image.Image], prompt: str | Sequence[str],
        budget: TokenBudget | None = None,
    ) -> list[PromptChunk]:
        """Tokenize without evaluating: the text tokens and image token counts the model would see (under
        ``budget``: the image tokens fed)."""
        images, text = checked(image, prompt)
        with self._lock, Tokenized(self._mtmd, images, self.prompt_text(text, images=len(images))) as tokenized:
            return plan(tokenized, budget).layout(tokenized)

    def generate(
        self, image: Image.Image | Sequence[Image.Image], prompt: str | Sequence[str],
        options: GenerationOptions | None = None, budget: TokenBudget | None = None,
    ) -> Generation:
        """Caption ``image`` (RGB) following ``prompt``; several images take one text each (``prompt_text``).
        With ``budget``, each image feeds at most ``budget.tokens`` of its tokens (see ``stream``).

        Raises:
            ContextOverflowError: image + prompt + max_tokens exceed n_ctx (raised before any compute).
            RuntimeBackendError: llama.cpp failed to encode, decode or sample.
            CaptionCancelledError: ``cancel()`` was called while it ran.
        """
        with closing(self.stream(image, prompt, options, budget)) as events:
            for event in events:
                if isinstance(event, Generation):
                    return event
        raise AssertionError("the caption ended without a result")  # pragma: no cover

    def stream(
        self, image: Image.Image | Sequence[Image.Image], prompt: str | Sequence[str],
        options: GenerationOptions | None = None, budget: TokenBudget | None = None,
    ) -> Generator[RuntimeEvent, None, None]:
        """Caption ``image`` as ``generate`` does, reporting as it goes: ``Progress`` of the CLIP encode (per
        tile) and of the prefill (per batch), a ``TextDelta`` per generated token, and the ``Generation``
        last. The model is held from the first event to the last; closing the iterator early stops the
        caption between two calls into llama.cpp and leaves the context ready for the next one.

        With ``budget``, an image with more tokens than ``budget.tokens`` has all its views encoded, then
        that many tokens kept (``budget.selection``) and prefilled at contiguous positions; the timings
        count the tokens fed. A budget at or above an image's token count changes nothing.

        Raises:
            The errors of ``generate``, from the iteration.
        """
        options = options or GenerationOptions()
        images, text = checked(image, prompt)
        generation: Generation | None = None
        with self._lock:
            self._begin_call()
            started = time.perf_counter()
            with Tokenized(self._mtmd, images, self.prompt_text(text, images=len(images))) as tokenized:
                planned = plan(tokenized, budget)
                layout = planned.layout(tokenized)
                options = self._resolved(options, layout)
                check_context(layout, self.n_ctx, options.max_tokens, len(images))
                stages = yield from self._evaluate(tokenized, planned)
            raise_if_interrupted()
            self._raise_if_cancelled()
            decoder = Decoder(
                self._ctx, self._vocab, options, started=started + self._parked_s, stages=stages, layout=layout,
                raise_if_cancelled=self._raise_if_cancelled, make_way=self._step_hook(),
            )
            for event in decoder.events():
                if isinstance(event, Generation):
                    generation = event
                else:
                    yield event
        assert generation is not None
        yield generation  # after the lock is released: the model is free once the result is out

    @contextmanager
    def evaluated_prompt(
        self, image: Image.Image | Sequence[Image.Image], prompt: str | Sequence[str], *, reserve: int,
        reserved_for: str = "max_tokens", budget: TokenBudget | None = None,
    ) -> Iterator[EvaluatedPrompt]:
        """Evaluate the image and prompt as a caption does (the same chunks, batches and prefix reuse), then
        hold the model while the caller reads and extends the context (teacher-forced scoring does).

        Args:
            reserve: positions the caller will add after the prompt, checked against n_ctx first.
            reserved_for: what they are, for the overflow message.
            budget: image token budget, as for ``stream``.

        Raises:
            ContextOverflowError, RuntimeBackendError: as ``generate``.
        """
        images, text = checked(image, prompt)
        with self._lock:
            self._begin_call()
            with Tokenized(self._mtmd, images, self.prompt_text(text, images=len(images))) as tokenized:
                planned = plan(tokenized, budget)
                layout = planned.layout(tokenized)
                check_context(layout, self.n_ctx, reserve, len(images), reserved_for)
                for _ in self._evaluate(tokenized, planned):
                    raise_if_interrupted()
            n_past = int(llama_cpp.llama_memory_seq_pos_max(llama_cpp.llama_get_memory(self._ctx), 0)) + 1
            yield EvaluatedPrompt(self._ctx, self._vocab, layout, n_past)

    def _begin_call(self) -> None:
        """Under the lock, before any work: refuse a closed model; clear a cancel left by the last call."""
        if self._ctx is None:
            raise RuntimeBackendError("This model was closed; load it again to caption.")
        self._cancelled.clear()
        llama_cpp.llama_set_abort_callback(self._ctx, NO_ABORT, None)
        self._parked_s = 0.0

    def _resolved(self, options: GenerationOptions, layout: list[PromptChunk]) -> GenerationOptions:
        """``options`` with the context-relative values made absolute: ``UNTIL_CONTEXT_FULL`` tokens and a
        penalty window of -1 (the whole context)."""
        if options.max_tokens == UNTIL_CONTEXT_FULL:
            options = replace(options, max_tokens=max(1, self.n_ctx - prompt_tokens(layout)))
        return replace(options, repeat_last_n=self.n_ctx) if options.repeat_last_n < 0 else options

    def _evaluate(self, tokenized: Tokenized, planned: Plan) -> Generator[Progress, None, dict[str, Any]]:
        """Evaluate every segment, reporting progress; returns seconds per stage.

        The image prefix (``[INST] <image>``) is not evaluated again when it can be had cheaper: still in
        the context from the last call on the same image (its later tokens are dropped, nothing is
        copied), or restored from the prefix cache. A newly evaluated prefix goes into the cache when
        the cache is on. The context holds a prefix (``_resident``) only once it is complete, so a caption
        stopped part-way leaves the next call to clear or trim the context. A budget that reduced an
        image is part of the prefix's key."""
        stages: dict[str, Any] = {"image_encode_s": 0.0, "image_prefill_s": 0.0, "text_prefill_s": 0.0}
        segments, prefix_end = planned.segments, planned.prefix_end
        text_resident, self._text_resident = self._text_resident, None
        if prefix_end == 0:  # no image: reuse the last text prompt's tokens instead
            self._resident = None
            yield from self._evaluate_text(tokenized, text_resident, stages)
            return stages
        key = prefix_key(self._identity, self.files.template, tokenized, planned.budget)
        resident, self._resident = self._resident, None
        n_past = reuse_resident(self._ctx, resident, key, stages)
        if n_past is None:
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), True)
            n_past = restore_prefix(self._ctx, self.prefix_cache, key, stages) if key and self.prefix_cache.enabled \
                else None
        meter = Meter(segments[prefix_end if n_past is not None else 0:])
        yield from meter.start()
        if n_past is None:
            n_past = yield from self._eval_segments(tokenized, segments[:prefix_end], 0, stages, meter)
            if key and self.prefix_cache.enabled:
                self.prefix_cache.put(key, snapshot(self._ctx, n_past))
        self._resident = (key, n_past) if key else None
        yield from self._eval_segments(tokenized, segments[prefix_end:], n_past, stages, meter)
        return stages

    def _evaluate_text(
        self, tokenized: Tokenized, resident: tuple[int, ...] | None, stages: dict[str, Any]
    ) -> Generator[Progress, None, None]:
        """A text-only prompt, from the longest prefix it shares with the last one (``text_prefix``)."""
        tokens = tuple(token for index in range(tokenized.count) for token in tokenized.text_tokens(index))
        steps = eval_text_prompt(self._ctx, tokens, resident, self.options.n_batch, self._raise_if_cancelled,
                                 self._step_hook())
        while True:
            try:
                progress = next(steps)
            except StopIteration as done:
                stages["cached_tokens"], stages["text_prefill_s"] = done.value
                break
            yield progress
            raise_if_interrupted()
            self._raise_if_cancelled()
        self._text_resident = tokens

    def _eval_segments(
        self, tokenized: Tokenized, segments: list[Segment], n_past: int, stages: dict[str, Any], meter: Meter,
    ) -> Generator[Progress, None, int]:
        """Evaluate segments from position ``n_past``, a progress event after every call into llama.cpp (the
        caller may stop there); the new n_past."""
        for segment in segments:
            yield from self._eval_segment(tokenized, segment, n_past, stages, meter)
            n_past += segment.tokens if segment.kind == REDUCED else tokenized.n_pos(segment.chunks[0])
        return n_past

    def _eval_segment(
        self, tokenized: Tokenized, segment: Segment, n_past: int, stages: dict[str, Any], meter: Meter,
    ) -> Iterator[Progress]:
        n_batch, on_failure, make_way = self.options.n_batch, self._raise_if_cancelled, self._step_hook()
        first = segment.chunks[0]
        if segment.kind == IMAGE:
            steps = eval_image(self._mtmd, self._ctx, tokenized.chunk(first), n_past, n_batch, on_failure, make_way)
        elif segment.kind == REDUCED:
            chunks = [tokenized.chunk(index) for index in segment.chunks]
            steps = eval_reduced_image(self._mtmd, self._ctx, chunks, segment.tokens, segment.selection,
                                       n_past, n_batch, on_failure, make_way)
        else:
            steps = eval_text(self._ctx, tokenized.text_tokens(first), n_past, n_batch,
                              last=first == tokenized.count - 1, on_failure=on_failure, make_way=make_way)
        prefill_stage = "text_prefill_s" if segment.kind == TEXT else "image_prefill_s"
        for stage, amount, seconds in steps:
            if stage == SELECT:
                stages["image_select_s"] = stages.get("image_select_s", 0.0) + seconds
            else:
                stages["image_encode_s" if stage == ENCODE else prefill_stage] += seconds
                yield meter.step(stage, amount, seconds)
            raise_if_interrupted()
            self._raise_if_cancelled()

    def _step_hook(self) -> MakeWay | None:
        """What a caption's steps call first: ``_make_way`` while interleaving is allowed, else nothing (the
        steps then run exactly as without it)."""
        return self._make_way if self._parking.active else None

def _without_image(template: str) -> str:
    """A template for a text-only prompt: its image slot removed, with the line break that follows it."""
    return template.replace("{image}\n", "").replace("{image}", "")
