"""Where the tests keep their files: the checkout's ``.test-cache/`` for what is slow to build, temporary
folders for the rest, and never the user's own cache, data folder or Hugging Face cache."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

TEST_CACHE_ENV = "LLAVA_EDGE_TEST_CACHE"
"""Moves the test cache (to share built models between checkouts); ``LLAVA_EDGE_CACHE`` does not, because
it may name the user's real cache."""

HF_FOLDERS = ("HF_HUB_CACHE", "HF_XET_CACHE", "HF_ASSETS_CACHE", "HF_TOKEN_PATH")
"""Hugging Face variables that would move a folder out of ``$HF_HOME``."""

CHECKOUT = Path(__file__).resolve().parents[2]


def persistent_cache_dir() -> Path:
    """Built synthetic models and test venvs, kept between runs: ``$LLAVA_EDGE_TEST_CACHE``, else the
    git-ignored ``.test-cache/`` in the checkout (CI starts with it empty)."""
    explicit = os.environ.get(TEST_CACHE_ENV)
    return Path(explicit).expanduser() if explicit else CHECKOUT / ".test-cache"


def isolate_session_environment() -> Path:
    """Point llava-edge's cache at the test cache and its data folder and Hugging Face home at a temporary
    folder for the whole run, in ``os.environ`` so that subprocesses inherit them; no hub is reachable.
    Each test then gets fresh data and Hugging Face folders of its own (``isolated_home``). Returns the
    temporary folder, removed when the run ends."""
    scratch = Path(tempfile.mkdtemp(prefix="llava-edge-tests-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    os.environ["LLAVA_EDGE_CACHE"] = str(persistent_cache_dir())
    os.environ["LLAVA_EDGE_HOME"] = str(scratch / "llava-edge")
    os.environ["HF_HOME"] = str(scratch / "hf")
    for name in HF_FOLDERS:
        os.environ.pop(name, None)
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    return scratch
