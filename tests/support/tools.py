"""Tests that need a system tool or an optional package: skip with an install hint where it is missing, fail
instead when ``LLAVA_EDGE_REQUIRE_TOOLS=1`` (CI sets it, so CI never passes by skipping them)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REQUIRE_TOOLS = "LLAVA_EDGE_REQUIRE_TOOLS"


def missing(what: str, install: str) -> None:
    """Skip the test (or fail it under ``LLAVA_EDGE_REQUIRE_TOOLS=1``) because ``what`` is not installed."""
    message = f"needs {what}; install it with: {install}"
    if os.environ.get(REQUIRE_TOOLS) == "1":
        pytest.fail(f"{message} ({REQUIRE_TOOLS}=1 forbids skipping)", pytrace=False)
    pytest.skip(message)


def require_tool(command: str, install: str) -> str:
    """The path of ``command``, or skip/fail with ``install`` as the hint."""
    found = shutil.which(command)
    if found is None:
        missing(f"the {command} command", install)
    assert found is not None
    return found


def require_module(module: str, install: str) -> None:
    """Skip/fail unless the Python package ``module`` can be imported."""
    if importlib.util.find_spec(module) is None:
        missing(f"the Python package {module}", install)


EXIFTOOL_INSTALL = "apt-get install -y libimage-exiftool-perl (Debian/Ubuntu) or brew install exiftool"
PHOTOS_INSTALL = "pip install '.[photos]'"


def exiftool(*paths: Path, args: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """exiftool's reading of ``paths``: one dict per file, tags named ``Group1:Tag`` (``XMP-dc:Description``)."""
    command = require_tool("exiftool", EXIFTOOL_INSTALL)
    result = subprocess.run([command, "-json", "-G1", "-a", "-struct", *args, *map(str, paths)],
                            capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    records: list[dict[str, Any]] = json.loads(result.stdout)
    return records
