"""Cores: which CPUs this process may use, how many of them are performance cores, and the default
thread count.

llama.cpp runs best on the performance cores: a thread on an efficiency core finishes its share of each
matrix late and the others wait for it. So where the host reports two or more core types, the default is
the performance cores: Apple Silicon's ``hw.perflevel0.physicalcpu``; on big.LITTLE ARM boards (RK3588,
phones) every usable CPU that is not of the slowest type, the types told apart by ``CPU part`` in
``/proc/cpuinfo`` and ranked by ``cpu_capacity`` (else ``cpuinfo_max_freq``) in ``/sys``. Elsewhere
(x86, a Raspberry Pi's four equal cores) it is every usable logical CPU, as measured on x86.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Mapping

from llava_edge.host import raw

_SYS_CPU = "/sys/devices/system/cpu"


def usable_cpus() -> set[int]:
    """The logical CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def parse_cpu_parts(cpuinfo: str) -> dict[int, str]:
    """Logical CPU -> core type (``implementer:part``) from ARM ``/proc/cpuinfo``; empty elsewhere."""
    parts: dict[int, str] = {}
    for block in cpuinfo.split("\n\n"):
        fields = {key.strip().lower(): value.strip() for key, _, value in
                  (line.partition(":") for line in block.splitlines())}
        if fields.get("processor", "").isdigit() and "cpu part" in fields:
            parts[int(fields["processor"])] = f"{fields.get('cpu implementer', '?')}:{fields['cpu part']}"
    return parts


def arm_performance_cores(parts: Mapping[int, str], speeds: Mapping[int, int], usable: Collection[int]) -> int | None:
    """Usable CPUs not of the slowest core type, where two or more types are among them.

    ``speeds``: each CPU's ``cpu_capacity`` or maximum frequency. ``None`` when there is one core type, or
    the types cannot be ranked (a speed missing, or two types equally fast).
    """
    kinds = {cpu: parts[cpu] for cpu in usable if cpu in parts}
    types = set(kinds.values())
    if len(types) < 2 or any(not speeds.get(cpu) for cpu in kinds):
        return None
    fastest = {kind: max(speeds[cpu] for cpu, of in kinds.items() if of == kind) for kind in types}
    ranked = sorted(fastest.values())
    if ranked[0] == ranked[1]:
        return None
    slowest = min(types, key=fastest.__getitem__)
    return sum(1 for kind in kinds.values() if kind != slowest)


def apple_performance_cores(perf_levels: int | None, perf_level0_cores: int | None) -> int | None:
    """Apple Silicon's performance cores (``hw.perflevel0.physicalcpu``) where ``hw.nperflevels`` is 2+."""
    if perf_levels is None or perf_levels < 2 or not perf_level0_cores:
        return None
    return perf_level0_cores


def cpu_speeds(cpus: Collection[int]) -> dict[int, int]:
    """Each CPU's ``cpu_capacity`` (arm64), else its ``cpuinfo_max_freq``; 0 where neither is reported."""
    speeds: dict[int, int] = {}
    for cpu in cpus:
        text = (raw.read_text(f"{_SYS_CPU}/cpu{cpu}/cpu_capacity")
                or raw.read_text(f"{_SYS_CPU}/cpu{cpu}/cpufreq/cpuinfo_max_freq")).strip()
        speeds[cpu] = int(text) if text.isdigit() else 0
    return speeds


def performance_cores(platform: str = sys.platform) -> int | None:
    """Performance cores this process may use where the host reports two core types, else ``None``."""
    if platform == "darwin":
        return apple_performance_cores(raw.sysctl_int("hw.nperflevels"), raw.sysctl_int("hw.perflevel0.physicalcpu"))
    parts = parse_cpu_parts(raw.read_text("/proc/cpuinfo"))
    if not parts:  # x86 and other single-type hosts: no ARM core types to tell apart
        return None
    usable = usable_cpus()
    return arm_performance_cores(parts, cpu_speeds(usable), usable)


def default_threads(platform: str = sys.platform) -> int:
    """llama.cpp threads when none are given: the performance cores where two core types are reported,
    else every usable logical CPU (see the module docstring)."""
    return performance_cores(platform) or len(usable_cpus())
