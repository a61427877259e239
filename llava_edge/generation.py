"""The value objects of a caption: how a model is loaded and sampled, and what comes back. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RuntimeOptions:
    """How a model is loaded. Defaults are the measured best for CPU captioning (see README)."""

    device: str = "auto"
    """auto | cpu | metal | cuda. ``auto`` offloads everything when the build supports a GPU."""
    n_ctx: int = 4096
    """Context length. One full anyres image is 2,880 tokens, so 4096 holds it plus prompt and answer."""
    n_batch: int = 512
    n_ubatch: int = 512
    threads: int | None = None
    """Decode threads; default: the performance cores where the CPU has two core types (Apple Silicon,
    big.LITTLE ARM), else every usable logical CPU (``host.cores.default_threads``)."""
    threads_batch: int | None = None
    """Prefill and CLIP threads; default as ``threads``."""
    flash_attn: bool = True
    """Flash attention, for the text model and CLIP: measured faster for prefill and CLIP encode on the
    real shape (benchmarks/results), which dominate a caption; decode is a few per cent slower."""
    repack: bool = False
    """llama.cpp's extra CPU buffer types (weight repacking, AMX). Off by default, decided per architecture
    in ``host.cpu.repack_choice``: on x86-64 prefill-dominated captioning is measured faster without it, it
    costs a second copy of the weights, and it crashes K-quant models on AMX CPUs with the default build
    (llama.cpp #20824); on ARM it stays off until measured there (docs/platforms.md)."""
    use_mmap: bool = True
    prefix_cache_bytes: int = 0
    """Memory for the evaluated image prefixes of earlier images (about 360 MB for a full 672x672 image).
    A follow-up question about the *last* image needs none of it: its prefix is reused in place. Off by
    default, so an 8 GB device keeps its headroom; raise it to switch between several images."""
    prefix_cache_dir: str | None = None
    """Also keep image prefixes on disk here, so they survive a restart."""


UNTIL_CONTEXT_FULL = -1
"""``GenerationOptions.max_tokens`` for "generate until the context is full" (Ollama's ``num_predict: -1``)."""


@dataclass(frozen=True)
class GenerationOptions:
    """How an answer is sampled: llama.cpp's sampler chain (penalties, top-k, typical, top-p, min-p,
    temperature, seeded draw), in llama.cpp's order. Each sampler at its neutral value is left out."""

    max_tokens: int = 256
    """Tokens to generate at most; ``UNTIL_CONTEXT_FULL`` (-1): as many as the context has room for."""
    temperature: float = 0.2
    """0: greedy (the most likely token every time)."""
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    """Divides the logits of tokens seen in the last ``repeat_last_n`` (1.0: off)."""
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_last_n: int = 64
    """Tokens the penalties look back over (-1: the whole context; 0: off)."""
    seed: int | None = None
    """Sampling seed; ``None`` draws a fresh one per call."""
    stop: tuple[str, ...] = ()
    grammar: str | None = None
    """A GBNF grammar (root rule ``root``) every sampled token must follow; made from a JSON Schema by
    ``llava_edge.api.structured_output``. ``None``: free text."""
    grammar_depth: int | None = None
    """With ``grammar``: the most ``[``/``{`` the answer may have open at once; tokens that would open one more
    are ruled out. Set for grammars made from a JSON Schema, so every answer is shallow enough to check."""
    token_deadline_s: float | None = 10.0
    """Most seconds one token may take (sampling, under a grammar too, and decoding); checked between tokens,
    past it the answer ends with ``GenerationTimeoutError``. ``None``: no limit."""
    deadline_s: float | None = None
    """Most seconds the whole caption may take from its start, checked between tokens (``GenerationTimeoutError``
    past it). ``None`` (default): ``max_tokens`` alone bounds it."""


@dataclass(frozen=True)
class PromptChunk:
    """A piece of the evaluated prompt: text tokens, or an image's token count."""

    kind: str
    """"text" or "image"."""
    n_tokens: int
    tokens: tuple[int, ...] = ()


@dataclass(frozen=True)
class Timings:
    """Seconds per stage of one caption, and token counts."""

    image_encode_s: float = 0.0
    image_prefill_s: float = 0.0
    text_prefill_s: float = 0.0
    image_select_s: float = 0.0
    """Choosing the kept tokens of images under a token budget (0 without one)."""
    first_token_s: float = 0.0
    """From the start of the call to the first sampled token."""
    decode_s: float = 0.0
    total_s: float = 0.0
    image_tokens: int = 0
    """Image tokens fed to the model (under a token budget: the kept ones)."""
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefix_cache_hit: bool = False
    """The image's evaluated state came from the prefix cache (encode 0 s; prefill = restore time)."""
    cached_tokens: int = 0
    """Prompt tokens not evaluated again: an image prefix still in the context or restored from the prefix
    cache, or the tokens a text-only prompt shares with the one before it."""

    @property
    def decode_tokens_per_s(self) -> float:
        return self.generated_tokens / self.decode_s if self.decode_s > 0 else 0.0

    @property
    def prefill_tokens_per_s(self) -> float:
        prefill = self.image_prefill_s + self.text_prefill_s
        return self.prompt_tokens / prefill if prefill > 0 else 0.0


@dataclass(frozen=True)
class Generation:
    """One answer: the text, why it stopped ("stop" or "length"), and its timings."""

    text: str
    finish_reason: str
    timings: Timings = field(default_factory=Timings)


def image_tokens(layout: list[PromptChunk]) -> int:
    """Tokens the image takes in a prompt layout."""
    return sum(chunk.n_tokens for chunk in layout if chunk.kind == "image")


def prompt_tokens(layout: list[PromptChunk]) -> int:
    """Tokens of the whole prompt: text and image."""
    return sum(chunk.n_tokens for chunk in layout)


def contains_stop(pieces: list[bytes], stop: tuple[str, ...]) -> bool:
    text = b"".join(pieces).decode("utf-8", "ignore")
    return any(word and word in text for word in stop)


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    positions = [text.find(word) for word in stop if word and word in text]
    return text[: min(positions)] if positions else text
