"""What one call puts in the context: the check that it fits, before any compute, and the progress meter of
its evaluation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import llama_cpp.mtmd_cpp as mtmd

from llava_edge.errors import ContextOverflowError
from llava_edge.events import ENCODE, PREFILL, Progress
from llava_edge.generation import PromptChunk, image_tokens, prompt_tokens


def check_context(layout: list[PromptChunk], n_ctx: int, max_tokens: int, n_images: int,
                  reserved_for: str = "max_tokens") -> None:
    """Refuse a prompt whose tokens plus ``max_tokens`` (``reserved_for`` names them) exceed ``n_ctx``.

    Raises:
        ContextOverflowError: with the numbers and what to change.
    """
    image, prompt = image_tokens(layout), prompt_tokens(layout)
    if prompt + max_tokens <= n_ctx:
        return
    if n_images == 0:
        raise ContextOverflowError(
            f"The conversation ({prompt} tokens) plus {reserved_for} ({max_tokens}) is {prompt + max_tokens} "
            f"tokens, more than n_ctx {n_ctx}. Shorten the conversation, lower {reserved_for}, or load "
            "the model with a larger n_ctx.",
            parameter="messages" if prompt >= n_ctx else "maxTokens",
        )
    images = "image" if n_images == 1 else f"{n_images} images"
    raise ContextOverflowError(
        f"The {images} ({image} tokens) plus prompt ({prompt - image} tokens) plus "
        f"{reserved_for} ({max_tokens}) is {prompt + max_tokens} tokens, more than n_ctx {n_ctx}. "
        f"{'Send fewer images, use' if n_images > 1 else 'Lower max_tokens, use'} detail=\"low\", "
        "or load the model with a larger n_ctx.",
        parameter="maxTokens" if prompt < n_ctx else "prompt",
    )


class Meter:
    """Counts the tiles encoded and prompt tokens evaluated by one call, as ``Progress`` events."""

    def __init__(self, tokenized: Any, indices: range):
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
