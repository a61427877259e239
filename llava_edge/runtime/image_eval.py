"""Image evaluation: libmtmd turns (image, prompt text) into chunks, encodes the image tiles with CLIP and
feeds the embeddings and text to the llama.cpp context, one batch at a time, so that a caller sees
progress and can stop between any two calls into llama.cpp."""

from __future__ import annotations

import ctypes
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Self

import llama_cpp
import llama_cpp.mtmd_cpp as mtmd
import numpy as np
from PIL import Image

from llava_edge.errors import RuntimeBackendError
from llava_edge.events import ENCODE, PREFILL
from llava_edge.generation import PromptChunk
from llava_edge.runtime.parking import MakeWay
from llava_edge.runtime.token_selection import Reduction

SELECT = "select"
"""Step kind of the token selection of a budgeted image (reported in the timings, not as progress)."""


class Tokenized:
    """libmtmd chunks for (images, prompt text): the text holds one media marker per image, in order;
    frees the bitmaps and chunks on exit."""

    def __init__(self, mtmd_context: Any, images: Sequence[Image.Image], prompt_text: str):
        self.bitmaps: list[Any] = []
        self.chunks = mtmd.mtmd_input_chunks_init()
        try:
            keys = []
            for image in images:
                bitmap, key = _bitmap(image)
                self.bitmaps.append(bitmap)
                keys.append(key)
            text = prompt_text.encode("utf-8")
            # Special tokens are parsed, as llama-mtmd-cli does: a conversation's "</s>" between turns is the
            # end-of-sequence token Mistral's format wants (the server strips control text from client text).
            tokens = mtmd.mtmd_input_text(text=text, text_len=len(text), add_special=True, parse_special=True)
            bitmaps = (mtmd.mtmd_bitmap_p_ctypes * len(self.bitmaps))(*self.bitmaps)
            status = mtmd.mtmd_tokenize(mtmd_context, self.chunks, ctypes.byref(tokens), bitmaps, len(self.bitmaps))
            if status != 0:
                raise RuntimeBackendError(f"libmtmd could not tokenize the prompt and image (status {status}).")
        except BaseException:
            self.__exit__()
            raise
        self.count = int(mtmd.mtmd_input_chunks_size(self.chunks))
        self.n_images = len(keys)
        self.prefix_end = self._prefix_end()
        self.image_key = keys[0] if len(keys) == 1 else self._joined_key(keys)

    def _joined_key(self, keys: list[str]) -> str:
        """Several images: their keys in order and the text between them (all of the prefix that varies)."""
        between = [self.text_tokens(index) for index in range(1, self.prefix_end) if not self.is_image(index)]
        return hashlib.sha256(f"{'+'.join(keys)}|{between}".encode()).hexdigest()

    def chunk(self, index: int) -> Any:
        return mtmd.mtmd_input_chunks_get(self.chunks, index)

    def is_image(self, index: int) -> bool:
        return bool(mtmd.mtmd_input_chunk_get_type(self.chunk(index)) == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE)

    def image_runs(self) -> list[list[int]]:
        """The image chunks (views) of each image, in order: runs of image chunks between text chunks (the
        pinned templates put text between any two images, so each run is one image)."""
        runs: list[list[int]] = []
        for index in range(self.count):
            if not self.is_image(index):
                continue
            if runs and runs[-1][-1] == index - 1:
                runs[-1].append(index)
            else:
                runs.append([index])
        return runs

    def _prefix_end(self) -> int:
        """Index after the last image chunk: the chunks before it do not depend on the prompt."""
        image_indices = [index for index in range(self.count) if self.is_image(index)]
        return image_indices[-1] + 1 if image_indices else 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.chunks is not None:
            mtmd.mtmd_input_chunks_free(self.chunks)
            self.chunks = None
        for bitmap in self.bitmaps:
            mtmd.mtmd_bitmap_free(bitmap)
        self.bitmaps = []

    def layout(self) -> list[PromptChunk]:
        """The text tokens and image token counts, chunk by chunk."""
        chunks = []
        for index in range(self.count):
            chunk = self.chunk(index)
            n_tokens = int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
            if self.is_image(index):
                chunks.append(PromptChunk("image", n_tokens))
                continue
            chunks.append(PromptChunk("text", n_tokens, self.text_tokens(index)))
        return chunks

    def text_tokens(self, index: int) -> tuple[int, ...]:
        """The tokens of a text chunk."""
        count = ctypes.c_size_t()
        pointer = mtmd.mtmd_input_chunk_get_tokens_text(self.chunk(index), ctypes.byref(count))
        return tuple(pointer[i] for i in range(count.value))

    def n_pos(self, index: int) -> int:
        """The context positions a chunk takes."""
        return int(mtmd.mtmd_input_chunk_get_n_pos(self.chunk(index)))


Step = tuple[str, int, float]
"""What one call into llama.cpp did: (``ENCODE``, 1 tile, seconds) or (``PREFILL``, tokens, seconds); or
the selection of a budgeted image (``SELECT``, 0, seconds)."""


def eval_image(
    mtmd_context: Any, context: Any, chunk: Any, n_past: int, n_batch: int, on_failure: Callable[[], None],
    make_way: MakeWay | None = None,
) -> Iterator[Step]:
    """Encode an image chunk (one tile) with CLIP, then decode its embeddings from position ``n_past``,
    ``n_batch`` at a time; yields a step after the encode and after each batch. ``on_failure`` runs before
    a failure is reported (it raises instead when the caption was cancelled).

    The batches, positions and flags are those of ``mtmd_helper_decode_image_chunk`` for a causal model
    with one position per token (LLaVA), so the context ends the same; a model with M-RoPE positions or
    non-causal image attention is left to that helper, in one call.

    ``make_way`` runs before each step (``parking``); work run then encodes images of its own, so the tile's
    embeddings are copied out of libmtmd's buffer first."""
    if make_way is not None:
        make_way()
    began = time.perf_counter()
    if mtmd.mtmd_encode_chunk(mtmd_context, chunk) != 0:
        raise RuntimeBackendError("libmtmd failed to encode the image.")
    embeddings = mtmd.mtmd_get_output_embd(mtmd_context)  # valid until the next encode
    yield ENCODE, 1, time.perf_counter() - began
    n_tokens = int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
    if mtmd.mtmd_decode_use_mrope(mtmd_context) or mtmd.mtmd_decode_use_non_causal(mtmd_context, chunk):
        began = time.perf_counter()
        _decode_with_helper(mtmd_context, context, chunk, embeddings, n_past, n_batch, on_failure)
        yield PREFILL, n_tokens, time.perf_counter() - began
        return
    owned = _owned_copy(context, embeddings, n_tokens) if make_way is not None else None
    first = owned.ctypes.data if owned is not None else ctypes.cast(embeddings, ctypes.c_void_p).value or 0
    yield from _decode_embeddings(context, first, n_tokens, n_past, n_batch, on_failure, make_way)


def _owned_copy(context: Any, embeddings: Any, n_tokens: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A tile's embeddings copied out of libmtmd's buffer (the next encode reuses that buffer)."""
    n_embd = int(llama_cpp.llama_model_n_embd_inp(llama_cpp.llama_get_model(context)))
    output = ctypes.cast(embeddings, ctypes.POINTER(ctypes.c_float))
    return np.ctypeslib.as_array(output, shape=(n_tokens, n_embd)).copy()


def eval_reduced_image(
    mtmd_context: Any, context: Any, chunks: Sequence[Any], count: int, selection: str, n_past: int,
    n_batch: int, on_failure: Callable[[], None], make_way: MakeWay | None = None,
) -> Iterator[Step]:
    """Encode every view (chunk) of one image with CLIP, keep ``count`` of all their tokens (by
    ``selection``, see ``token_selection``), then decode the kept embeddings from position ``n_past`` at
    contiguous positions, ``n_batch`` at a time. Yields a step after each encode, a ``SELECT`` step after
    each view is taken in (the selection's share of it: a copy, or the view's pooled or kept rows) and one
    after the selection, and a step per batch.

    Raises:
        RuntimeBackendError: the encode or a decode failed, or the model needs another position scheme.
    """
    if mtmd.mtmd_decode_use_mrope(mtmd_context) or mtmd.mtmd_decode_use_non_causal(mtmd_context, chunks[0]):
        raise RuntimeBackendError("This model places image tokens in a way image token budgets do not "
                                  "support; caption without image_tokens.")
    n_embd = int(llama_cpp.llama_model_n_embd_inp(llama_cpp.llama_get_model(context)))
    sizes = [int(mtmd.mtmd_input_chunk_get_n_tokens(chunk)) for chunk in chunks]
    reduction = Reduction(sizes, count, n_embd, selection)  # holds only what the selection needs
    for index, chunk in enumerate(chunks):
        if make_way is not None:
            make_way()
        began = time.perf_counter()
        if mtmd.mtmd_encode_chunk(mtmd_context, chunk) != 0:
            raise RuntimeBackendError("libmtmd failed to encode the image.")
        yield ENCODE, 1, time.perf_counter() - began
        began = time.perf_counter()
        output = ctypes.cast(mtmd.mtmd_get_output_embd(mtmd_context), ctypes.POINTER(ctypes.c_float))
        reduction.add(index, np.ctypeslib.as_array(output, shape=(sizes[index], n_embd)))  # copied: reused
        yield SELECT, 0, time.perf_counter() - began
    began = time.perf_counter()
    kept = reduction.finish().embeddings  # alive while the batches point into it
    del reduction
    yield SELECT, 0, time.perf_counter() - began
    yield from _decode_embeddings(context, kept.ctypes.data, len(kept), n_past, n_batch, on_failure, make_way)


def _decode_embeddings(
    context: Any, first: int, n_tokens: int, n_past: int, n_batch: int, on_failure: Callable[[], None],
    make_way: MakeWay | None,
) -> Iterator[Step]:
    """Decode ``n_tokens`` float32 embeddings at address ``first`` from position ``n_past``, ``n_batch`` at a
    time (no logits), a step per batch; ``make_way`` before each."""
    n_embd = int(llama_cpp.llama_model_n_embd_inp(llama_cpp.llama_get_model(context)))
    batch = _EmbeddingBatch(min(n_batch, n_tokens))
    for offset in range(0, n_tokens, n_batch):
        count = min(n_batch, n_tokens - offset)
        if make_way is not None:
            make_way()
        view = batch.view(first + offset * n_embd * ctypes.sizeof(ctypes.c_float), n_past + offset, count)
        began = time.perf_counter()
        status = llama_cpp.llama_decode(context, view)
        if status != 0:
            on_failure()
            raise RuntimeBackendError(f"llama.cpp failed to evaluate the image tokens (status {status}).")
        yield PREFILL, count, time.perf_counter() - began


def eval_text(
    context: Any, tokens: tuple[int, ...], n_past: int, n_batch: int, *, last: bool,
    on_failure: Callable[[], None], make_way: MakeWay | None = None,
) -> Iterator[Step]:
    """Decode text tokens from position ``n_past``, ``n_batch`` at a time (logits for the very last token
    only when ``last``), as ``mtmd_helper_eval_chunk_single`` does; yields a step per batch, ``make_way``
    before each."""
    batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
    try:
        for offset in range(0, len(tokens), n_batch):
            if make_way is not None:
                make_way()
            part = tokens[offset:offset + n_batch]
            fill_batch(batch, part, n_past + offset, logits=False)
            if last and offset + len(part) == len(tokens):
                batch.logits[len(part) - 1] = True
            began = time.perf_counter()
            status = llama_cpp.llama_decode(context, batch)
            if status != 0:
                on_failure()
                raise RuntimeBackendError(f"llama.cpp failed to evaluate the prompt text (status {status}).")
            yield PREFILL, len(part), time.perf_counter() - began
    finally:
        llama_cpp.llama_batch_free(batch)


def fill_batch(batch: Any, tokens: Sequence[int], first_pos: int, *, logits: bool) -> None:
    """Put ``tokens`` in ``batch`` (sequence 0) at positions from ``first_pos``; logits for all or none."""
    batch.n_tokens = len(tokens)
    for index, token in enumerate(tokens):
        batch.token[index] = token
        batch.pos[index] = first_pos + index
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = 0
        batch.logits[index] = logits


class _EmbeddingBatch:
    """The positions, sequence ids and flags of up to ``capacity`` embeddings; ``view`` points a
    llama_batch at a run of them (nothing is copied)."""

    def __init__(self, capacity: int):
        self.pos = (llama_cpp.llama_pos * capacity)()
        self.n_seq_id = (ctypes.c_int32 * capacity)(*([1] * capacity))
        self.seq_zero = (llama_cpp.llama_seq_id * 1)(0)
        seq_pointer = ctypes.cast(self.seq_zero, ctypes.POINTER(llama_cpp.llama_seq_id))
        self.seq_id = (ctypes.POINTER(llama_cpp.llama_seq_id) * (capacity + 1))(*([seq_pointer] * capacity))
        self.logits = (ctypes.c_int8 * capacity)()

    def view(self, embd_address: int, first_pos: int, count: int) -> Any:
        for index in range(count):
            self.pos[index] = first_pos + index
        batch: Any = llama_cpp.llama_batch()
        batch.n_tokens = count
        batch.embd = ctypes.cast(embd_address, ctypes.POINTER(ctypes.c_float))
        batch.pos = ctypes.cast(self.pos, ctypes.POINTER(llama_cpp.llama_pos))
        batch.n_seq_id = ctypes.cast(self.n_seq_id, ctypes.POINTER(ctypes.c_int32))
        batch.seq_id = ctypes.cast(self.seq_id, ctypes.POINTER(ctypes.POINTER(llama_cpp.llama_seq_id)))
        batch.logits = ctypes.cast(self.logits, ctypes.POINTER(ctypes.c_int8))
        return batch


def _decode_with_helper(
    mtmd_context: Any, context: Any, chunk: Any, embeddings: Any, n_past: int, n_batch: int,
    on_failure: Callable[[], None],
) -> None:
    new_n_past = llama_cpp.llama_pos(0)
    status = mtmd.mtmd_helper_decode_image_chunk(
        mtmd_context, context, chunk, embeddings, n_past, 0, n_batch,
        ctypes.byref(new_n_past), mtmd.mtmd_helper_post_decode_callback(), None,
    )
    if status != 0:
        on_failure()
        raise RuntimeBackendError(f"llama.cpp failed to evaluate the image tokens (status {status}).")


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
