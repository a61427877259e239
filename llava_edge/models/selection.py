"""Memory planning and ``model="auto"``: the largest variant this machine can hold.

The RAM a variant needs at a context of ``n_ctx`` tokens is estimated as::

    model GGUF + mmproj GGUF                      weights, mapped whole into memory
    + KV_BYTES_PER_TOKEN * n_ctx                  the f16 KV cache (512 MiB at n_ctx 4096)
    + COMPUTE_BUFFERS                             llama.cpp and CLIP compute buffers (~0.5 GiB)

and a variant fits when that need is at most the *budget*::

    min(available memory - HEADROOM, MAX_SHARE_OF_TOTAL * total memory[, Metal's working-set limit])

The headroom keeps the machine responsive (the OS, Python, image decoding). The share of total RAM
covers hosts whose "available" figure is generous, so an 8 GB Raspberry Pi gets Q4_K_M (about 5.7 GiB)
and not Q5_K_S (about 6.2 GiB). On Apple Silicon everything llama.cpp offloads to Metal (weights, KV
cache, compute buffers, CLIP) must fit Metal's working-set limit, about 2/3 of RAM up to 36 GB
(``host.memory``): a larger model spills off the GPU, so an 8 GB Mac (limit about 5.3 GiB) gets a
smaller variant than an 8 GB Pi.
"""

from __future__ import annotations

from llava_edge.errors import InsufficientMemoryError
from llava_edge.host import memory
from llava_edge.models.catalog import ModelSpec, Registry

AUTO = "auto"
N_CTX = 4096
KV_BYTES_PER_TOKEN = 2 * 32 * 8 * 128 * 2
"""K and V x 32 layers x 8 KV heads x head dim 128 x 2 bytes (f16): 128 KiB per token for Mistral-7B."""
COMPUTE_BUFFERS = 512 * 2**20
HEADROOM = 2**30
MAX_SHARE_OF_TOTAL = 0.75


def memory_required(spec: ModelSpec, n_ctx: int = N_CTX) -> int:
    """Bytes of RAM the variant needs at ``n_ctx`` tokens of context (see the module docstring)."""
    return spec.model.size + spec.mmproj.size + KV_BYTES_PER_TOKEN * n_ctx + COMPUTE_BUFFERS


def memory_budget(available: int | None = None, total: int | None = None, gpu_limit: int | None = None) -> int:
    """Bytes a variant may use here; ``available``/``total`` default to this machine's. ``gpu_limit``:
    Metal's working-set limit, which also bounds the budget (``None``: no such limit)."""
    available = memory.available_memory() if available is None else available
    total = memory.total_memory() if total is None else total
    budget = min(available - HEADROOM, int(total * MAX_SHARE_OF_TOTAL))
    return budget if gpu_limit is None else min(budget, gpu_limit)


def choose_auto(
    registry: Registry, *, available: int | None = None, total: int | None = None, gpu_limit: int | None = None,
    n_ctx: int = N_CTX,
) -> ModelSpec:
    """The variant with the largest memory need that fits the budget. ``available``, ``total`` and
    ``gpu_limit`` default to this machine's (``gpu_limit``: Metal's working-set limit on Apple Silicon).

    Raises:
        InsufficientMemoryError: not even the smallest variant fits; says what it needs.
    """
    available = memory.available_memory() if available is None else available
    total = memory.total_memory() if total is None else total
    gpu_limit = memory.metal_working_set_limit() if gpu_limit is None else gpu_limit
    budget = memory_budget(available, total, gpu_limit)
    fitting = [spec for spec in registry.models.values() if memory_required(spec, n_ctx) <= budget]
    if fitting:
        return max(fitting, key=lambda spec: memory_required(spec, n_ctx))
    smallest = min(registry.models.values(), key=lambda spec: memory_required(spec, n_ctx))
    need = memory_required(smallest, n_ctx)
    raise InsufficientMemoryError(
        f"No model variant fits in this machine's memory. The smallest, {smallest.id}, needs about "
        f"{_gib(need)} at n_ctx {n_ctx} (weights {_gib(smallest.size)} + KV cache and buffers), so it wants "
        f"{_gib(need + HEADROOM)} of available memory and {_gib(need / MAX_SHARE_OF_TOTAL)} of RAM in total; "
        f"this machine has {_gib(available)} available of {_gib(total)}"
        f"{'' if gpu_limit is None else f', and Metal keeps at most {_gib(gpu_limit)} on the GPU'}. "
        f"Close other programs, use a "
        f"machine with more memory, or pass model_path= and mmproj_path= for a smaller model."
    )


def resolve_variant(name: str | None, registry: Registry) -> ModelSpec:
    """The variant named by an id, alias or AIR id; ``auto`` chooses by memory; ``None`` is the default.

    Raises:
        UnknownModelError, InsufficientMemoryError.
    """
    if name is not None and name.strip().lower() == AUTO:
        return choose_auto(registry)
    return registry.resolve(name)


def _gib(size: float) -> str:
    return f"{size / 2**30:.1f} GiB"
