"""The only module that imports ``llama_cpp``: model loading, libmtmd image evaluation, generation.

``LlavaRuntime`` owns one llama.cpp model + context and one libmtmd (CLIP) context. It renders the
package's pinned prompt template (never the GGUF's embedded template), lets libmtmd tile the image
(LLaVA-1.6 anyres: 576 tokens per 336 px view, up to 2,880), checks the context budget before any
compute, evaluates the image and text, and samples the answer with llama.cpp's sampler chain.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Self

import llama_cpp
import llama_cpp.mtmd_cpp as mtmd
from PIL import Image

from . import machine
from .errors import CaptionCancelledError, ContextOverflowError, RuntimeBackendError
from .generation import (
    Generation,
    GenerationOptions,
    PromptChunk,
    RuntimeOptions,
    Timings,
    contains_stop,
    cut_at_stop,
    image_tokens,
    prompt_tokens,
)
from .modelcheck import check_model_pair
from .prefix_cache import PrefixCache, PrefixState
from .registry import ModelFiles

DEVICES = ("auto", "cpu", "metal", "cuda")
_log = logging.getLogger("llava_edge.llama_cpp")
_LOG_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.INFO, 4: logging.WARNING}
"""ggml's DEBUG, INFO, WARN, ERROR. Its warnings are routine (context shorter than trained), so they are
logged at INFO; its errors at WARNING, and the last few are quoted in RuntimeBackendError messages."""
_recent_errors: deque[str] = deque(maxlen=3)
_QUANT_FTYPES = {
    "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "Q4_K_S": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_S,
    "Q5_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
}


_interrupted = threading.Event()


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def _forward_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # An exception cannot cross the C callback: a Ctrl-C that lands here is remembered and re-raised
    # by _raise_if_interrupted() once llama.cpp returns.
    try:
        python_level = _LOG_LEVELS.get(level, logging.DEBUG)
        if python_level >= logging.WARNING:
            _recent_errors.append(text.decode("utf-8", "replace").strip())
        if _log.isEnabledFor(python_level):
            _log.log(python_level, text.decode("utf-8", "replace").rstrip())
    except KeyboardInterrupt:
        _interrupted.set()


@llama_cpp.ggml_abort_callback  # type: ignore[untyped-decorator]
def _ABORT_NOW(data: ctypes.c_void_p) -> bool:
    return True


_NO_ABORT = llama_cpp.ggml_abort_callback()
"""A NULL abort callback: llama.cpp runs every batch to the end."""


def _raise_if_interrupted() -> None:
    if _interrupted.is_set():
        _interrupted.clear()
        raise KeyboardInterrupt


_backend_ready = False


def _init_backend() -> None:
    """Route llama.cpp and libmtmd logs to ``logging`` and initialise the backend, once."""
    global _backend_ready
    if not _backend_ready:
        llama_cpp.llama_log_set(_forward_log, ctypes.c_void_p(0))
        mtmd.mtmd_log_set(_forward_log, ctypes.c_void_p(0))
        mtmd.mtmd_helper_log_set(_forward_log, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _backend_ready = True


class LlavaRuntime:
    """One loaded LLaVA model pair. Thread-safe: calls are serialised by a lock."""

    def __init__(self, files: ModelFiles, options: RuntimeOptions | None = None):
        _init_backend()
        self.files = files
        self.options = options or RuntimeOptions()
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        gpu_layers, clip_on_gpu = _offload_plan(self.options.device)
        _check_repack_safe(self.options.repack)
        check_model_pair(files.model_path, files.mmproj_path)  # llama.cpp may abort on a bad file
        started = time.perf_counter()
        self._model = _load_model(files.model_path, self.options, gpu_layers)
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._ctx = self._new_context()
        self._mtmd = self._new_mtmd(clip_on_gpu)
        self.load_s = time.perf_counter() - started
        self._marker = mtmd.mtmd_default_marker().decode()
        self.prefix_cache = PrefixCache(self.options.prefix_cache_bytes, self.options.prefix_cache_dir)
        self._resident: tuple[str, int] | None = None
        """(prefix key, positions) of the image prefix now in the context, from the last call."""
        self._identity = _identity(files, self.options)
        try:
            _raise_if_interrupted()
        except KeyboardInterrupt:
            self.close()
            raise

    @property
    def n_ctx(self) -> int:
        return int(llama_cpp.llama_n_ctx(self._ctx))

    def cancel(self) -> None:
        """Stop the caption in progress, from another thread: llama.cpp abandons its current batch (an
        image encode already under way still finishes) and ``generate`` raises ``CaptionCancelledError``.
        The next ``generate`` call runs normally."""
        self._cancelled.set()
        if self._ctx is not None:
            llama_cpp.llama_set_abort_callback(self._ctx, _ABORT_NOW, None)

    def _raise_if_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise CaptionCancelledError("The caption was cancelled before it finished.")

    def close(self) -> None:
        """Free the llama.cpp and libmtmd contexts; the runtime is unusable afterwards."""
        with self._lock:
            if self._mtmd is not None:
                mtmd.mtmd_free(self._mtmd)
                self._mtmd = None
            if self._ctx is not None:
                llama_cpp.llama_free(self._ctx)
                self._ctx = None
            if self._model is not None:
                llama_cpp.llama_model_free(self._model)
                self._model = None

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
        return b"".join(self._piece(token) for token in tokens).decode("utf-8", "replace")

    def prompt_text(self, prompt: str) -> str:
        """The full prompt as fed to libmtmd: the pinned template with the media marker for the image."""
        safe_prompt = prompt.replace(self._marker, "")
        return self.files.template.replace("{image}", self._marker).replace("{prompt}", safe_prompt)

    def layout(self, image: Image.Image, prompt: str) -> list[PromptChunk]:
        """Tokenize without evaluating: the text tokens and image token counts the model would see."""
        with self._lock, _Tokenized(self, image, prompt) as tokenized:
            return tokenized.layout()

    def generate(self, image: Image.Image, prompt: str, options: GenerationOptions | None = None) -> Generation:
        """Caption ``image`` (RGB) following ``prompt``.

        Raises:
            ContextOverflowError: image + prompt + max_tokens exceed n_ctx (raised before any compute).
            RuntimeBackendError: llama.cpp failed to encode, decode or sample.
        """
        options = options or GenerationOptions()
        with self._lock:
            self._cancelled.clear()
            llama_cpp.llama_set_abort_callback(self._ctx, _NO_ABORT, None)
            started = time.perf_counter()
            with _Tokenized(self, image, prompt) as tokenized:
                layout = tokenized.layout()
                self._check_budget(layout, options.max_tokens)
                stages = self._evaluate(tokenized)
            _raise_if_interrupted()
            self._raise_if_cancelled()
            return _Decoder(self, options, started, stages, layout).run()

    def _check_budget(self, layout: list[PromptChunk], max_tokens: int) -> None:
        image, prompt = image_tokens(layout), prompt_tokens(layout)
        if prompt + max_tokens > self.n_ctx:
            blamed = "maxTokens" if prompt < self.n_ctx else "prompt"
            raise ContextOverflowError(
                f"The image ({image} tokens) plus prompt ({prompt - image} tokens) plus "
                f"max_tokens ({max_tokens}) is {prompt + max_tokens} tokens, more than n_ctx {self.n_ctx}. "
                "Lower max_tokens, use detail=\"low\", or load the model with a larger n_ctx.",
                parameter=blamed,
            )

    def _evaluate(self, tokenized: _Tokenized) -> dict[str, Any]:
        """Evaluate every chunk; returns seconds per stage.

        The image prefix (``[INST] <image>``) is not evaluated again when it can be had cheaper: still in
        the context from the last call on the same image (its later tokens are dropped, nothing is
        copied), or restored from the prefix cache. A newly evaluated prefix goes into the cache when
        the cache is on."""
        stages: dict[str, Any] = {"image_encode_s": 0.0, "image_prefill_s": 0.0, "text_prefill_s": 0.0}
        count, prefix_end = tokenized.count, tokenized.prefix_end
        key = self._prefix_key(tokenized) if prefix_end else None
        resident, self._resident = self._resident, None
        n_past = self._reuse_resident(resident, key, stages)
        if n_past is None:
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), True)
            n_past = self._restore_prefix(key, stages) if key and self.prefix_cache.enabled else None
        if n_past is None:
            n_past = self._eval_chunks(tokenized, range(prefix_end), 0, stages)
            if key and self.prefix_cache.enabled:
                self.prefix_cache.put(key, self._snapshot(n_past))
        self._resident = (key, n_past) if key else None
        self._eval_chunks(tokenized, range(prefix_end, count), n_past, stages)
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

    def _eval_chunks(self, tokenized: _Tokenized, indices: range, n_past: int, stages: dict[str, Any]) -> int:
        for index in indices:
            chunk = mtmd.mtmd_input_chunks_get(tokenized.chunks, index)
            if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                n_past = self._eval_image(chunk, n_past, stages)
            else:
                began = time.perf_counter()
                n_past = self._eval_text(chunk, n_past, last=index == tokenized.count - 1)
                stages["text_prefill_s"] += time.perf_counter() - began
        return n_past

    def _prefix_key(self, tokenized: _Tokenized) -> str:
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

    def _eval_image(self, chunk: Any, n_past: int, stages: dict[str, float]) -> int:
        began = time.perf_counter()
        if mtmd.mtmd_encode_chunk(self._mtmd, chunk) != 0:
            raise RuntimeBackendError("libmtmd failed to encode the image.")
        embeddings = mtmd.mtmd_get_output_embd(self._mtmd)
        encoded = time.perf_counter()
        new_n_past = llama_cpp.llama_pos(0)
        status = mtmd.mtmd_helper_decode_image_chunk(
            self._mtmd, self._ctx, chunk, embeddings, n_past, 0, self.options.n_batch,
            ctypes.byref(new_n_past), mtmd.mtmd_helper_post_decode_callback(), None,
        )
        if status != 0:
            self._raise_if_cancelled()
            raise RuntimeBackendError(f"llama.cpp failed to evaluate the image tokens (status {status}).")
        stages["image_encode_s"] += encoded - began
        stages["image_prefill_s"] += time.perf_counter() - encoded
        return int(new_n_past.value)

    def _eval_text(self, chunk: Any, n_past: int, *, last: bool) -> int:
        new_n_past = llama_cpp.llama_pos(0)
        status = mtmd.mtmd_helper_eval_chunk_single(
            self._mtmd, self._ctx, chunk, n_past, 0, self.options.n_batch, last, ctypes.byref(new_n_past)
        )
        if status != 0:
            self._raise_if_cancelled()
            raise RuntimeBackendError(f"llama.cpp failed to evaluate the prompt text (status {status}).")
        return int(new_n_past.value)

    def _piece(self, token: int) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        size = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        if size < 0:
            buffer = ctypes.create_string_buffer(-size)
            size = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        return buffer.raw[:size]

    def _new_context(self) -> Any:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.options.n_ctx
        params.n_batch = self.options.n_batch
        params.n_ubatch = self.options.n_ubatch
        params.n_threads = self.options.threads or os.cpu_count() or 1
        params.n_threads_batch = self.options.threads_batch or os.cpu_count() or 1
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if self.options.flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        context = llama_cpp.llama_init_from_model(self._model, params)
        if not context:
            llama_cpp.llama_model_free(self._model)
            raise RuntimeBackendError(
                f"llama.cpp could not create a context of {self.options.n_ctx} tokens. Free memory or lower n_ctx."
            )
        return context

    def _new_mtmd(self, on_gpu: bool) -> Any:
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = on_gpu
        params.print_timings = False
        params.n_threads = self.options.threads_batch or os.cpu_count() or 1
        params.warmup = False
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if self.options.flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        context = mtmd.mtmd_init_from_file(str(self.files.mmproj_path).encode(), self._model, params)
        if not context or not mtmd.mtmd_support_vision(context):
            llama_cpp.llama_free(self._ctx)
            llama_cpp.llama_model_free(self._model)
            raise RuntimeBackendError(
                f"libmtmd could not load the vision projector {self.files.mmproj_path}{_llama_says()}. Check that "
                "it is the mmproj that belongs to this model."
            )
        return context


class _Tokenized:
    """libmtmd chunks for one (image, prompt) pair; frees the bitmap and chunks on exit."""

    def __init__(self, runtime: LlavaRuntime, image: Image.Image, prompt: str):
        self.runtime = runtime
        self.bitmap, self.image_key = _bitmap(image)
        self.chunks = mtmd.mtmd_input_chunks_init()
        text = runtime.prompt_text(prompt).encode("utf-8")
        tokens = mtmd.mtmd_input_text(text=text, text_len=len(text), add_special=True, parse_special=False)
        bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(self.bitmap)
        status = mtmd.mtmd_tokenize(runtime._mtmd, self.chunks, ctypes.byref(tokens), bitmaps, 1)
        if status != 0:
            self.__exit__()
            raise RuntimeBackendError(f"libmtmd could not tokenize the prompt and image (status {status}).")
        self.count = int(mtmd.mtmd_input_chunks_size(self.chunks))
        self.prefix_end = self._prefix_end()

    def _prefix_end(self) -> int:
        """Index after the last image chunk: the chunks before it do not depend on the prompt."""
        image_indices = [
            index for index in range(self.count)
            if mtmd.mtmd_input_chunk_get_type(mtmd.mtmd_input_chunks_get(self.chunks, index))
            == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE
        ]
        return image_indices[-1] + 1 if image_indices else 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.chunks is not None:
            mtmd.mtmd_input_chunks_free(self.chunks)
            self.chunks = None
        if self.bitmap is not None:
            mtmd.mtmd_bitmap_free(self.bitmap)
            self.bitmap = None

    def layout(self) -> list[PromptChunk]:
        chunks = []
        for index in range(mtmd.mtmd_input_chunks_size(self.chunks)):
            chunk = mtmd.mtmd_input_chunks_get(self.chunks, index)
            n_tokens = int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
            if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                count = ctypes.c_size_t()
                pointer = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                chunks.append(PromptChunk("text", n_tokens, tuple(pointer[i] for i in range(count.value))))
            else:
                chunks.append(PromptChunk("image", n_tokens))
        return chunks


class _Decoder:
    """Samples tokens after the prompt until EOS, a stop string, or max_tokens."""

    def __init__(
        self, runtime: LlavaRuntime, options: GenerationOptions, started: float,
        stages: dict[str, Any], layout: list[PromptChunk],
    ):
        self.runtime, self.options, self.started, self.stages, self.layout = runtime, options, started, stages, layout
        self.sampler = _sampler_chain(options)

    def run(self) -> Generation:
        try:
            pieces, reason, first_token_at = self._loop()
        finally:
            llama_cpp.llama_sampler_free(self.sampler)
        finished = time.perf_counter()
        text = cut_at_stop(b"".join(pieces).decode("utf-8", "replace"), self.options.stop).strip()
        first = first_token_at or finished
        timings = Timings(
            **self.stages,
            first_token_s=first - self.started,
            decode_s=finished - first,
            total_s=finished - self.started,
            image_tokens=image_tokens(self.layout),
            prompt_tokens=prompt_tokens(self.layout),
            generated_tokens=len(pieces),
        )
        return Generation(text=text, finish_reason=reason, timings=timings)

    def _loop(self) -> tuple[list[bytes], str, float | None]:
        runtime, first_token_at = self.runtime, None
        pieces: list[bytes] = []
        for _ in range(self.options.max_tokens):
            token = llama_cpp.llama_sampler_sample(self.sampler, runtime._ctx, -1)
            first_token_at = first_token_at or time.perf_counter()
            if llama_cpp.llama_vocab_is_eog(runtime._vocab, token):
                return pieces, "stop", first_token_at
            pieces.append(runtime._piece(token))
            if self.options.stop and contains_stop(pieces, self.options.stop):
                return pieces, "stop", first_token_at
            tokens = (llama_cpp.llama_token * 1)(token)  # kept alive: the batch only points at it
            batch = llama_cpp.llama_batch_get_one(tokens, 1)
            if llama_cpp.llama_decode(runtime._ctx, batch) != 0:
                runtime._raise_if_cancelled()
                raise RuntimeBackendError("llama.cpp failed to decode a generated token.")
            _raise_if_interrupted()
            runtime._raise_if_cancelled()
        return pieces, "length", first_token_at


def _sampler_chain(options: GenerationOptions) -> Any:
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if options.temperature <= 0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    seed = llama_cpp.LLAMA_DEFAULT_SEED if options.seed is None else options.seed
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(options.top_k))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(options.top_p, 1))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(options.temperature))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
    return chain


def _bitmap(image: Image.Image) -> tuple[Any, str]:
    """A libmtmd bitmap of the image's RGB pixels, and a hash of its size and pixels."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    data = rgb.tobytes()
    bitmap = mtmd.mtmd_bitmap_init(rgb.width, rgb.height, (ctypes.c_uint8 * len(data)).from_buffer_copy(data))
    if not bitmap:
        raise RuntimeBackendError(f"libmtmd could not take a {rgb.width}x{rgb.height} image.")
    image_key = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode() + data).hexdigest()
    mtmd.mtmd_bitmap_set_id(bitmap, image_key[:32].encode())
    return bitmap, image_key


def _identity(files: ModelFiles, options: RuntimeOptions) -> str:
    """What the evaluated state depends on: the model files and the options that change numerics."""
    stats = [f"{path}:{path.stat().st_size}:{path.stat().st_mtime_ns}" for path in (files.model_path, files.mmproj_path)]
    numerics = (options.device, options.n_ctx, options.n_batch, options.n_ubatch, options.flash_attn, options.repack)
    return "|".join([*stats, repr(numerics)])


def _load_model(path: Path, options: RuntimeOptions, gpu_layers: int) -> Any:
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = gpu_layers
    params.use_extra_bufts = options.repack
    if not options.use_mmap:
        params.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE
    _recent_errors.clear()
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise RuntimeBackendError(
            f"llama.cpp could not load the model {path}{_llama_says()}. Check the file and free memory."
        )
    return model


def _offload_plan(device: str) -> tuple[int, bool]:
    """(n_gpu_layers, CLIP on GPU) for a device choice."""
    if device not in DEVICES:
        raise RuntimeBackendError(f"device must be one of {', '.join(DEVICES)}, got {device!r}.")
    offload = bool(llama_cpp.llama_supports_gpu_offload())
    if device == "cpu" or (device == "auto" and not offload):
        return 0, False
    if device != "auto" and device not in gpu_backends():
        raise RuntimeBackendError(
            f"This llama-cpp-python build has no {device} support. Reinstall it with "
            f"CMAKE_ARGS=\"-DGGML_{device.upper()}=on\" pip install --force-reinstall --no-cache-dir llama-cpp-python, "
            "or use device=\"cpu\"."
        )
    return 999, True


def _check_repack_safe(repack: bool) -> None:
    if repack and machine.cpu_has_amx() and "AMX_INT8 = 1" in system_info():
        raise RuntimeBackendError(
            "repack=True uses ggml's AMX kernels, which crash on K-quant models on this CPU (llama.cpp #20824). "
            "Keep repack off, or rebuild llama-cpp-python with "
            "CMAKE_ARGS=\"-DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' "
            "-DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'\"."
        )


def _llama_says() -> str:
    """The last errors llama.cpp logged, for an error message ("" when it logged none)."""
    return f" (llama.cpp: {'; '.join(_recent_errors)})" if _recent_errors else ""


def system_info() -> str:
    """llama.cpp's system info line (compiled CPU features and backends)."""
    return bytes(llama_cpp.llama_print_system_info()).decode("utf-8", "replace")


def gpu_backends() -> list[str]:
    """GPU backends compiled into llama.cpp: any of "cuda", "metal" (empty for a CPU-only build)."""
    info = system_info().upper()
    return [name for name in ("cuda", "metal") if name.upper() in info] if llama_cpp.llama_supports_gpu_offload() else []


def backend_info() -> dict[str, Any]:
    """What the installed llama-cpp-python can do: version, GPU offload, compiled features."""
    return {
        "llama_cpp_python": llama_cpp.__version__,
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "gpu_backends": gpu_backends(),
        "system_info": system_info().strip(),
        "cpu_has_amx": machine.cpu_has_amx(),
    }


def quantize_gguf(source: Path, target: Path, quant: str = "Q4_K_M", *, threads: int = 0) -> None:
    """Quantize a GGUF text model with llama.cpp's own quantizer (the real K-quant tensor mix).

    Raises:
        RuntimeBackendError: llama.cpp reported a failure.
    """
    _init_backend()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _QUANT_FTYPES[quant]
    params.nthread = threads
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0:
        raise RuntimeBackendError(f"llama.cpp could not quantize {source} to {quant} (status {status}).")
