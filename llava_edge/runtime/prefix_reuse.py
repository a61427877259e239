"""An image prefix (``[INST] <image>``) not evaluated again: still in the context from the last call, or restored
from the prefix cache. Its key names the model files and options, the prompt's prefix, the image's pixels and
any token budget that reduced it."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import llama_cpp

from llava_edge.prefix_cache import PrefixCache
from llava_edge.runtime.image_eval import Tokenized
from llava_edge.runtime.sequence_state import restore
from llava_edge.token_budget import TokenBudget


def prefix_key(identity: str, template: str, tokenized: Tokenized, budget: TokenBudget | None) -> str:
    """The key of the image prefix of ``tokenized`` on the model ``identity`` names."""
    prefix = template.split("{image}")[0]
    reduced = f"|tokens={budget.tag}" if budget is not None else ""  # unchanged for full-token prefixes
    return hashlib.sha256(f"{identity}|{prefix}|{tokenized.image_key}{reduced}".encode()).hexdigest()


def reuse_resident(
    context: Any, resident: tuple[str, int] | None, key: str | None, stages: dict[str, Any]
) -> int | None:
    """Positions kept when the context already holds this image's prefix (its later tokens dropped), else None."""
    if resident is None or key is None or resident[0] != key:
        return None
    memory = llama_cpp.llama_get_memory(context)
    if not llama_cpp.llama_memory_seq_rm(memory, 0, resident[1], -1):
        return None
    stages["prefix_cache_hit"] = True
    stages["cached_tokens"] = resident[1]
    return resident[1]


def restore_prefix(context: Any, cache: PrefixCache, key: str, stages: dict[str, Any]) -> int | None:
    """Positions restored from the prefix cache, else None (not cached, or the restore failed)."""
    state = cache.get(key)
    if state is None:
        return None
    began = time.perf_counter()
    if not restore(context, state):
        return None
    stages["image_prefill_s"] = time.perf_counter() - began
    stages["prefix_cache_hit"] = True
    stages["cached_tokens"] = state.n_past
    return state.n_past
