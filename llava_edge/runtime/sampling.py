"""llama.cpp's sampler chain for a set of generation options, and how a token is drawn from it."""

from __future__ import annotations

import ctypes
import math
from typing import Any

import llama_cpp
import numpy as np

from llava_edge.errors import StructuredOutputError
from llava_edge.generation import GenerationOptions
from llava_edge.runtime.grammar import grammar_sampler

_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
_FINGERPRINT_TOKENS = 64
_ruled_out_cache: dict[tuple[int, int, bytes], tuple[np.ndarray, np.ndarray]] = {}


def token_piece(vocab: Any, token: int, *, special: bool = False) -> bytes:
    """The bytes of one token (a piece may be part of a UTF-8 character). Control tokens (``<s>``, ``<unk>``)
    are empty unless ``special``, as llama.cpp's grammar sampler reads them."""
    buffer = ctypes.create_string_buffer(64)
    size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, special)
    if size < 0:
        buffer = ctypes.create_string_buffer(-size)
        size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, special)
    return buffer.raw[:size]


def sampler_chain(options: GenerationOptions, vocab: Any = None) -> Any:
    """Greedy at temperature 0; else top-k, top-p, temperature and a seeded draw (``_samplers``). The caller
    frees it.

    With ``options.grammar`` the grammar sampler comes first (on ``vocab``): it rules out every token the
    grammar does not allow, so greedy and sampled decoding alike pick only among allowed ones, and the end of
    generation is allowed only once the grammar is complete.

    Raises:
        SchemaError: the grammar does not parse.
    """
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if options.grammar is not None:
        try:
            llama_cpp.llama_sampler_chain_add(chain, grammar_sampler(vocab, options.grammar))
        except BaseException:
            llama_cpp.llama_sampler_free(chain)
            raise
    for sampler in _samplers(options, vocab):
        llama_cpp.llama_sampler_chain_add(chain, sampler)
    return chain


def _samplers(options: GenerationOptions, vocab: Any) -> list[Any]:
    """The chain after the grammar, in llama.cpp's own order (``common_sampler``): penalties, top-k, typical,
    top-p, min-p, temperature, draw. A sampler at its neutral value is left out, so the default chain is
    unchanged; at temperature 0 only the penalties precede the greedy pick."""
    samplers = []
    penalised = options.repeat_penalty != 1.0 or options.presence_penalty or options.frequency_penalty
    if penalised and options.repeat_last_n != 0:
        n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))  # this llama.cpp's signature still takes it
        samplers.append(llama_cpp.llama_sampler_init_penalties(
            n_vocab, options.repeat_last_n, options.repeat_penalty, options.frequency_penalty,
            options.presence_penalty))
    if options.temperature <= 0:
        return [*samplers, llama_cpp.llama_sampler_init_greedy()]
    seed = llama_cpp.LLAMA_DEFAULT_SEED if options.seed is None else options.seed
    samplers.append(llama_cpp.llama_sampler_init_top_k(options.top_k))
    if options.typical_p < 1.0:
        samplers.append(llama_cpp.llama_sampler_init_typical(options.typical_p, 1))
    samplers.append(llama_cpp.llama_sampler_init_top_p(options.top_p, 1))
    if options.min_p > 0.0:
        samplers.append(llama_cpp.llama_sampler_init_min_p(options.min_p, 1))
    samplers.append(llama_cpp.llama_sampler_init_temp(options.temperature))
    samplers.append(llama_cpp.llama_sampler_init_dist(seed))
    return samplers


class TokenSampler:
    """Draws each next token with ``sampler_chain(options)`` and feeds it back into the chain's state.

    Free text goes through ``llama_sampler_sample``. Under a grammar the draw is done step by step, for three
    reasons. Tokens that are not whole UTF-8 text on their own (byte-fallback pieces such as ``<0xE0>``) are
    ruled out first: llama.cpp's grammar decodes UTF-8 leniently (an overlong or surrogate sequence passes as
    a character), so they could make text that Python counts differently (``maxLength``) or, for a sequence
    that decodes to NUL, make llama.cpp abort. Control tokens (``<s>``, ``<unk>``, ``</s>`` when it does not
    end generation) are ruled out too: the grammar reads them as their text, the answer as nothing, so the two
    would disagree. Characters outside the vocabulary's pieces remain reachable as JSON ``\\u`` escapes. With
    ``options.grammar_depth``, tokens holding ``[`` or ``{`` are ruled out while that many are open. And a step
    where the grammar allows no token raises ``StructuredOutputError`` instead of accepting a token the grammar
    refuses (which aborts llama.cpp).
    """

    def __init__(self, options: GenerationOptions, vocab: Any):
        self.chain = sampler_chain(options, vocab)
        self.constrained = options.grammar is not None
        if self.constrained:
            n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
            self._array = (llama_cpp.llama_token_data * n_vocab)()
            self._data = np.frombuffer(memoryview(self._array), dtype=_TOKEN_DATA)
            self._ids = np.arange(n_vocab, dtype=np.int32)
            self._broken, self._openers = ruled_out_tokens(vocab, n_vocab)
            self._n_vocab = n_vocab
            self._vocab = vocab
            self._nesting = _Nesting(options.grammar_depth)

    def sample(self, context: Any) -> int:
        """The next token after the last evaluated position, accepted into the chain.

        Raises:
            StructuredOutputError: the grammar allows no token here.
        """
        if not self.constrained:
            return int(llama_cpp.llama_sampler_sample(self.chain, context, -1))
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(context, -1), shape=(self._n_vocab,))
        self._data["id"] = self._ids
        self._data["logit"] = logits
        self._data["p"] = 0.0
        self._data["logit"][self._broken] = -np.inf
        if self._nesting.full:
            self._data["logit"][self._openers] = -np.inf
        candidates = llama_cpp.llama_token_data_array(
            ctypes.cast(self._array, llama_cpp.llama_token_data_p), self._n_vocab, -1, False
        )
        llama_cpp.llama_sampler_apply(self.chain, ctypes.byref(candidates))
        chosen = candidates.data[max(candidates.selected, 0)]
        if candidates.selected < 0 or not math.isfinite(chosen.logit):
            raise StructuredOutputError("No token of this model can continue the answer under its grammar (a "
                                        "character the vocabulary cannot write?); simplify the schema or grammar.")
        llama_cpp.llama_sampler_accept(self.chain, chosen.id)
        self._nesting.feed(token_piece(self._vocab, int(chosen.id)))
        return int(chosen.id)

    def close(self) -> None:
        if self.chain is not None:
            llama_cpp.llama_sampler_free(self.chain)
            self.chain = None


def ruled_out_tokens(vocab: Any, n_vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the tokens a grammar must never draw (bytes that are not valid UTF-8 on their own, and control
    tokens that do not end generation), and of those holding ``[`` or ``{``; cached per vocabulary."""
    step = max(1, n_vocab // _FINGERPRINT_TOKENS)
    fingerprint = b"\0".join(token_piece(vocab, token) for token in range(0, n_vocab, step))
    key = (ctypes.cast(vocab, ctypes.c_void_p).value or 0, n_vocab, fingerprint)
    if key not in _ruled_out_cache:
        broken, openers = [], []
        for token in range(n_vocab):
            piece = token_piece(vocab, token)
            try:
                piece.decode("utf-8")
            except UnicodeDecodeError:
                broken.append(token)
            else:
                if piece != token_piece(vocab, token, special=True) and not llama_cpp.llama_vocab_is_eog(vocab, token):
                    broken.append(token)
            if b"[" in piece or b"{" in piece:
                openers.append(token)
        _ruled_out_cache.clear()  # one model is resident at a time
        _ruled_out_cache[key] = (np.array(broken, dtype=np.int64), np.array(openers, dtype=np.int64))
    return _ruled_out_cache[key]


class _Nesting:
    """How many ``[``/``{`` of a JSON answer are open, read from the drawn tokens' bytes (brackets inside
    strings do not count)."""

    def __init__(self, limit: int | None):
        self.limit = limit
        self.depth = 0
        self.in_string = self.escaped = False

    @property
    def full(self) -> bool:
        return self.limit is not None and self.depth >= self.limit

    def feed(self, piece: bytes) -> None:
        if self.limit is None:
            return
        for byte in piece:
            if self.escaped:
                self.escaped = False
            elif self.in_string:
                self.escaped = byte == 0x5C
                self.in_string = byte != 0x22
            elif byte == 0x22:
                self.in_string = True
            elif byte in (0x5B, 0x7B):
                self.depth += 1
            elif byte in (0x5D, 0x7D):
                self.depth -= 1
