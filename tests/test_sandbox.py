"""The tests keep to their own folders: built models in the checkout's ``.test-cache/``, everything else
in temporary folders, and nothing under the user's home (``~/.cache/llava-edge`` stays untouched)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.sandbox import CHECKOUT, persistent_cache_dir

from llava_edge import paths
from llava_edge.models.download import hub_cache_dir

SUBSET = [
    "tests/test_cli.py::test_caption_json",
    "tests/server/test_server_cli.py::test_serve_synthetic_tiny_end_to_end",
    "tests/models/test_synthetic.py::test_default_cache_dir_follows_env",
    "tests/test_api.py",
]
"""The library, the CLI and ``llava-edge serve`` as subprocesses, each building or finding models."""


def test_the_cache_data_and_hub_folders_are_the_tests_own(tmp_path_factory: pytest.TempPathFactory) -> None:
    assert paths.cache_dir() == persistent_cache_dir()
    for folder in (paths.data_dir(), hub_cache_dir(None)):
        assert folder.is_relative_to(tmp_path_factory.getbasetemp()), folder


@pytest.mark.slow
def test_a_run_with_nothing_set_writes_nothing_under_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    unset = ("LLAVA_EDGE_", "XDG_", "HF_")
    env = {name: value for name, value in os.environ.items() if not name.startswith(unset)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *SUBSET],
        cwd=CHECKOUT, env={**env, "HOME": str(home)}, capture_output=True, text=True, timeout=1200, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(path.relative_to(home) for path in home.rglob("*")) == []
