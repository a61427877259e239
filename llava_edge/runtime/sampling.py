"""llama.cpp's sampler chain for a set of generation options."""

from __future__ import annotations

from typing import Any

import llama_cpp

from llava_edge.generation import GenerationOptions


def sampler_chain(options: GenerationOptions) -> Any:
    """Greedy at temperature 0; else top-k, top-p, temperature and a seeded draw. The caller frees it."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if options.temperature <= 0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    seed = llama_cpp.LLAMA_DEFAULT_SEED if options.seed is None else options.seed
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(options.top_k))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(options.top_p, 1))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(options.temperature))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
    return chain
