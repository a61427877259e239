"""Text-only prompts (a conversation with no image yet): evaluated from the longest token prefix they share
with the text prompt evaluated last, which is still in the context.

Chat clients resend the whole conversation each turn, so a follow-up shares everything up to the previous
answer; only the new tokens are evaluated. At least the last token is always evaluated again, so its logits
are fresh for sampling.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import llama_cpp

from llava_edge.events import PREFILL, Progress
from llava_edge.runtime.image_eval import eval_text
from llava_edge.runtime.parking import MakeWay


def shared_prefix(resident: Sequence[int], tokens: Sequence[int]) -> int:
    """How many leading tokens of ``tokens`` are already in the context (``resident``), leaving at least the
    last one to evaluate."""
    limit = min(len(resident), len(tokens) - 1)
    count = 0
    while count < limit and resident[count] == tokens[count]:
        count += 1
    return count


def eval_text_prompt(
    context: Any, tokens: tuple[int, ...], resident: tuple[int, ...] | None, n_batch: int, on_failure: Any,
    make_way: MakeWay | None = None,
) -> Generator[Progress, None, tuple[int, float]]:
    """Evaluate a text-only prompt, reusing what ``resident`` (the last text prompt, or None) shares with it;
    a ``Progress`` event per batch. Returns (tokens reused, seconds spent)."""
    memory = llama_cpp.llama_get_memory(context)
    keep = shared_prefix(resident, tokens) if resident else 0
    if keep == 0 or not llama_cpp.llama_memory_seq_rm(memory, 0, keep, -1):
        llama_cpp.llama_memory_clear(memory, True)
        keep = 0
    total, done, elapsed = len(tokens) - keep, 0, 0.0
    yield Progress.measured(PREFILL, 0, total, 0.0)
    steps = eval_text(context, tokens[keep:], keep, n_batch, last=True, on_failure=on_failure, make_way=make_way)
    for _, amount, seconds in steps:
        done, elapsed = done + amount, elapsed + seconds
        yield Progress.measured(PREFILL, done, total, elapsed)
    return keep, elapsed
