"""The decoding loop: sample after the prompt until end of generation, a stop string, or max_tokens, and
report each token's settled text as it comes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import llama_cpp

from llava_edge.errors import GenerationTimeoutError, RuntimeBackendError
from llava_edge.events import TextDelta, TextStream
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
from llava_edge.runtime.parking import MakeWay
from llava_edge.runtime.sampling import TokenSampler, token_piece

__all__ = ["Decoder", "token_piece"]


class Decoder:
    """Samples tokens after the prompt until EOS, a stop string, or max_tokens. With ``options.grammar`` every
    token follows the grammar and EOS comes only once it is complete, so an answer that ends with "stop" and
    was not cut by a stop string is a whole document; one cut by max_tokens ends with "length"."""

    def __init__(
        self, context: Any, vocab: Any, options: GenerationOptions, *, started: float,
        stages: dict[str, Any], layout: list[PromptChunk], raise_if_cancelled: Callable[[], None],
        make_way: MakeWay | None = None,
    ):
        self.context, self.vocab, self.options = context, vocab, options
        self.started, self.stages, self.layout = started, stages, layout
        self.raise_if_cancelled = raise_if_cancelled
        self.make_way = make_way
        """Before each generated token's decode (``parking``): other work may run; its time is not the
        caption's, so the deadlines leave it out."""
        self.parked_s = 0.0
        self.sampler = TokenSampler(options, vocab)

    def events(self) -> Iterator[TextDelta | Generation]:
        """Decode to the end: a ``TextDelta`` per sampled token, the rest of the text in a last delta when
        some was held back, then the ``Generation`` (the text, why it ended, the timings of every stage).
        Closing the iterator stops decoding; the sampler is freed either way."""
        stream = TextStream(self.options.stop)
        # Tokens enough to hold any stop string (a token has at least one byte): only they are searched, so a
        # token costs the same however long the answer grows.
        window = max((len(word.encode()) for word in self.options.stop), default=0) + 1
        pieces: list[bytes] = []
        reason, first_token_at = "length", None
        try:
            for _ in range(self.options.max_tokens):
                began = time.perf_counter()
                token = self.sampler.sample(self.context)
                first_token_at = first_token_at or time.perf_counter()
                self._check_deadlines(began, len(pieces))
                if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                    reason = "stop"
                    break
                pieces.append(token_piece(self.vocab, token))
                if self.options.stop and contains_stop(pieces[-window:], self.options.stop):
                    reason = "stop"
                    break
                yield TextDelta(stream.feed(pieces[-1]), len(pieces))
                if self.make_way is not None:
                    parked = self.make_way()
                    began, self.parked_s = began + parked, self.parked_s + parked
                self._decode(token)
                self._check_deadlines(began, len(pieces))
        finally:
            self.sampler.close()
        generation = self._generation(pieces, reason, first_token_at)
        rest = stream.finish(generation.text)
        if rest:
            yield TextDelta(rest, len(pieces))
        yield generation

    def _check_deadlines(self, began: float, tokens: int) -> None:
        """Between tokens: the last one (since ``began``) and the whole caption within their deadlines."""
        now = time.perf_counter()
        per_token, whole = self.options.token_deadline_s, self.options.deadline_s
        if per_token is not None and now - began > per_token:
            raise GenerationTimeoutError(
                f"One token took {now - began:.1f} s, over the limit of {per_token:g} s per token (token_deadline_s), "
                f"after {tokens} tokens. A schema with many alternatives makes each token slow: simplify it, or "
                "raise the limit.")
        spent = now - self.started - self.parked_s
        if whole is not None and spent > whole:
            raise GenerationTimeoutError(
                f"The caption took {spent:.1f} s, over its limit of {whole:g} s (deadline_s), after "
                f"{tokens} tokens; lower max_tokens or raise the limit.")

    def _decode(self, token: int) -> None:
        tokens = (llama_cpp.llama_token * 1)(token)  # kept alive: the batch only points at it
        batch = llama_cpp.llama_batch_get_one(tokens, 1)
        if llama_cpp.llama_decode(self.context, batch) != 0:
            self.raise_if_cancelled()
            raise RuntimeBackendError("llama.cpp failed to decode a generated token.")
        raise_if_interrupted()
        self.raise_if_cancelled()

    def _generation(self, pieces: list[bytes], reason: str, first_token_at: float | None) -> Generation:
        finished = time.perf_counter()
        text = cut_at_stop(b"".join(pieces).decode("utf-8", "replace"), self.options.stop).strip()
        first = first_token_at or finished
        timings = Timings(
            **self.stages,
            first_token_s=first - self.started,
            decode_s=finished - first - self.parked_s,
            total_s=finished - self.started - self.parked_s,
            image_tokens=image_tokens(self.layout),
            prompt_tokens=prompt_tokens(self.layout),
            generated_tokens=len(pieces),
        )
        return Generation(text=text, finish_reason=reason, timings=timings)
