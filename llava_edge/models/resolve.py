"""Turn a model choice into local files: a synthetic preset, explicit paths, or a registry variant.
Also the table behind ``llava-edge models``: every variant with its size, memory need and status."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from llava_edge.errors import InsufficientMemoryError, ModelFileError
from llava_edge.models.catalog import ModelFiles, load_registry
from llava_edge.models.ollama_names import ollama_tag
from llava_edge.models.selection import choose_auto, memory_required, resolve_variant
from llava_edge.models.synthetic import Quantizer


@dataclass(frozen=True)
class VariantInfo:
    """One row of ``llava-edge models``."""

    id: str
    quant: str
    aliases: list[str]
    size_bytes: int
    """Model + mmproj on disk, as the hub lists them."""
    memory_bytes: int
    """RAM needed at n_ctx 4096 (see ``selection.memory_required``)."""
    downloaded: bool
    default: bool
    auto: bool
    """The variant ``model="auto"`` picks on this machine."""


def model_files(
    model: str | None = None,
    *,
    model_path: str | os.PathLike[str] | None = None,
    mmproj_path: str | os.PathLike[str] | None = None,
    registry: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    quantize: Quantizer | None = None,
) -> ModelFiles:
    """Local files for ``model``: ``synthetic-<preset>``, a variant id / alias / AIR id, ``auto``
    (downloaded on first use, with a progress bar on a terminal), or ``model_path`` + ``mmproj_path``.

    Raises:
        UnknownModelError, ModelFileError, ModelNotCachedError, DownloadError, InsufficientMemoryError.
    """
    if model_path is not None or mmproj_path is not None:
        return _local_files(model_path, mmproj_path, registry)
    from llava_edge.models.synthetic import build_synthetic_pair, synthetic_preset_for

    preset = synthetic_preset_for(model) if model else None
    if preset is not None:
        return build_synthetic_pair(preset, quantize=quantize)
    spec = resolve_variant(model, load_registry(registry))
    from llava_edge.models.download import download_model

    return download_model(spec, registry=registry, cache_dir=cache_dir, offline=offline)


def list_variants(
    *,
    registry: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_dir: str | os.PathLike[str] | None = None,
) -> list[VariantInfo]:
    """Every variant of the registry, in file order, with whether its files are present locally."""
    from llava_edge.models.download import Target, hub_cache_dir, is_downloaded

    loaded = load_registry(registry)
    target = Target(hub_cache_dir(cache_dir), Path(local_dir) if local_dir is not None else None)
    try:
        auto_id: str | None = choose_auto(loaded).id
    except InsufficientMemoryError:
        auto_id = None
    return [
        VariantInfo(
            id=spec.id, quant=spec.quant, size_bytes=spec.size,
            aliases=[*spec.aliases, *(alias for alias, target in loaded.aliases.items() if target == spec.id)],
            memory_bytes=memory_required(spec), downloaded=is_downloaded(spec, target),
            default=spec.id == loaded.default, auto=spec.id == auto_id,
        )
        for spec in loaded.models.values()
    ]


def installed_models(
    *, registry: str | os.PathLike[str] | None = None, cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """Every name that loads a model already on this machine, mapped to the model it loads: each
    downloaded variant's id, aliases (AIR ids among them) and Ollama tag, and ``synthetic-<preset>`` for each
    built synthetic pair. Nothing is downloaded or built. The model ids come first, in registry order."""
    from llava_edge.models.download import Target, hub_cache_dir, is_downloaded
    from llava_edge.models.synthetic import NAME_PREFIX, built_synthetic_presets

    loaded = load_registry(registry)
    target = Target(hub_cache_dir(cache_dir), None)
    present = [spec for spec in loaded.models.values() if is_downloaded(spec, target)]
    names = {spec.id: spec.id for spec in present}
    names.update({NAME_PREFIX + preset: NAME_PREFIX + preset for preset in built_synthetic_presets()})
    for spec in present:
        names.update({alias: spec.id for alias in (*spec.aliases, ollama_tag(spec.id))})
        names.update({alias: target_id for alias, target_id in loaded.aliases.items() if target_id == spec.id})
    return names


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
