"""The CPU: its name, the features llama.cpp's kernels use, and whether weight repacking is on by default.

Linux reads ``/proc/cpuinfo``: ``model name`` and ``flags`` on x86; on ARM the ``CPU part`` of each core
(named from Arm's part numbers) and ``Features``, with the board's name from the device tree
(``/proc/device-tree/model``: "Raspberry Pi 5 Model B Rev 1.0"). macOS reads
``machdep.cpu.brand_string`` and the ``hw.optional`` feature sysctls, named as Linux names them.
"""

from __future__ import annotations

import platform as _platform
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from llava_edge.host import raw
from llava_edge.host.cores import parse_cpu_parts

INTERESTING_FEATURES = (
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8",
    "amx_bf16", "neon", "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2", "sme",
)
"""SIMD and matrix features that llama.cpp's CPU kernels use (``asimddp`` is ARM's dot product)."""
ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57", "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76", "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77",
    "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78", "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710",
    "0xd48": "Cortex-X2", "0xd49": "Neoverse-N2", "0xd4d": "Cortex-A715", "0xd4e": "Cortex-X3", "0xd4f": "Neoverse-V2",
    "0xd80": "Cortex-A520", "0xd81": "Cortex-A720", "0xd82": "Cortex-X4",
}
"""Arm Ltd. (implementer 0x41) part numbers of the cores found in boards and servers."""
_MAC_FEATURES = {
    "hw.optional.neon": "asimd", "hw.optional.arm.FEAT_FP16": "asimdhp", "hw.optional.arm.FEAT_DotProd": "asimddp",
    "hw.optional.arm.FEAT_I8MM": "i8mm", "hw.optional.arm.FEAT_BF16": "bf16", "hw.optional.arm.FEAT_SME": "sme",
    "hw.optional.avx1_0": "avx", "hw.optional.avx2_0": "avx2", "hw.optional.fma": "fma",
    "hw.optional.avx512f": "avx512f",
}
"""macOS feature sysctls (1 when present) and the Linux name of each feature."""


@dataclass(frozen=True)
class RepackChoice:
    """Whether llama.cpp's weight repacking is on by default on an architecture, and why."""

    enabled: bool
    reason: str


def arm_core_names(cpuinfo: str) -> str:
    """The cores of an ARM CPU from ``/proc/cpuinfo``: "4x Cortex-A76 + 4x Cortex-A55" ("" elsewhere)."""
    counts = Counter(_part_name(kind) for kind in parse_cpu_parts(cpuinfo).values())
    return " + ".join(f"{count}x {name}" for name, count in counts.most_common())


def cpu_name_from(cpuinfo: str, board: str = "", brand: str | None = None, fallback: str = "") -> str:
    """The CPU's name from raw values: x86 ``model name``; ARM board and core names; a Mac's brand string."""
    if brand:
        return brand
    cores = arm_core_names(cpuinfo)
    if cores:  # ARM: "model name" is absent, or a 32-bit kernel's "ARMv7 Processor rev 3 (v7l)"
        board = board.replace("\x00", "").strip() or _cpuinfo_value(cpuinfo, "model")
        return f"{board} ({cores})" if board else cores
    return (_cpuinfo_value(cpuinfo, "model name") or _cpuinfo_value(cpuinfo, "cpu model")
            or _cpuinfo_value(cpuinfo, "hardware") or fallback)


def features_from_cpuinfo(cpuinfo: str) -> list[str]:
    """The interesting features in ``/proc/cpuinfo`` (x86 ``flags``, ARM ``Features``), in a fixed order."""
    found: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            found.update(value.split())
    return [feature for feature in INTERESTING_FEATURES if feature in found]


def features_from_sysctl(values: Mapping[str, str | None]) -> list[str]:
    """The interesting features from macOS's ``hw.optional`` sysctls (name -> "1" when present)."""
    found = {name for key, name in _MAC_FEATURES.items() if (values.get(key) or "").strip() == "1"}
    return [feature for feature in INTERESTING_FEATURES if feature in found]


def cpu_name(platform: str = sys.platform) -> str:
    """This CPU's name (see the module docstring)."""
    brand = raw.sysctl("machdep.cpu.brand_string") if platform == "darwin" else None
    board = raw.read_text("/proc/device-tree/model") if platform.startswith("linux") else ""
    fallback = _platform.processor() or _platform.machine()
    return cpu_name_from(raw.read_text("/proc/cpuinfo"), board, brand, fallback)


def cpu_features(platform: str = sys.platform) -> list[str]:
    """The features llama.cpp's kernels use that this CPU has."""
    if platform == "darwin":
        return features_from_sysctl({key: raw.sysctl(key) for key in _MAC_FEATURES})
    return features_from_cpuinfo(raw.read_text("/proc/cpuinfo"))


def cpu_has_amx(platform: str = sys.platform) -> bool:
    """True when the CPU advertises Intel AMX."""
    return "amx_tile" in cpu_features(platform)


def repack_choice(machine: str | None = None) -> RepackChoice:
    """Whether weight repacking (llama.cpp's extra CPU buffer types) is on by default for ``machine``
    (``platform.machine()``), with the reason. Off everywhere for now; see docs/platforms.md."""
    arch = (_platform.machine() if machine is None else machine).lower()
    if arch in ("x86_64", "amd64", "i386", "i686"):
        return RepackChoice(False, "measured on x86-64: it slows the prefill that dominates a caption (Q4_K_M "
                                   "prefill -25 %), keeps a second copy of the weights, and crashes K-quant "
                                   "models on AMX CPUs (llama.cpp #20824)")
    if arch in ("arm64", "aarch64"):
        return RepackChoice(False, "not yet measured on ARM: llama.cpp's ARM repacking reportedly speeds K-quant "
                                   "prefill 1.9-2.6x on a Raspberry Pi 5 (llama.cpp #17494, #19356, #19360) at "
                                   "0.93-0.99x decode and a second copy of the weights; compare with "
                                   "`llava-edge bench --suite sweep` before turning it on")
    return RepackChoice(False, f"not measured on {arch or 'this architecture'}")


def _part_name(kind: str) -> str:
    implementer, _, part = kind.partition(":")
    return ARM_PARTS.get(part.lower(), f"CPU part {part}") if implementer.lower() == "0x41" else f"CPU part {part}"


def _cpuinfo_value(cpuinfo: str, wanted: str) -> str:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == wanted and value.strip():
            return value.strip()
    return ""
