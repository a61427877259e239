"""``LlavaRuntime``: one loaded LLaVA model pair, the object the rest of the package captions through.

It owns one llama.cpp model + context and one libmtmd (CLIP) context. It renders the package's pinned
prompt template (never the GGUF's embedded template), lets libmtmd tile the image (LLaVA-1.6 anyres: 576
tokens per 336 px view, up to 2,880), checks the context budget before any compute, evaluates the image
and text (reusing an image prefix when it can), and hands over to the decoding loop.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any, Self

import llama_cpp
import llama_cpp.mtmd_cpp as mtmd
from PIL import Image

from llava_edge.errors import CaptionCancelledError, ContextOverflowError, RuntimeBackendError
from llava_edge.events import ENCODE, PREFILL, Progress, TextDelta
from llava_edge.generation import (
    Generation,
    GenerationOptions,
    PromptChunk,
    RuntimeOptions,
    image_tokens,
    prompt_tokens,
)
from llava_edge.models.catalog import ModelFiles
from llava_edge.models.file_check import check_model_pair
from llava_edge.prefix_cache import PrefixCache, PrefixState
from llava_edge.runtime.backend import (
    ABORT_NOW,
    NO_ABORT,
    check_repack_safe,
    init_backend,
    offload_plan,
    raise_if_interrupted,
)
from llava_edge.runtime.decoding import Decoder, token_piece
from llava_edge.runtime.image_eval import Tokenized, eval_image, eval_text
from llava_edge.runtime.loading import identity, load_model, new_context, new_mtmd

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
        self._lock = threading.Lock()
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
        self._resident: tuple[str, int] | None = None
        """(prefix key, positions) of the image prefix now in the context, from the last call."""
        self._identity = identity(files, self.options)

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

    def close(self) -> bool:
        """Free the llama.cpp and libmtmd contexts; the runtime is unusable afterwards. True when this call
        freed the model (False when it was closed already)."""
        with self._lock:
            freed = self._model is not None
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

    def prompt_text(self, prompt: str | Sequence[str]) -> str:
        """The full prompt as fed to libmtmd: the pinned template with the media marker for the image.

        ``prompt`` is one text, or one text per image (several images): text ``i`` follows image ``i``, the
        first image sits where the template puts it and each later one right before its text. Markers
        inside the texts are removed, so a prompt cannot add images of its own."""
        parts = [prompt] if isinstance(prompt, str) else list(prompt)
        safe = [part.replace(self._marker, "") for part in parts]
        text = safe[0] + "".join(self._marker + part for part in safe[1:])
        return self.files.template.replace("{image}", self._marker).replace("{prompt}", text)

    def layout(self, image: Image.Image | Sequence[Image.Image], prompt: str | Sequence[str]) -> list[PromptChunk]:
        """Tokenize without evaluating: the text tokens and image token counts the model would see."""
        images, text = _checked(image, prompt)
        with self._lock, Tokenized(self._mtmd, images, self.prompt_text(text)) as tokenized:
            return tokenized.layout()

    def generate(
        self, image: Image.Image | Sequence[Image.Image], prompt: str | Sequence[str],
        options: GenerationOptions | None = None,
    ) -> Generation:
        """Caption ``image`` (RGB) following ``prompt``; several images take one text each (``prompt_text``).

        Raises:
            ContextOverflowError: image + prompt + max_tokens exceed n_ctx (raised before any compute).
            RuntimeBackendError: llama.cpp failed to encode, decode or sample.
            CaptionCancelledError: ``cancel()`` was called while it ran.
        """
        with closing(self.stream(image, prompt, options)) as events:
            for event in events:
                if isinstance(event, Generation):
                    return event
        raise AssertionError("the caption ended without a result")  # pragma: no cover

    def stream(
        self, image: Image.Image | Sequence[Image.Image], prompt: str | Sequence[str],
        options: GenerationOptions | None = None,
    ) -> Generator[RuntimeEvent, None, None]:
        """Caption ``image`` as ``generate`` does, reporting as it goes: ``Progress`` of the CLIP encode (per
        tile) and of the prefill (per batch), a ``TextDelta`` per generated token, and the ``Generation``
        last. The model is held from the first event to the last; closing the iterator early stops the
        caption between two calls into llama.cpp and leaves the context ready for the next one.

        Raises:
            The errors of ``generate``, from the iteration.
        """
        options = options or GenerationOptions()
        images, text = _checked(image, prompt)
        generation: Generation | None = None
        with self._lock:
            self._begin_call()
            started = time.perf_counter()
            with Tokenized(self._mtmd, images, self.prompt_text(text)) as tokenized:
                layout = tokenized.layout()
                self._check_budget(layout, options.max_tokens, len(images))
                stages = yield from self._evaluate(tokenized)
            raise_if_interrupted()
            self._raise_if_cancelled()
            decoder = Decoder(
                self._ctx, self._vocab, options, started=started, stages=stages, layout=layout,
                raise_if_cancelled=self._raise_if_cancelled,
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
        reserved_for: str = "max_tokens",
    ) -> Iterator[EvaluatedPrompt]:
        """Evaluate the image and prompt as a caption does (the same chunks, batches and prefix reuse), then
        hold the model while the caller reads and extends the context (teacher-forced scoring does).

        Args:
            reserve: positions the caller will add after the prompt, checked against n_ctx first.
            reserved_for: what they are, for the overflow message.

        Raises:
            ContextOverflowError, RuntimeBackendError: as ``generate``.
        """
        images, text = _checked(image, prompt)
        with self._lock:
            self._begin_call()
            with Tokenized(self._mtmd, images, self.prompt_text(text)) as tokenized:
                layout = tokenized.layout()
                self._check_budget(layout, reserve, len(images), reserved_for)
                for _ in self._evaluate(tokenized):
                    raise_if_interrupted()
            n_past = int(llama_cpp.llama_memory_seq_pos_max(llama_cpp.llama_get_memory(self._ctx), 0)) + 1
            yield EvaluatedPrompt(self._ctx, self._vocab, layout, n_past)

    def _begin_call(self) -> None:
        """Under the lock, before any work: refuse a closed model; clear a cancel left by the last call."""
        if self._ctx is None:
            raise RuntimeBackendError("This model was closed; load it again to caption.")
        self._cancelled.clear()
        llama_cpp.llama_set_abort_callback(self._ctx, NO_ABORT, None)

    def _check_budget(self, layout: list[PromptChunk], max_tokens: int, n_images: int,
                      reserved_for: str = "max_tokens") -> None:
        image, prompt = image_tokens(layout), prompt_tokens(layout)
        if prompt + max_tokens > self.n_ctx:
            blamed = "maxTokens" if prompt < self.n_ctx else "prompt"
            images = "image" if n_images == 1 else f"{n_images} images"
            raise ContextOverflowError(
                f"The {images} ({image} tokens) plus prompt ({prompt - image} tokens) plus "
                f"{reserved_for} ({max_tokens}) is {prompt + max_tokens} tokens, more than n_ctx {self.n_ctx}. "
                f"{'Send fewer images, use' if n_images > 1 else 'Lower max_tokens, use'} detail=\"low\", "
                "or load the model with a larger n_ctx.",
                parameter=blamed,
            )

    def _evaluate(self, tokenized: Tokenized) -> Generator[Progress, None, dict[str, Any]]:
        """Evaluate every chunk, reporting progress; returns seconds per stage.

        The image prefix (``[INST] <image>``) is not evaluated again when it can be had cheaper: still in
        the context from the last call on the same image (its later tokens are dropped, nothing is
        copied), or restored from the prefix cache. A newly evaluated prefix goes into the cache when
        the cache is on. The context holds a prefix (``_resident``) only once it is complete, so a caption
        stopped part-way leaves the next call to clear or trim the context."""
        stages: dict[str, Any] = {"image_encode_s": 0.0, "image_prefill_s": 0.0, "text_prefill_s": 0.0}
        count, prefix_end = tokenized.count, tokenized.prefix_end
        key = self._prefix_key(tokenized) if prefix_end else None
        resident, self._resident = self._resident, None
        n_past = self._reuse_resident(resident, key, stages)
        if n_past is None:
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), True)
            n_past = self._restore_prefix(key, stages) if key and self.prefix_cache.enabled else None
        meter = _Meter(tokenized, range(prefix_end if n_past is not None else 0, count))
        yield from meter.start()
        if n_past is None:
            n_past = yield from self._eval_chunks(tokenized, range(prefix_end), 0, stages, meter)
            if key and self.prefix_cache.enabled:
                self.prefix_cache.put(key, self._snapshot(n_past))
        self._resident = (key, n_past) if key else None
        yield from self._eval_chunks(tokenized, range(prefix_end, count), n_past, stages, meter)
        return stages

    def _reuse_resident(
        self, resident: tuple[str, int] | None, key: str | None, stages: dict[str, Any]
    ) -> int | None:
        """Positions kept when the context already holds this image's prefix, else None."""
        if resident is None or key is None or resident[0] != key:
            return None
        memory = llama_cpp.llama_get_memory(self._ctx)
        if not llama_cpp.llama_memory_seq_rm(memory, 0, resident[1], -1):
            return None
        stages["prefix_cache_hit"] = True
        return resident[1]

    def _eval_chunks(
        self, tokenized: Tokenized, indices: range, n_past: int, stages: dict[str, Any], meter: _Meter
    ) -> Generator[Progress, None, int]:
        """Evaluate chunks from position ``n_past``, a progress event after every call into llama.cpp (the
        caller may stop there); the new n_past."""
        for index in indices:
            chunk = tokenized.chunk(index)
            if tokenized.is_image(index):
                steps = eval_image(self._mtmd, self._ctx, chunk, n_past, self.options.n_batch,
                                   self._raise_if_cancelled)
                prefill_stage = "image_prefill_s"
            else:
                steps = eval_text(self._ctx, tokenized.text_tokens(index), n_past, self.options.n_batch,
                                  last=index == tokenized.count - 1, on_failure=self._raise_if_cancelled)
                prefill_stage = "text_prefill_s"
            for stage, amount, seconds in steps:
                stages["image_encode_s" if stage == ENCODE else prefill_stage] += seconds
                yield meter.step(stage, amount, seconds)
                raise_if_interrupted()
                self._raise_if_cancelled()
            n_past += tokenized.n_pos(index)
        return n_past

    def _prefix_key(self, tokenized: Tokenized) -> str:
        prefix = self.files.template.split("{image}")[0]
        return hashlib.sha256(f"{self._identity}|{prefix}|{tokenized.image_key}".encode()).hexdigest()

    def _snapshot(self, n_past: int) -> PrefixState:
        size = llama_cpp.llama_state_seq_get_size(self._ctx, 0)
        data = bytearray(size)  # llama.cpp writes straight into it: one copy of a state of ~360 MB, not three
        view = (ctypes.c_uint8 * size).from_buffer(data)
        written = llama_cpp.llama_state_seq_get_data(self._ctx, view, size, 0)
        del view  # releases the buffer so it may shrink
        del data[written:]
        return PrefixState(n_past, data)

    def _restore_prefix(self, key: str, stages: dict[str, Any]) -> int | None:
        state = self.prefix_cache.get(key)
        if state is None:
            return None
        began = time.perf_counter()
        view = (ctypes.c_uint8 * len(state.data)).from_buffer(state.data)  # no copy
        restored = llama_cpp.llama_state_seq_set_data(self._ctx, view, len(state.data), 0)
        del view
        if restored == 0:
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), True)
            return None
        stages["image_prefill_s"] = time.perf_counter() - began
        stages["prefix_cache_hit"] = True
        return state.n_past


def _checked(
    image: Image.Image | Sequence[Image.Image], prompt: str | Sequence[str]
) -> tuple[list[Image.Image], str | list[str]]:
    """The images as a list, and the prompt: one text, or one text per image."""
    images = [image] if isinstance(image, Image.Image) else list(image)
    if not images:
        raise ValueError("give at least one image")
    if not isinstance(prompt, str) and len(prompt) != len(images):
        raise ValueError(f"give one prompt text per image: {len(images)} images, {len(prompt)} texts")
    return images, prompt if isinstance(prompt, str) else list(prompt)


class _Meter:
    """Counts the tiles encoded and prompt tokens evaluated by one call, as ``Progress`` events."""

    def __init__(self, tokenized: Tokenized, indices: range):
        images = [index for index in indices if tokenized.is_image(index)]
        tokens = sum(int(mtmd.mtmd_input_chunk_get_n_tokens(tokenized.chunk(index))) for index in indices)
        self.totals = {ENCODE: len(images), PREFILL: tokens}
        self.done = {ENCODE: 0, PREFILL: 0}
        self.elapsed = {ENCODE: 0.0, PREFILL: 0.0}

    def start(self) -> Iterator[Progress]:
        """A first event per stage with work to do (``done`` 0), so a display knows the totals at once."""
        for stage in (ENCODE, PREFILL):
            if self.totals[stage]:
                yield Progress.measured(stage, 0, self.totals[stage], 0.0)

    def step(self, stage: str, amount: int, seconds: float) -> Progress:
        self.done[stage] += amount
        self.elapsed[stage] += seconds
        return Progress.measured(stage, self.done[stage], self.totals[stage], self.elapsed[stage])
