"""Facts about the machine: CPU, cores and memory. Standard library only, read at call time."""

from __future__ import annotations

import os
import platform
from pathlib import Path

_INTERESTING_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni",
                      "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd", "sve")


def cpu_model() -> str:
    """The CPU's marketing name, or the platform's processor string."""
    for line in _cpuinfo_lines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD / matrix features that matter to llama.cpp, as the kernel reports them."""
    flags: set[str] = set()
    for line in _cpuinfo_lines():
        if line.lower().startswith(("flags", "features")):
            flags.update(line.split(":", 1)[1].split())
    return [flag for flag in _INTERESTING_FLAGS if flag in flags]


def cpu_count() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_has_amx() -> bool:
    """True when the CPU advertises Intel AMX (Linux only; elsewhere False)."""
    return "amx_tile" in cpu_flags()


def total_memory() -> int:
    """Physical memory in bytes."""
    return _meminfo("MemTotal") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_memory() -> int:
    """Memory a new process can use without swapping, in bytes (``MemAvailable`` on Linux)."""
    return _meminfo("MemAvailable") or total_memory()


def _meminfo(key: str) -> int:
    for line in _read_lines("/proc/meminfo"):
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    return 0


def _cpuinfo_lines() -> list[str]:
    return _read_lines("/proc/cpuinfo")


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []
