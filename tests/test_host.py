"""The host facts: read for real on this Linux machine, and for macOS and ARM boards from their raw values
(sysctl output, ``vm_stat``, ``/proc/cpuinfo`` of a Raspberry Pi 5 and of an RK3588 board)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest

from llava_edge import machine
from llava_edge.generation import RuntimeOptions
from llava_edge.host import cores, cpu, memory, raw

GiB = 2**30
linux_only = pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="reads Linux /proc")

PI5_CPUINFO = "".join(
    f"processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
    f"asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\n"
    f"CPU part\t: 0xd0b\nCPU revision\t: 1\n\n" for n in range(4)
) + "Revision\t: d04170\nSerial\t\t: 1234\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n"
"""``/proc/cpuinfo`` of a Raspberry Pi 5 on 64-bit Raspberry Pi OS: four Cortex-A76 cores."""
RK3588_CPUINFO = "".join(
    f"processor\t: {n}\nFeatures\t: fp asimd asimddp\nCPU implementer\t: 0x41\n"
    f"CPU part\t: {'0xd05' if n < 4 else '0xd0b'}\n\n" for n in range(8)
)
"""An RK3588 board (Orange Pi 5): CPUs 0-3 Cortex-A55, 4-7 Cortex-A76."""
RK3588_CAPACITY = {n: 530 if n < 4 else 1024 for n in range(8)}
VM_STAT = """Mach Virtual Memory Statistics: (page size of 16384 bytes)
Pages free:                               12000.
Pages active:                            150000.
Pages inactive:                          148000.
Pages speculative:                         3000.
Pages wired down:                         90000.
"""
"""macOS ``vm_stat`` on Apple Silicon (16 KiB pages)."""
MAC_M2 = {"hw.memsize": "8589934592", "hw.nperflevels": "2", "hw.perflevel0.physicalcpu": "4",
          "machdep.cpu.brand_string": "Apple M2", "hw.optional.neon": "1", "hw.optional.arm.FEAT_DotProd": "1",
          "hw.optional.arm.FEAT_I8MM": "1", "hw.optional.arm.FEAT_BF16": "1", "hw.optional.arm.FEAT_FP16": "1"}
"""sysctl values of an 8 GB MacBook Air M2 (4 performance + 4 efficiency cores)."""


@pytest.fixture
def a_mac(monkeypatch: pytest.MonkeyPatch) -> None:
    """The raw readers answer as an 8 GB M2 Mac does."""
    monkeypatch.setattr(raw, "sysctl", MAC_M2.get)
    monkeypatch.setattr(raw, "command_output", lambda *command: VM_STAT if command == ("vm_stat",) else "")


# memory


@linux_only
def test_memory_on_this_linux_machine_comes_from_proc_meminfo() -> None:
    lines = Path("/proc/meminfo").read_text().splitlines()
    meminfo = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in lines}
    assert memory.total_memory() == meminfo["MemTotal"]
    assert 0 < memory.available_memory() <= memory.total_memory()
    assert memory.metal_working_set_limit() is None


def test_meminfo_is_read_in_bytes() -> None:
    parsed = memory.parse_meminfo("MemTotal:   8024972 kB\nMemAvailable:    7340032 kB\nHugePages_Total:   0\n")
    assert parsed == {"MemTotal": 8024972 * 1024, "MemAvailable": 7340032 * 1024, "HugePages_Total": 0}


def test_a_macs_memory_comes_from_sysctl_and_vm_stat(a_mac: None) -> None:
    assert memory.total_memory("darwin") == 8 * GiB
    assert memory.available_memory("darwin") == (12000 + 148000) * 16384  # free + inactive, as psutil counts
    assert memory.parse_vm_stat("no statistics here") is None


@pytest.mark.parametrize(("ram", "expected"), [(8 * GiB, 8 * GiB * 2 // 3), (16 * GiB, 16 * GiB * 2 // 3),
                                               (36 * GiB, 24 * GiB), (64 * GiB, 48 * GiB), (128 * GiB, 96 * GiB)])
def test_metals_working_set_is_two_thirds_of_ram_up_to_36_gb_then_three_quarters(ram: int, expected: int) -> None:
    assert memory.metal_limit_estimate(ram) == expected


def test_a_raised_wired_limit_replaces_the_estimate(a_mac: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert memory.metal_limit_estimate(8 * GiB, wired_limit_mb=7168) == 7 * GiB
    assert memory.metal_working_set_limit("darwin", "arm64") == 8 * GiB * 2 // 3
    monkeypatch.setattr(raw, "sysctl", {**MAC_M2, "iogpu.wired_limit_mb": "6144"}.get)
    assert memory.metal_working_set_limit("darwin", "arm64") == 6 * GiB
    assert memory.metal_working_set_limit("darwin", "x86_64") is None  # an Intel Mac: no unified memory to share


# cores


def test_the_usable_cpus_are_the_affinity_mask() -> None:
    expected = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    assert cores.usable_cpus() == expected


@linux_only
def test_this_machine_uses_every_usable_cpu_unless_it_reports_two_core_types() -> None:
    if cores.parse_cpu_parts(Path("/proc/cpuinfo").read_text()):
        pytest.skip("an ARM host: its core types decide")
    assert cores.performance_cores() is None
    assert cores.default_threads() == len(cores.usable_cpus())


def test_a_raspberry_pi_5_has_one_core_type_so_every_core_is_used() -> None:
    parts = cores.parse_cpu_parts(PI5_CPUINFO)
    assert parts == {n: "0x41:0xd0b" for n in range(4)}
    assert cores.arm_performance_cores(parts, {n: 1024 for n in range(4)}, range(4)) is None


def test_a_big_little_board_uses_its_big_cores() -> None:
    parts = cores.parse_cpu_parts(RK3588_CPUINFO)
    assert cores.arm_performance_cores(parts, RK3588_CAPACITY, range(8)) == 4
    assert cores.arm_performance_cores(parts, RK3588_CAPACITY, {0, 1, 4}) == 1  # only what the affinity allows
    assert cores.arm_performance_cores(parts, RK3588_CAPACITY, {0, 1}) is None  # one type left
    assert cores.arm_performance_cores(parts, {}, range(8)) is None  # types that cannot be ranked


def test_a_three_cluster_phone_soc_keeps_all_but_the_little_cores() -> None:
    kinds = ["0xd46"] * 4 + ["0xd47"] * 3 + ["0xd48"]  # 4x A510, 3x A710, 1x X2
    parts = {n: f"0x41:{part}" for n, part in enumerate(kinds)}
    speeds = {n: [400, 850, 1024][["0xd46", "0xd47", "0xd48"].index(part)] for n, part in enumerate(kinds)}
    assert cores.arm_performance_cores(parts, speeds, range(8)) == 4


def test_apple_silicon_uses_its_performance_cores(a_mac: None) -> None:
    assert cores.performance_cores("darwin") == 4
    assert cores.default_threads("darwin") == 4
    assert cores.apple_performance_cores(1, 8) is None  # one level (an Intel Mac reports none)
    assert cores.apple_performance_cores(None, None) is None


# cpu


@linux_only
def test_this_cpus_name_and_features_come_from_proc_cpuinfo() -> None:
    text = Path("/proc/cpuinfo").read_text()
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), None)
    if name is not None and not cores.parse_cpu_parts(text):
        assert cpu.cpu_name() == name
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines()
                      if line.lower().startswith(("flags", "features"))), []))
    assert set(cpu.cpu_features()) == flags & set(cpu.INTERESTING_FEATURES)


def test_a_raspberry_pi_is_named_by_its_board_and_cores() -> None:
    assert cpu.cpu_name_from(PI5_CPUINFO) == "Raspberry Pi 5 Model B Rev 1.0 (4x Cortex-A76)"
    assert cpu.cpu_name_from(PI5_CPUINFO, board="Raspberry Pi 5 Model B Rev 1.1\x00") == (
        "Raspberry Pi 5 Model B Rev 1.1 (4x Cortex-A76)")
    assert cpu.features_from_cpuinfo(PI5_CPUINFO) == ["asimd", "asimdhp", "asimddp"]


def test_a_big_little_board_lists_both_core_types() -> None:
    assert cpu.cpu_name_from(RK3588_CPUINFO, board="Orange Pi 5") == "Orange Pi 5 (4x Cortex-A55 + 4x Cortex-A76)"
    unknown = RK3588_CPUINFO.replace("0xd0b", "0xfff")
    assert cpu.cpu_name_from(unknown) == "4x Cortex-A55 + 4x CPU part 0xfff"


def test_an_x86_cpu_is_named_by_its_model_name() -> None:
    cpuinfo = "processor\t: 0\nmodel\t\t: 85\nmodel name\t: Intel(R) Xeon(R) Gold 6430\nflags\t\t: fpu avx2 amx_tile\n"
    assert cpu.cpu_name_from(cpuinfo) == "Intel(R) Xeon(R) Gold 6430"
    assert cpu.features_from_cpuinfo(cpuinfo) == ["avx2", "amx_tile"]
    assert cpu.cpu_name_from("", fallback="aarch64") == "aarch64"


def test_a_macs_cpu_comes_from_sysctl(a_mac: None) -> None:
    assert cpu.cpu_name("darwin") == "Apple M2"
    assert cpu.cpu_features("darwin") == ["asimd", "asimdhp", "asimddp", "i8mm", "bf16"]
    assert cpu.cpu_has_amx("darwin") is False


@pytest.mark.parametrize("arch", ["x86_64", "AMD64", "aarch64", "arm64", "riscv64"])
def test_repack_is_decided_per_architecture_and_stays_off_until_measured(arch: str) -> None:
    choice = cpu.repack_choice(arch)
    assert choice.enabled is RuntimeOptions().repack is False
    assert ("measured on x86-64" in choice.reason) is (arch.lower() in ("x86_64", "amd64"))
    assert ("#19356" in choice.reason) is (arch in ("aarch64", "arm64"))


# what info shows


def test_info_facts_show_cores_threads_memory_and_the_repack_choice() -> None:
    facts = machine.describe()
    assert facts["threads"] == cores.default_threads()
    assert facts["cores_usable"] == len(cores.usable_cpus())
    assert facts["repack"].startswith("off: ")
    assert platform.machine() in facts["os"]
    assert ("metal_working_set_gib" in facts) is (memory.metal_working_set_limit() is not None)


def test_metals_own_figure_replaces_the_estimate(a_mac: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "metal_working_set_limit", lambda: 5 * GiB)
    assert machine.describe()["metal_working_set_gib"] == "5.0 (estimated)"
    assert machine.describe({"metal_working_set_bytes": 5726 * 2**20})["metal_working_set_gib"] == (
        "5.6 (reported by Metal)")


def test_the_build_reports_gpu_memory_only_where_it_has_a_gpu_device() -> None:
    from llava_edge.runtime.backend import backend_info, gpu_backends, gpu_device_memory

    if gpu_backends():
        pytest.skip("a GPU build: its device memory is checked on a GPU machine")
    assert gpu_device_memory() is None  # ggml's device list holds only the CPU
    assert "metal_working_set_bytes" not in backend_info()
