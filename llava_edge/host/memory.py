"""Memory: total and available RAM, and how much of it Metal lets one process keep on the GPU.

Linux reads ``/proc/meminfo`` (``MemAvailable``: what a new process can use without swapping). macOS
reads ``hw.memsize`` and ``vm_stat``; available is free plus inactive pages, as psutil counts it.
Elsewhere total comes from ``sysconf`` and available is taken to be total.

Metal's working-set limit (``MTLDevice.recommendedMaxWorkingSetSize``) is what Apple Silicon lets the GPU
keep resident; a model larger than that spills off the GPU. It is estimated from ``hw.memsize`` with
Apple's default fraction (about 2/3 of RAM up to 36 GB, 3/4 above), or read from ``iogpu.wired_limit_mb``
when the user raised it (``sudo sysctl iogpu.wired_limit_mb=...``). ``runtime.probe`` replaces the
estimate with the figure the llama.cpp build reports, when it reports one.
"""

from __future__ import annotations

import os
import platform as _platform
import re
import sys

from llava_edge.host import raw

_SMALL_MAC = 36 * 2**30
"""Up to this much RAM, Metal's default working set is about 2/3 of it; above, about 3/4."""


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` as bytes per key (``MemTotal``, ``MemAvailable``, ...)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            values[key.strip()] = int(fields[0]) * (1024 if fields[1:2] == ["kB"] else 1)
    return values


def parse_vm_stat(text: str) -> int | None:
    """Available bytes from macOS ``vm_stat`` output: (free + inactive pages) x page size."""
    size = re.search(r"page size of (\d+) bytes", text)
    pages = dict(re.findall(r"^Pages (\w+):\s+(\d+)\.?$", text, re.MULTILINE))
    if size is None or "free" not in pages:
        return None
    return (int(pages["free"]) + int(pages.get("inactive", 0))) * int(size.group(1))


def metal_limit_estimate(memsize: int, wired_limit_mb: int | None = None) -> int:
    """Metal's working-set limit in bytes for a Mac with ``memsize`` bytes of RAM (see the module docstring)."""
    if wired_limit_mb:
        return wired_limit_mb * 2**20
    return memsize * 2 // 3 if memsize <= _SMALL_MAC else memsize * 3 // 4


def total_memory(platform: str = sys.platform) -> int:
    """Physical memory in bytes."""
    if platform == "darwin":
        memsize = raw.sysctl_int("hw.memsize")
        if memsize:
            return memsize
    found = parse_meminfo(raw.read_text("/proc/meminfo")).get("MemTotal")
    return found or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_memory(platform: str = sys.platform) -> int:
    """Memory a new process can use without swapping, in bytes."""
    if platform == "darwin":
        found = parse_vm_stat(raw.command_output("vm_stat"))
    else:
        found = parse_meminfo(raw.read_text("/proc/meminfo")).get("MemAvailable")
    return found or total_memory(platform)


def metal_working_set_limit(platform: str = sys.platform, machine: str | None = None) -> int | None:
    """Metal's working-set limit estimate on Apple Silicon, in bytes; ``None`` elsewhere (no Metal)."""
    machine = _platform.machine() if machine is None else machine
    if platform != "darwin" or machine != "arm64":
        return None
    return metal_limit_estimate(total_memory(platform), raw.sysctl_int("iogpu.wired_limit_mb"))
