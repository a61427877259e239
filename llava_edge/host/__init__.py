"""The host: the only code that reads the operating system, the CPU and the memory, or calls an API that
differs between platforms. Every other module asks here.

    memory   total and available RAM, Metal's working-set limit (an estimate)
    cpu      CPU name and features, usable and performance cores, default threads, the repack choice
    process  peak RSS in bytes, CPU time the whole machine spent busy
    files    file locks, extended attributes and birth time carried over when a file is rewritten
    tls      the SSL context of outbound HTTPS: the operating system's trust store
    raw      reading files, sysctl values and command output, failing soft

Each fact is a pure function of its raw inputs (the text of ``/proc/meminfo``, a sysctl value), so tests
feed a Mac's or a Raspberry Pi's values on any machine, plus a thin reader that fetches them here.
Supported: Linux (x86-64, ARM64) and macOS. Windows stops early with ``UnsupportedPlatformError``.
"""

from __future__ import annotations

import sys

from llava_edge.errors import UnsupportedPlatformError


def refuse_unsupported_os(platform: str | None = None) -> None:
    """Stop on Windows, where llava-edge is not supported, with the way round it (WSL2). ``platform``:
    a ``sys.platform`` value, this one's when not given.

    Raises:
        UnsupportedPlatformError: ``platform`` is Windows.
    """
    if (platform or sys.platform) in ("win32", "cygwin"):
        raise UnsupportedPlatformError(
            "llava-edge runs on Linux and macOS; Windows is not supported. Install it inside WSL2 "
            "(wsl --install, then pip install llava-edge in the Linux shell) and run it there."
        )
