"""Teacher-forced scoring: the model's next-token logits at every position of a given caption.

The image and prompt go through the engine's own evaluation path (``LlavaRuntime.evaluated_prompt``: the same
libmtmd chunks, CLIP encode, batches and image-prefix reuse as a caption), so the distribution for the
caption's first token is exactly the one ``generate`` samples from. The caption tokens then go in as
batches with logits on for every position. Used by ``llava-edge eval`` to compare quantization
variants against a reference model on the same reference captions.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import llama_cpp
import numpy as np
from PIL import Image

from llava_edge.errors import RuntimeBackendError
from llava_edge.generation import image_tokens, prompt_tokens
from llava_edge.runtime.backend import raise_if_interrupted
from llava_edge.runtime.engine import LlavaRuntime
from llava_edge.runtime.image_eval import fill_batch
from llava_edge.token_budget import TokenBudget


@dataclass(frozen=True)
class CaptionScore:
    """The logits a model gives a caption, position by position."""

    tokens: tuple[int, ...]
    """The caption's tokens, as scored."""
    logits: np.ndarray[Any, np.dtype[np.float32]]
    """``[len(tokens), n_vocab]`` raw logits: row ``i`` is the distribution for ``tokens[i]`` after the
    image, the prompt and ``tokens[:i]``."""
    image_tokens: int
    prompt_tokens: int
    seconds: float
    """Image + prompt evaluation and the caption batches together."""


def score_caption(
    runtime: LlavaRuntime, image: Image.Image, prompt: str, caption: str | Sequence[int], *,
    max_tokens: int | None = None, budget: TokenBudget | None = None,
) -> CaptionScore:
    """Teacher-force ``caption`` after ``image`` (RGB, already prepared for its detail) and ``prompt``.

    Args:
        runtime: the loaded model pair.
        image, prompt: as for ``LlavaRuntime.generate``.
        caption: the text (tokenized with the model's tokenizer) or its tokens.
        max_tokens: score at most this many caption tokens (the first ones).
        budget: image token budget, as for ``LlavaRuntime.stream``.

    Returns:
        The caption's tokens and the raw logits at each of their positions.

    Raises:
        ValueError: the caption has no tokens.
        ContextOverflowError: image + prompt + caption exceed n_ctx.
        RuntimeBackendError: llama.cpp failed to evaluate.
    """
    tokens = tuple(runtime.tokenize(caption) if isinstance(caption, str) else caption)[:max_tokens]
    if not tokens:
        raise ValueError("the caption to score has no tokens")
    started = time.perf_counter()
    with runtime.evaluated_prompt(image, prompt, reserve=len(tokens), reserved_for="the caption to score",
                                 budget=budget) as held:
        n_vocab = int(llama_cpp.llama_vocab_n_tokens(held.vocab))
        rows = [_logits_row(held.context, -1, n_vocab)]
        rows += _teacher_rows(held.context, tokens[:-1], held.n_past, runtime.options.n_batch, n_vocab)
    seconds = time.perf_counter() - started
    layout = held.layout
    return CaptionScore(tokens, np.stack(rows), image_tokens(layout), prompt_tokens(layout), seconds)


def _logits_row(context: Any, index: int, n_vocab: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    pointer = llama_cpp.llama_get_logits_ith(context, index)
    if not pointer:
        raise RuntimeBackendError(f"llama.cpp kept no logits for output {index}.")
    return np.ctypeslib.as_array(pointer, shape=(n_vocab,)).astype(np.float32, copy=True)


def _teacher_rows(
    context: Any, tokens: Sequence[int], n_past: int, n_batch: int, n_vocab: int
) -> list[np.ndarray[Any, np.dtype[np.float32]]]:
    """Decode ``tokens`` from position ``n_past`` with logits on everywhere; one row per token."""
    rows = []
    batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
    try:
        for offset in range(0, len(tokens), n_batch):
            part = tokens[offset:offset + n_batch]
            fill_batch(batch, part, n_past + offset, logits=True)
            status = llama_cpp.llama_decode(context, batch)
            if status != 0:
                raise RuntimeBackendError(f"llama.cpp failed to evaluate the caption to score (status {status}).")
            raise_if_interrupted()
            rows += [_logits_row(context, index, n_vocab) for index in range(len(part))]
    finally:
        llama_cpp.llama_batch_free(batch)
    return rows
