"""The synthetic model presets (``synthetic.py`` builds them): each one's text and vision shapes, the text
model's quantization, and what it is for; and how a model name (``synthetic-tiny``) picks one."""

from __future__ import annotations

from dataclasses import dataclass

NAME_PREFIX = "synthetic-"


@dataclass(frozen=True)
class TextShape:
    """Dimensions of the ``llama`` text model."""

    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    n_ctx: int = 32768
    rope_base: float = 1e6


@dataclass(frozen=True)
class VisionShape:
    """Dimensions of the CLIP vision tower; the projector maps ``n_embd`` to the text model's width."""

    n_embd: int
    n_layer: int
    n_head: int
    n_ff: int
    image_size: int = 336
    patch_size: int = 14
    projection_dim: int = 768
    """CLIP's text-projection width; recorded as the real files do, unused by llama.cpp."""


@dataclass(frozen=True)
class SyntheticPreset:
    """One synthetic model pair: shapes, the text model's quantization, and what it is for."""

    name: str
    text: TextShape
    vision: VisionShape
    quant: str | None
    """A llama.cpp quantization (``"Q4_K_M"``) applied to the f16 text model, or None to keep f16."""
    description: str


PRESETS: dict[str, SyntheticPreset] = {
    "tiny": SyntheticPreset(
        "tiny",
        TextShape(n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, n_vocab=1024),
        VisionShape(n_embd=32, n_layer=3, n_head=2, n_ff=64),
        None,
        "well under 1 MB, f16; real token counts, captions in milliseconds",
    ),
    "kquant-small": SyntheticPreset(
        "kquant-small",
        TextShape(n_embd=256, n_layer=2, n_head=4, n_head_kv=2, n_ff=512, n_vocab=1024),
        VisionShape(n_embd=32, n_layer=3, n_head=2, n_ff=64),
        "Q4_K_M",
        "a few MB, Q4_K_M text model: exercises ggml's K-quant (and AMX) kernels",
    ),
    "ladder": SyntheticPreset(
        "ladder",
        TextShape(n_embd=256, n_layer=2, n_head=4, n_head_kv=2, n_ff=512, n_vocab=1024),
        VisionShape(n_embd=32, n_layer=3, n_head=2, n_ff=64),
        None,
        "a few MB, f16 text model with K-quant-ready shapes: the base of the synthetic quantization ladder",
    ),
    "real-shape": SyntheticPreset(
        "real-shape",
        TextShape(n_embd=4096, n_layer=32, n_head=32, n_head_kv=8, n_ff=14336, n_vocab=32000),
        VisionShape(n_embd=1024, n_layer=23, n_head=16, n_ff=4096),
        "Q4_K_M",
        "LLaVA-1.6-Mistral-7B shapes: Q4_K_M text (~4.37 GB) + f16 mmproj (~624 MB); slow to build",
    ),
    "real-shape-4l": SyntheticPreset(
        "real-shape-4l",
        TextShape(n_embd=4096, n_layer=4, n_head=32, n_head_kv=8, n_ff=14336, n_vocab=32000),
        VisionShape(n_embd=1024, n_layer=23, n_head=16, n_ff=4096),
        "Q4_K_M",
        "real-shape widths with 4 of the 32 text layers (full CLIP): quick benchmarks, text-model time scaled x8",
    ),
}


def preset_names() -> list[str]:
    """The names of the synthetic presets, smallest first."""
    return list(PRESETS)


def synthetic_preset_for(name: str) -> str | None:
    """The preset a model name like ``"synthetic-tiny"`` (any case) refers to, else None."""
    key = name.strip().lower()
    if not key.startswith(NAME_PREFIX):
        return None
    preset = key[len(NAME_PREFIX) :]
    return preset if preset in PRESETS else None
