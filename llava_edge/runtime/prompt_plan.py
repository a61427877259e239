"""What one evaluation feeds, in order: text chunks, image views evaluated one by one (the default), or an
image under a token budget (all its views encoded, then a selection prefilled); and the progress meter.

Without a budget, or with one at or above an image's token count, every chunk is its own segment, so
the evaluation is the same as without budgets (the same calls, batches and positions).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import llama_cpp.mtmd_cpp as mtmd
from PIL import Image

from llava_edge.errors import RuntimeBackendError
from llava_edge.events import ENCODE, PREFILL, Progress
from llava_edge.generation import PromptChunk
from llava_edge.runtime.image_eval import Tokenized
from llava_edge.token_budget import TokenBudget, fed_tokens

TEXT, IMAGE, REDUCED = "text", "image", "reduced"


@dataclass(frozen=True)
class Segment:
    """One piece of the evaluation: a text chunk, an image view (chunk), or a whole image under a budget."""

    kind: str
    """``TEXT``, ``IMAGE`` (one view, as libmtmd made it) or ``REDUCED`` (every view of one image)."""
    chunks: tuple[int, ...]
    """The chunk indices it covers."""
    tokens: int
    """Tokens fed (and context positions taken)."""
    views: int = 0
    """CLIP encodes it needs."""
    selection: str = ""
    """``REDUCED``: how its tokens are chosen (``token_budget.SELECTIONS``)."""


@dataclass(frozen=True)
class Plan:
    """The segments of one evaluation, and the budget that shaped them (``None`` when none reduced anything)."""

    segments: list[Segment]
    budget: TokenBudget | None

    @property
    def prefix_end(self) -> int:
        """Index after the last image segment: the segments before it do not depend on the prompt."""
        images = [index for index, segment in enumerate(self.segments) if segment.kind != TEXT]
        return images[-1] + 1 if images else 0

    def layout(self, tokenized: Tokenized) -> list[PromptChunk]:
        """The text tokens and the image tokens fed, segment by segment."""
        return [
            PromptChunk(TEXT, segment.tokens, tokenized.text_tokens(segment.chunks[0])) if segment.kind == TEXT
            else PromptChunk(IMAGE, segment.tokens)
            for segment in self.segments
        ]


def plan(tokenized: Tokenized, budget: TokenBudget | None) -> Plan:
    """The segments for ``tokenized`` under ``budget`` (per image: ``fed_tokens`` of its full count).

    Raises:
        RuntimeBackendError: libmtmd split the images in an unexpected way (images without text between).
    """
    n_tokens = [int(mtmd.mtmd_input_chunk_get_n_tokens(tokenized.chunk(index))) for index in range(tokenized.count)]
    reduced: dict[int, Segment] = {}
    if budget is not None:
        runs = tokenized.image_runs()
        if len(runs) != tokenized.n_images:
            raise RuntimeBackendError(f"libmtmd made {len(runs)} image runs of {tokenized.n_images} images; caption "
                                      "these images without image_tokens.")
        for run in runs:
            full = sum(n_tokens[index] for index in run)
            if fed_tokens(full, budget.tokens) < full:
                reduced[run[0]] = Segment(REDUCED, tuple(run), budget.tokens, len(run), budget.selection)
    segments: list[Segment] = []
    covered: set[int] = set()
    for index in range(tokenized.count):
        if index in covered:
            continue
        if index in reduced:
            segments.append(reduced[index])
            covered.update(reduced[index].chunks)
        elif tokenized.is_image(index):
            segments.append(Segment(IMAGE, (index,), n_tokens[index], 1))
        else:
            segments.append(Segment(TEXT, (index,), n_tokens[index]))
    return Plan(segments, budget if reduced else None)


class Meter:
    """Counts the views encoded and prompt tokens evaluated by one call, as ``Progress`` events."""

    def __init__(self, segments: Sequence[Segment]):
        self.totals = {ENCODE: sum(segment.views for segment in segments),
                       PREFILL: sum(segment.tokens for segment in segments)}
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


def checked(
    image: Image.Image | Sequence[Image.Image], prompt: str | Sequence[str]
) -> tuple[list[Image.Image], str | list[str]]:
    """The images as a list (none for a text-only prompt), and the prompt: one text, or one text per image."""
    images = [image] if isinstance(image, Image.Image) else list(image)
    if not isinstance(prompt, str) and len(prompt) != max(len(images), 1):
        raise ValueError(f"give one prompt text per image: {len(images)} images, {len(prompt)} texts")
    return images, prompt if isinstance(prompt, str) else list(prompt)
