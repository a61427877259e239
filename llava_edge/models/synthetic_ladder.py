"""The synthetic quantization ladder: every published variant type, made by llama.cpp's own quantizer from
one f16 base, so quality loss per type can be measured without downloading the real model.

The base is the ``ladder`` preset (``synthetic-ladder``, f16 text model, rows of 256 so every K-quant
applies). Each rung is that text model quantized to one type, cached beside the base and sharing its
mmproj: ``<cache>/synthetic/ladder-seed<seed>-v<N>/model-<TYPE>.gguf``. Rungs are built on first use.

The published ``Q3_K_XS`` is an old llama.cpp mix that today's quantizer no longer makes under that
name: its rung is built as ``Q3_K_S``, the closest current type, and labelled a stand-in.
Random weights give the ladder the structure of real quantization loss, not real caption quality.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from llava_edge.errors import ModelFileError, UnknownModelError
from llava_edge.models.catalog import ModelFiles
from llava_edge.models.synthetic import NAME_PREFIX, TEMPLATE, Quantizer, build_lock, build_synthetic_pair, fsync_file

LADDER_PRESET = "ladder"
BASE_NAME = NAME_PREFIX + LADDER_PRESET
"""``synthetic-ladder``: the f16 base, the ladder's reference."""


@dataclass(frozen=True)
class Rung:
    """One quantization type of the ladder: the published name and the type actually built."""

    variant: str
    """The published variant type (``"Q3_K_XS"``)."""
    quant: str
    """The llama.cpp type built for it (``"Q3_K_S"`` for ``Q3_K_XS``)."""

    @property
    def name(self) -> str:
        """The model name that selects it: ``synthetic-ladder-q4_k_m``."""
        return f"{BASE_NAME}-{self.variant.lower()}"

    @property
    def stand_in(self) -> bool:
        return self.variant != self.quant

    @property
    def label(self) -> str:
        """The type as reports show it, stand-ins marked."""
        return f"{self.variant} (stand-in: built as {self.quant})" if self.stand_in else self.variant


RUNGS = (
    Rung("Q8_0", "Q8_0"),
    Rung("Q6_K", "Q6_K"),
    Rung("Q5_K_M", "Q5_K_M"),
    Rung("Q5_K_S", "Q5_K_S"),
    Rung("Q4_K_M", "Q4_K_M"),
    Rung("Q3_K_M", "Q3_K_M"),
    Rung("Q3_K_XS", "Q3_K_S"),
)
"""Every published variant type, highest precision first."""


def ladder_names() -> list[str]:
    """The base, then every rung, highest precision first."""
    return [BASE_NAME, *(rung.name for rung in RUNGS)]


def rung_for(name: str) -> Rung | None:
    """The rung a name like ``synthetic-ladder-Q4_K_M`` (any case) selects, else None (the base included)."""
    key = name.strip().lower()
    return next((rung for rung in RUNGS if rung.name == key), None)


def build_ladder_variant(
    name: str, *, quantize: Quantizer | None = None, cache_dir: str | os.PathLike[str] | None = None, seed: int = 0,
) -> ModelFiles:
    """Build (or find in the cache) one model of the ladder and return its files.

    Args:
        name: ``synthetic-ladder`` (the f16 base) or ``synthetic-ladder-<type>`` (``ladder_names()``).
        quantize: llama.cpp's quantizer (``llava_edge.runtime.quantize.quantize_gguf``), needed to build a rung.
        cache_dir, seed: as for ``build_synthetic_pair``.

    Raises:
        UnknownModelError: the name is not on the ladder; the message lists the names that are.
        ModelFileError: the rung is not built yet and no ``quantize`` was given.
    """
    base = build_synthetic_pair(LADDER_PRESET, cache_dir=cache_dir, seed=seed)
    if name.strip().lower() == BASE_NAME:
        return base
    rung = rung_for(name)
    if rung is None:
        raise UnknownModelError(f"{name!r} is not on the synthetic ladder; choose one of: {', '.join(ladder_names())}.")
    target = base.model_path.parent / f"model-{rung.quant}.gguf"
    if not target.is_file():
        if quantize is None:
            raise ModelFileError(f"Building {rung.name} needs llama.cpp's quantizer: pass "
                                 "quantize=llava_edge.runtime.quantize.quantize_gguf.")
        with build_lock(target):
            if not target.is_file():
                _quantize_atomically(base.model_path, target, rung.quant, quantize)
    return ModelFiles(target, base.mmproj_path, TEMPLATE, rung.name)


def _quantize_atomically(source: Path, target: Path, quant: str, quantize: Quantizer) -> None:
    """Quantize into a hidden sibling file, then rename it into place in one step."""
    handle, scratch_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(handle)
    scratch = Path(scratch_name)
    try:
        quantize(source, scratch, quant)
        scratch.chmod(0o644)
        fsync_file(scratch)
        os.replace(scratch, target)
    finally:
        scratch.unlink(missing_ok=True)
