"""Which models ``llava-edge eval`` compares: variant names, paths and synthetic models turned into files,
with their quantization type, and the reference they are measured against."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llava_edge.errors import EvaluationError, LlavaEdgeError
from llava_edge.models.catalog import ModelFiles, load_registry
from llava_edge.models.resolve import list_variants, model_files
from llava_edge.models.synthetic import PRESETS, synthetic_preset_for
from llava_edge.models.synthetic_ladder import BASE_NAME, build_ladder_variant, ladder_names, rung_for
from llava_edge.runtime.quantize import quantize_gguf

PRECISION = ("F32", "BF16", "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0", "Q4_K_M", "Q4_K_S",
             "IQ4_NL", "IQ4_XS", "Q4_1", "Q4_0", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q3_K_XS", "IQ3_M", "IQ3_S",
             "IQ3_XS", "Q2_K")
"""Quantization types, highest precision first: the default reference is the first one present."""
_TYPE_IN_NAME = re.compile("|".join(sorted(PRECISION, key=len, reverse=True)), re.IGNORECASE)


@dataclass(frozen=True)
class EvalVariant:
    """One model to evaluate."""

    name: str
    """As the user named it (variant id, synthetic name, or file name)."""
    label: str
    """The type as reports show it (stand-ins marked)."""
    quant: str
    """The quantization type, for the precision order (``"unknown"`` when it cannot be told)."""
    files: ModelFiles

    @property
    def file_bytes(self) -> int:
        return self.files.model_path.stat().st_size + self.files.mmproj_path.stat().st_size


def installed_variants(registry: str | os.PathLike[str] | None = None) -> list[str]:
    """The registry variants whose files are downloaded, in registry order."""
    return [row.id for row in list_variants(registry=registry) if row.downloaded]


def resolve_variants(
    choices: Sequence[str], *, ladder: bool = False, mmproj: str | None = None,
    registry: str | os.PathLike[str] | None = None,
) -> list[EvalVariant]:
    """The models to evaluate: ``choices`` (plus the synthetic ladder with ``ladder``), or every installed
    variant when there are none. Duplicates are dropped.

    Raises:
        EvaluationError: nothing to evaluate, or a model path without ``mmproj``.
        UnknownModelError: a name that is no variant (the message lists them).
        ModelNotCachedError: a variant that is not downloaded (the message says how to pull it).
    """
    names = [*choices, *(ladder_names() if ladder else [])]
    if not names:
        names = installed_variants(registry)
    if not names:
        raise EvaluationError("No variant is downloaded. Pull some (`llava-edge pull Q4_K_M`), name variants or "
                              "model paths to compare, or add --ladder for the synthetic quantization ladder.")
    unique = list(dict.fromkeys(name.strip() for name in names))
    return [resolve_variant(name, mmproj=mmproj, registry=registry) for name in unique]


def resolve_variant(
    choice: str, *, mmproj: str | None = None, registry: str | os.PathLike[str] | None = None
) -> EvalVariant:
    """One model: a ladder name, ``synthetic-<preset>``, a text-model GGUF path (with ``mmproj``), or a variant."""
    if choice.lower() == BASE_NAME or rung_for(choice) is not None:
        rung = rung_for(choice)
        files = build_ladder_variant(choice, quantize=quantize_gguf)
        return EvalVariant(files.name, rung.label if rung else "F16", rung.quant if rung else "F16", files)
    preset = synthetic_preset_for(choice)
    if preset is not None:
        files = model_files(choice, quantize=quantize_gguf)
        quant = PRESETS[preset].quant or "F16"
        return EvalVariant(files.name, quant, quant, files)
    if choice.lower().endswith(".gguf") or os.sep in choice:
        return _path_variant(choice, mmproj, registry)
    spec = load_registry(registry).resolve(choice)
    return EvalVariant(spec.id, spec.quant, spec.quant, model_files(spec.id, registry=registry, offline=True))


def _path_variant(path: str, mmproj: str | None, registry: str | os.PathLike[str] | None) -> EvalVariant:
    if mmproj is None:
        raise EvaluationError(f"{path} is a model file: give its vision projector with --mmproj PATH.")
    files = model_files(model_path=path, mmproj_path=mmproj, registry=registry)
    found = _TYPE_IN_NAME.search(Path(path).name)
    quant = found.group(0).upper() if found else "unknown"
    return EvalVariant(Path(path).name, quant, quant, files)


def choose_reference(
    variants: Sequence[EvalVariant], reference: str | None = None, *, mmproj: str | None = None,
    registry: str | os.PathLike[str] | None = None,
) -> EvalVariant:
    """The reference: ``reference`` when given (a name or an f16 path), else the variant of highest precision.

    Raises:
        EvaluationError: the reference cannot be found or loaded; the message says what to do.
    """
    if reference is None:
        return min(variants, key=lambda variant: _rank(variant.quant))
    chosen = next((variant for variant in variants if variant.name.lower() == reference.strip().lower()), None)
    if chosen is not None:
        return chosen
    try:
        return resolve_variant(reference, mmproj=mmproj, registry=registry)
    except LlavaEdgeError as err:
        raise EvaluationError(
            f"The reference {reference!r} is not available ({err}). Pull it, give --reference the path of an "
            "f16 text-model GGUF (with --mmproj), or leave --reference out to compare against the "
            "highest-precision variant present."
        ) from err


def _rank(quant: str) -> int:
    return PRECISION.index(quant) if quant in PRECISION else len(PRECISION)
