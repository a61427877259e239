"""The decoding loop: sample after the prompt until end of generation, a stop string, or max_tokens."""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from typing import Any

import llama_cpp

from llava_edge.errors import RuntimeBackendError
from llava_edge.generation import (
    Generation,
    GenerationOptions,
    PromptChunk,
    Timings,
    contains_stop,
    cut_at_stop,
    image_tokens,
    prompt_tokens,
)
from llava_edge.runtime.backend import raise_if_interrupted
from llava_edge.runtime.sampling import sampler_chain


def token_piece(vocab: Any, token: int) -> bytes:
    """The bytes of one token (a piece may be part of a UTF-8 character)."""
    buffer = ctypes.create_string_buffer(64)
    size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
    if size < 0:
        buffer = ctypes.create_string_buffer(-size)
        size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
    return buffer.raw[:size]


class Decoder:
    """Samples tokens after the prompt until EOS, a stop string, or max_tokens."""

    def __init__(
        self, context: Any, vocab: Any, options: GenerationOptions, *, started: float,
        stages: dict[str, Any], layout: list[PromptChunk], raise_if_cancelled: Callable[[], None],
    ):
        self.context, self.vocab, self.options = context, vocab, options
        self.started, self.stages, self.layout = started, stages, layout
        self.raise_if_cancelled = raise_if_cancelled
        self.sampler = sampler_chain(options)

    def run(self) -> Generation:
        """Decode to the end; the text, why it ended and the timings of every stage."""
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
        first_token_at = None
        pieces: list[bytes] = []
        for _ in range(self.options.max_tokens):
            token = llama_cpp.llama_sampler_sample(self.sampler, self.context, -1)
            first_token_at = first_token_at or time.perf_counter()
            if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                return pieces, "stop", first_token_at
            pieces.append(token_piece(self.vocab, token))
            if self.options.stop and contains_stop(pieces, self.options.stop):
                return pieces, "stop", first_token_at
            tokens = (llama_cpp.llama_token * 1)(token)  # kept alive: the batch only points at it
            batch = llama_cpp.llama_batch_get_one(tokens, 1)
            if llama_cpp.llama_decode(self.context, batch) != 0:
                self.raise_if_cancelled()
                raise RuntimeBackendError("llama.cpp failed to decode a generated token.")
            raise_if_interrupted()
            self.raise_if_cancelled()
        return pieces, "length", first_token_at
