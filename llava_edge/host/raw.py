"""Raw host values: file text, sysctl values and command output. Each reader fails soft (empty or
``None``), so a fact that cannot be read falls back instead of stopping the program."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

_TIMEOUT_S = 5


def read_text(path: str | Path) -> str:
    """The text of ``path``, or "" when it cannot be read (not Linux, no such device)."""
    try:
        return Path(path).read_text(errors="replace")
    except (OSError, ValueError):
        return ""


def command_output(*command: str) -> str:
    """What ``command`` prints, or "" when it is missing, fails or hangs."""
    if shutil.which(command[0]) is None and not Path(command[0]).is_absolute():
        return ""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else ""


def sysctl(name: str) -> str | None:
    """A macOS/BSD sysctl value as text (``sysctl -n name``), or ``None`` where there is none."""
    program = "/usr/sbin/sysctl" if Path("/usr/sbin/sysctl").exists() else "sysctl"
    value = command_output(program, "-n", name).strip()
    return value or None


def sysctl_int(name: str) -> int | None:
    """A numeric sysctl value, or ``None``."""
    value = sysctl(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
