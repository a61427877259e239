"""Turn a model choice into local files: a synthetic preset, explicit paths, or a registry variant."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ModelFileError
from .registry import ModelFiles, load_registry


def model_files(
    model: str | None = None,
    *,
    model_path: str | os.PathLike[str] | None = None,
    mmproj_path: str | os.PathLike[str] | None = None,
    registry: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
) -> ModelFiles:
    """Local files for ``model``: ``synthetic-<preset>``, a variant id / alias / AIR id (downloaded on
    first use), or ``model_path`` + ``mmproj_path`` given explicitly.

    Raises:
        UnknownModelError, ModelFileError, ModelNotCachedError, DownloadError.
    """
    if model_path is not None or mmproj_path is not None:
        return _local_files(model_path, mmproj_path, registry)
    from .synthetic import build_synthetic_pair, synthetic_preset_for

    preset = synthetic_preset_for(model) if model else None
    if preset is not None:
        return build_synthetic_pair(preset)
    spec = load_registry(registry).resolve(model)
    from .download import download_model

    return download_model(spec, cache_dir=cache_dir, offline=offline)


def _local_files(
    model_path: str | os.PathLike[str] | None, mmproj_path: str | os.PathLike[str] | None, registry: object
) -> ModelFiles:
    if model_path is None or mmproj_path is None:
        raise ModelFileError("Give both model_path (the text-model GGUF) and mmproj_path (its vision projector).")
    for path in (model_path, mmproj_path):
        if not Path(path).is_file():
            raise ModelFileError(f"No model file at {path}.")
    template = load_registry(registry).resolve(None).template  # type: ignore[arg-type]
    return ModelFiles(Path(model_path), Path(mmproj_path), template, name=Path(model_path).name)
