"""Process facts: peak resident memory in bytes on every OS, and the CPU time the machine spent busy.

``getrusage``/``wait4`` report ``ru_maxrss`` in KiB on Linux and in bytes on macOS; ``rss_bytes`` is the one
place that knows. Busy time comes from Linux ``/proc/stat`` (0 elsewhere: the benchmark's "other load"
figure is then 0).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from llava_edge.host import raw


def rss_bytes(ru_maxrss: int, platform: str = sys.platform) -> int:
    """``ru_maxrss`` (from ``getrusage`` or ``wait4``) in bytes: macOS reports bytes, Linux and BSD KiB."""
    return ru_maxrss if platform == "darwin" else ru_maxrss * 1024


def peak_rss_bytes() -> int:
    """This process's peak resident memory in bytes (0 where ``getrusage`` is missing)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 0
    return rss_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def child_peak_rss_bytes(usage: Any) -> int:
    """A reaped child's peak resident memory in bytes, from the ``rusage`` that ``os.wait4`` returned."""
    return rss_bytes(int(usage.ru_maxrss))


def parse_busy_seconds(proc_stat: str, ticks_per_second: int) -> float:
    """CPU seconds spent busy since boot from the ``cpu`` line of ``/proc/stat`` (everything but idle and
    iowait); 0 when there is no such line."""
    first = proc_stat.splitlines()[:1]
    fields = first[0].split() if first else []
    if not fields or fields[0] != "cpu":
        return 0.0
    ticks = [int(value) for value in fields[1:9]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks) - idle) / ticks_per_second


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (Linux; 0 elsewhere)."""
    text = raw.read_text("/proc/stat")
    return parse_busy_seconds(text, os.sysconf("SC_CLK_TCK")) if text else 0.0
