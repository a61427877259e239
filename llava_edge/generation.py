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
    """Decode threads; default: every core."""
    threads_batch: int | None = None
    """Prefill and CLIP threads; default: every core."""
    flash_attn: bool = True
    """Flash attention, for the text model and CLIP: measured faster for prefill and CLIP encode on the
    real shape (benchmarks/results), which dominate a caption; decode is a few per cent slower."""
    repack: bool = False
    """llama.cpp's extra CPU buffer types (weight repacking, AMX). Off by default: prefill-dominated
    captioning is faster without it, it costs a second copy of the weights, and it crashes K-quant
    models on AMX CPUs with the default build (llama.cpp #20824)."""
    use_mmap: bool = True
    prefix_cache_bytes: int = 0
    """Memory for the evaluated image prefixes of earlier images (about 360 MB for a full 672x672 image).
    A follow-up question about the *last* image needs none of it: its prefix is reused in place. Off by
    default, so an 8 GB device keeps its headroom; raise it to switch between several images."""
    prefix_cache_dir: str | None = None
    """Also keep image prefixes on disk here, so they survive a restart."""


@dataclass(frozen=True)
class GenerationOptions:
    """How an answer is sampled."""

    max_tokens: int = 256
    temperature: float = 0.2
    top_p: float = 0.95
    top_k: int = 40
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
    first_token_s: float = 0.0
    """From the start of the call to the first sampled token."""
    decode_s: float = 0.0
    total_s: float = 0.0
    image_tokens: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefix_cache_hit: bool = False
    """The image's evaluated state came from the prefix cache (encode 0 s; prefill = restore time)."""

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
