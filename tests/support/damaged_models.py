"""A model cache in which one installed model is damaged, for the failed-load tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from llava_edge.models.synthetic import build_synthetic_pair


def cache_with_damaged_small(root: Path) -> Path:
    """Under ``root``: a synthetic cache holding the tiny pair and a ``kquant-small`` pair whose text model is
    damaged; the damaged file's path. Point ``LLAVA_EDGE_CACHE`` at ``root / "cache"`` to use it."""
    cache = root / "cache"
    real = build_synthetic_pair("tiny").model_path.parent
    shutil.copytree(real, cache / "synthetic" / real.name)
    broken = cache / "synthetic" / real.name.replace("tiny", "kquant-small")
    shutil.copytree(real, broken)
    (broken / "model.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    return broken / "model.gguf"
