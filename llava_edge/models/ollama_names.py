"""Ollama's names for the registry's variants: ``llava:7b-v1.6-mistral-q4_K_M`` is variant ``Q4_K_M``, as the
Ollama library tags the same LLaVA-1.6-Mistral-7B quantizations."""

from __future__ import annotations

import re

from llava_edge.errors import UnknownModelError
from llava_edge.models.catalog import ModelSpec, Registry

OLLAMA_TAG_PREFIX = "llava:7b-v1.6-mistral-"
_QUANT_ID = re.compile(r"^(q\d\w*|iq\d\w*|f16|f32|bf16)$", re.IGNORECASE)
_FLOAT_TAGS = {"f16": "fp16", "f32": "fp32"}


def ollama_tag(variant_id: str) -> str:
    """The Ollama name of a variant whose id is a quantization (``Q4_K_M`` -> ``llava:7b-v1.6-mistral-q4_K_M``,
    ``F16`` -> ``...-fp16``); any other id (a user registry's, ``synthetic-tiny``) is its own name."""
    if not _QUANT_ID.match(variant_id):
        return variant_id
    lowered = variant_id[0].lower() + variant_id[1:]
    return OLLAMA_TAG_PREFIX + _FLOAT_TAGS.get(lowered.lower(), lowered)


def variant_named(name: str, registry: Registry) -> ModelSpec:
    """The variant a name means: an id, alias or AIR id (``Registry.resolve``), or an Ollama tag.

    Raises:
        UnknownModelError: no variant has that name.
    """
    try:
        return registry.resolve(name)
    except UnknownModelError:
        key = name.strip().lower()
        for spec in registry.models.values():
            if ollama_tag(spec.id).lower() == key:
                return spec
        raise
