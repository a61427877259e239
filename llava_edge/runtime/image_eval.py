"""Image evaluation: libmtmd turns (image, prompt text) into chunks, encodes the image tiles with CLIP and
feeds the embeddings and text to the llama.cpp context."""

from __future__ import annotations

import ctypes
import hashlib
import time
from collections.abc import Callable
from typing import Any, Self

import llama_cpp
import llama_cpp.mtmd_cpp as mtmd
from PIL import Image

from llava_edge.errors import RuntimeBackendError
from llava_edge.generation import PromptChunk


class Tokenized:
    """libmtmd chunks for one (image, prompt text) pair; frees the bitmap and chunks on exit."""

    def __init__(self, mtmd_context: Any, image: Image.Image, prompt_text: str):
        self.bitmap, self.image_key = _bitmap(image)
        self.chunks = mtmd.mtmd_input_chunks_init()
        text = prompt_text.encode("utf-8")
        tokens = mtmd.mtmd_input_text(text=text, text_len=len(text), add_special=True, parse_special=False)
        bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(self.bitmap)
        status = mtmd.mtmd_tokenize(mtmd_context, self.chunks, ctypes.byref(tokens), bitmaps, 1)
        if status != 0:
            self.__exit__()
            raise RuntimeBackendError(f"libmtmd could not tokenize the prompt and image (status {status}).")
        self.count = int(mtmd.mtmd_input_chunks_size(self.chunks))
        self.prefix_end = self._prefix_end()

    def chunk(self, index: int) -> Any:
        return mtmd.mtmd_input_chunks_get(self.chunks, index)

    def is_image(self, index: int) -> bool:
        return bool(mtmd.mtmd_input_chunk_get_type(self.chunk(index)) == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE)

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
        if self.bitmap is not None:
            mtmd.mtmd_bitmap_free(self.bitmap)
            self.bitmap = None

    def layout(self) -> list[PromptChunk]:
        """The text tokens and image token counts, chunk by chunk."""
        chunks = []
        for index in range(self.count):
            chunk = self.chunk(index)
            n_tokens = int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
            if self.is_image(index):
                chunks.append(PromptChunk("image", n_tokens))
                continue
            count = ctypes.c_size_t()
            pointer = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
            chunks.append(PromptChunk("text", n_tokens, tuple(pointer[i] for i in range(count.value))))
        return chunks


def eval_image(
    mtmd_context: Any, context: Any, chunk: Any, n_past: int, n_batch: int, stages: dict[str, Any],
    on_failure: Callable[[], None],
) -> int:
    """Encode an image chunk with CLIP and decode its embeddings; adds to the stage times; new n_past.
    ``on_failure`` runs before a failure is reported (it raises instead when the caption was cancelled)."""
    began = time.perf_counter()
    if mtmd.mtmd_encode_chunk(mtmd_context, chunk) != 0:
        raise RuntimeBackendError("libmtmd failed to encode the image.")
    embeddings = mtmd.mtmd_get_output_embd(mtmd_context)
    encoded = time.perf_counter()
    new_n_past = llama_cpp.llama_pos(0)
    status = mtmd.mtmd_helper_decode_image_chunk(
        mtmd_context, context, chunk, embeddings, n_past, 0, n_batch,
        ctypes.byref(new_n_past), mtmd.mtmd_helper_post_decode_callback(), None,
    )
    if status != 0:
        on_failure()
        raise RuntimeBackendError(f"llama.cpp failed to evaluate the image tokens (status {status}).")
    stages["image_encode_s"] += encoded - began
    stages["image_prefill_s"] += time.perf_counter() - encoded
    return int(new_n_past.value)


def eval_text(
    mtmd_context: Any, context: Any, chunk: Any, n_past: int, n_batch: int, *, last: bool,
    on_failure: Callable[[], None],
) -> int:
    """Decode a text chunk (logits for its last token only when ``last``); new n_past."""
    new_n_past = llama_cpp.llama_pos(0)
    status = mtmd.mtmd_helper_eval_chunk_single(
        mtmd_context, context, chunk, n_past, 0, n_batch, last, ctypes.byref(new_n_past)
    )
    if status != 0:
        on_failure()
        raise RuntimeBackendError(f"llama.cpp failed to evaluate the prompt text (status {status}).")
    return int(new_n_past.value)


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
