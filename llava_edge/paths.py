"""Where llava-edge keeps its files. Environment variables are read at call time, never at import."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """The package's data directory: ``$LLAVA_EDGE_HOME``, else ``$XDG_DATA_HOME/llava-edge``,
    else ``~/.local/share/llava-edge``. Uploaded images and server state live here."""
    explicit = os.environ.get("LLAVA_EDGE_HOME")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "llava-edge"


def cache_dir() -> Path:
    """Regenerable files (synthetic models, image-prefix state): ``$LLAVA_EDGE_CACHE``, else
    ``$XDG_CACHE_HOME/llava-edge``, else ``~/.cache/llava-edge``."""
    explicit = os.environ.get("LLAVA_EDGE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "llava-edge"
