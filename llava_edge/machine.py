"""What ``llava-edge info`` and the benchmark reports say about the machine, gathered from ``host``.

This module only arranges the facts; ``llava_edge.host`` reads them.
"""

from __future__ import annotations

import platform
from typing import Any

from llava_edge.host import cores, cpu, memory


def describe(backend: dict[str, Any] | None = None) -> dict[str, Any]:
    """CPU, cores, default threads, memory, Metal's working-set limit and the repack choice.

    ``backend``: what ``runtime.probe`` reported about the llama.cpp build; its ``metal_working_set_bytes``
    (the device's own figure) replaces this module's estimate.
    """
    performance = cores.performance_cores()
    repack = cpu.repack_choice()
    facts: dict[str, Any] = {
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "cpu": cpu.cpu_name(),
        "cpu_features": cpu.cpu_features(),
        "cores_usable": len(cores.usable_cpus()),
        "cores_performance": performance if performance is not None else "one core type",
        "threads": cores.default_threads(),
        "ram_total_gib": _gib(memory.total_memory()),
        "ram_available_gib": _gib(memory.available_memory()),
    }
    metal = (backend or {}).get("metal_working_set_bytes") or memory.metal_working_set_limit()
    if metal:
        source = "reported by Metal" if (backend or {}).get("metal_working_set_bytes") else "estimated"
        facts["metal_working_set_gib"] = f"{_gib(metal)} ({source})"
    facts["repack"] = f"{'on' if repack.enabled else 'off'}: {repack.reason}"
    return facts


def _gib(size: int) -> float:
    return round(size / 2**30, 1)
