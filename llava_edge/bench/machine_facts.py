"""The benchmark's view of the machine: a description, memory bandwidth, and measured child processes.

Memory bandwidth is measured with ``threads`` processes (default: every core) that each take the maximum
of their own resident 256 MiB uint8 array with numpy (a SIMD scan: memory-bound, where a float64 ``sum``
is compute-bound at about 18 GB/s per core), started together behind a barrier; bandwidth is the bytes
they read divided by the slowest process's time, best of ``repeats``. That is the read bandwidth a decode step can
hope for (each token streams the weights once), measured the same way on every machine.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llava_edge.host import cores, cpu, memory
from llava_edge.host.process import busy_seconds, child_peak_rss_bytes

_ARRAY_BYTES = 256 << 20


@dataclass(frozen=True)
class ProcessRun:
    """A finished child process: exit code, output, wall time, its own peak RSS and what others used."""

    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    peak_rss_bytes: int
    cpu_s: float
    """User + system CPU seconds of the child."""
    others_cores: float
    """Average cores busy with *other* processes during the run (machine busy minus the child)."""
    loadavg_before: float
    loadavg_after: float


def run_measured(command: list[str], stdin: str = "", *, timeout: float | None = None,
                 env: dict[str, str] | None = None) -> ProcessRun:
    """Run ``command`` to completion; peak RSS and CPU time come from ``wait4`` on that child only."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        baseline = _baseline()
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=err, text=True, env=env)
        assert process.stdin is not None
        process.stdin.write(stdin)
        process.stdin.close()
        finish = _finish(process, timeout, baseline)
        out.seek(0)
        err.seek(0)
        return finish(out.read(), err.read())


def run_streaming(command: list[str], *, timeout: float | None = None) -> tuple[ProcessRun, list[tuple[float, str]]]:
    """Run ``command`` with stdout and stderr merged into one pipe, stamping each chunk of output with its
    arrival time (seconds since the start), for programs whose own timing lines may be lost at exit."""
    baseline = _baseline()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    chunks = []
    while data := os.read(process.stdout.fileno(), 65536):
        chunks.append((time.perf_counter() - baseline[2], data.decode("utf-8", "replace")))
    process.stdout.close()
    return _finish(process, timeout, baseline)("".join(text for _, text in chunks), ""), chunks


def _baseline() -> tuple[float, float, float]:
    """(1-minute load average, machine busy seconds, start time) before a child starts."""
    return os.getloadavg()[0], busy_seconds(), time.perf_counter()


def _finish(process: subprocess.Popen[Any], timeout: float | None,
            baseline: tuple[float, float, float]) -> Callable[[str, str], ProcessRun]:
    """Reap the child, then build its ProcessRun once its output is known."""
    load, busy_before, started = baseline
    status, usage = _wait(process, timeout)
    wall = time.perf_counter() - started
    cpu_s = usage.ru_utime + usage.ru_stime
    others = max(0.0, (busy_seconds() - busy_before - cpu_s) / wall) if wall > 0 else 0.0

    def build(stdout: str, stderr: str) -> ProcessRun:
        return ProcessRun(returncode=os.waitstatus_to_exitcode(status), stdout=stdout, stderr=stderr, wall_s=wall,
                          peak_rss_bytes=child_peak_rss_bytes(usage), cpu_s=cpu_s, others_cores=others,
                          loadavg_before=load, loadavg_after=os.getloadavg()[0])

    return build


def _wait(process: subprocess.Popen[Any], timeout: float | None) -> tuple[int, Any]:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            process.returncode = os.waitstatus_to_exitcode(status)  # so Popen never waits again
            return status, usage
        if deadline is not None and time.monotonic() > deadline:
            process.kill()
        time.sleep(0.05)


def _reader(size: int, rounds: int, barrier: Any, results: Any) -> None:
    import numpy as np

    data = np.ones(size, dtype=np.uint8)  # touched, so every page is resident
    best = float("inf")
    for _ in range(rounds):
        barrier.wait()
        started = time.perf_counter()
        data.max()
        best = min(best, time.perf_counter() - started)
    results.put(best)


def measure_bandwidth(threads: int | None = None, *, repeats: int = 5, size: int = _ARRAY_BYTES) -> float:
    """Read bandwidth in bytes/s with ``threads`` concurrent readers (see the module docstring)."""
    threads = threads or len(cores.usable_cpus())
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(threads), context.Queue()
    workers = [context.Process(target=_reader, args=(size, repeats, barrier, results)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    times: list[float] = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    return threads * size / max(times)


def describe_machine(*, bandwidth: bool = True) -> dict[str, Any]:
    """CPU model and flags, cores, RAM, OS, Python and (optionally) measured read bandwidth."""
    facts: dict[str, Any] = {
        "cpu": cpu.cpu_name(),
        "cpu_flags": cpu.cpu_features(),
        "cores": len(cores.usable_cpus()),
        "threads": cores.default_threads(),
        "ram_total_gib": round(memory.total_memory() / 2**30, 1),
        "ram_available_gib": round(memory.available_memory() / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }
    if bandwidth:
        facts["bandwidth_gbs"] = round(measure_bandwidth() / 1e9, 1)
        facts["bandwidth_1thread_gbs"] = round(measure_bandwidth(1) / 1e9, 1)
        facts["bandwidth_method"] = (
            "numpy max() over a resident 256 MiB uint8 array per process, all cores started together; "
            "bytes read / slowest process, best of 5"
        )
    return facts
