"""Synthetic LLaVA-1.6-Mistral GGUF model pairs with random weights, for tests and benchmarks.

A pair is a ``llama`` text model and a legacy llava-1.6 ``clip`` mmproj with exactly the metadata keys,
tensor names and tensor layouts of the published files, so llama.cpp and libmtmd load and run them
for real: images become the same 576 tokens per tile (2,880 for a 672x672 image), prompts tokenize
into sensible pieces, and the compute per token is real. Only the weights are random (normal * 0.02,
norms 1, biases 0), so the generated text is gibberish and EOS is practically never sampled.

Presets:

* ``tiny``: well under 1 MB, captions in milliseconds. For tests of everything around the model.
* ``kquant-small``: a few MB, n_embd 256, quantized to Q4_K_M by llama.cpp's own quantizer. It reaches
  ggml's K-quant matmul kernels (the AMX crash path) that the f16 ``tiny`` model never touches.
* ``ladder``: the ``kquant-small`` shapes kept in f16 (rows of 256, so every K-quant applies): the base
  of the synthetic quantization ladder (``synthetic_ladder``), and its reference in ``llava-edge eval``.
* ``real-shape``: Mistral-7B Q4_K_M (about 4.37 GB) plus a CLIP ViT-L/14-336 f16 mmproj (about 624 MB).
  Benchmarks the real compute without downloading the real model. The 13.5 GiB f16 intermediate
  is written tensor by tensor and deleted after quantizing.
* ``real-shape-4l``: the real-shape widths and full CLIP tower with 4 of the 32 text layers (about 0.7 GB),
  for quick benchmark sweeps; ``llava_edge.bench.runner`` scales its text-model times to 32 layers and labels them.

Files live in ``<cache>/synthetic/<preset>-seed<seed>-v<FORMAT_VERSION>/{model.gguf,mmproj.gguf}``.
A build is deterministic in its seed, happens in a temporary directory that is renamed into place
only when complete, and holds a file lock so concurrent builders do not duplicate the work.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from gguf import GGUFValueType, GGUFWriter

from llava_edge import paths
from llava_edge.errors import ModelFileError, UnknownModelError
from llava_edge.host.files import file_lock
from llava_edge.models.catalog import ModelFiles
from llava_edge.models.synthetic_presets import NAME_PREFIX as NAME_PREFIX
from llava_edge.models.synthetic_presets import PRESETS as PRESETS
from llava_edge.models.synthetic_presets import SyntheticPreset as SyntheticPreset
from llava_edge.models.synthetic_presets import TextShape as TextShape
from llava_edge.models.synthetic_presets import VisionShape as VisionShape
from llava_edge.models.synthetic_presets import preset_names as preset_names
from llava_edge.models.synthetic_presets import synthetic_preset_for as synthetic_preset_for
from llava_edge.models.synthetic_vocab import BOS_ID, EOS_ID, UNK_ID, build_vocab

FORMAT_VERSION = 1
"""Bumped whenever the files' content changes, so stale cached pairs are not reused."""

TEMPLATE = "[INST] {image}\n{prompt} [/INST]"
"""The registry's ``mistral-instruct`` template (llava-1.6-mistral's model card format)."""

MODEL_FILE = "model.gguf"
MMPROJ_FILE = "mmproj.gguf"

_FTYPE_F16 = 1
_WEIGHT_STD = 0.02
_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
_PINPOINTS = [336, 672, 672, 336, 672, 672, 1008, 336, 336, 1008]


@dataclass(frozen=True)
class TensorSpec:
    """One tensor to write: GGUF name, shape in GGUF ``ne`` order, storage type, initialisation."""

    name: str
    shape: tuple[int, ...]
    dtype: Literal["f16", "f32"]
    init: Literal["normal", "ones", "zeros"] = "normal"

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * (2 if self.dtype == "f16" else 4)


Quantizer = Callable[[Path, Path, str], None]
"""``quantize(f16_path, target_path, quant)``: llama.cpp's quantizer (``llava_edge.runtime.quantize``),
passed in because this lower layer never loads llama.cpp itself."""


def build_synthetic_pair(
    preset: str = "tiny", *, cache_dir: str | os.PathLike[str] | None = None, seed: int = 0,
    quantize: Quantizer | None = None,
) -> ModelFiles:
    """Build (or find in the cache) a synthetic model pair and return its files.

    Args:
        preset: a name from ``PRESETS`` (``"tiny"``, ``"kquant-small"``, ``"real-shape"``).
        cache_dir: where pairs live; defaults to ``llava_edge.paths.cache_dir() / "synthetic"``.
        seed: seeds the random weights; the same seed gives byte-identical files.
        quantize: needed to build a quantized preset (``kquant-small``, ``real-shape``) that is not cached yet.

    Returns:
        ModelFiles named ``synthetic-<preset>`` with the mistral-instruct template.

    Raises:
        UnknownModelError: no preset has that name; the message lists the valid ones.
        ModelFileError: the preset is quantized, not built yet, and no ``quantize`` was given.
    """
    spec = PRESETS.get(preset)
    if spec is None:
        raise UnknownModelError(f"Unknown synthetic preset {preset!r}; choose one of: {', '.join(PRESETS)}.")
    target = _pair_dir(spec, cache_dir, seed)
    if not _is_complete(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        with build_lock(target):
            if not _is_complete(target):
                _build_atomically(spec, seed, target, _quantizer_for(spec, quantize))
    return ModelFiles(target / MODEL_FILE, target / MMPROJ_FILE, TEMPLATE, NAME_PREFIX + spec.name)


def built_synthetic_presets(*, cache_dir: str | os.PathLike[str] | None = None, seed: int = 0) -> list[str]:
    """The presets whose pair is already built in the cache (nothing is built), smallest first."""
    return [name for name, spec in PRESETS.items() if _is_complete(_pair_dir(spec, cache_dir, seed))]


def _pair_dir(spec: SyntheticPreset, cache_dir: str | os.PathLike[str] | None, seed: int) -> Path:
    """Where a preset's pair lives: ``<cache>/synthetic/<name>-seed<seed>-v<format>``."""
    root = Path(cache_dir) if cache_dir is not None else paths.cache_dir() / "synthetic"
    return root / f"{spec.name}-seed{seed}-v{FORMAT_VERSION}"


def text_tensors(shape: TextShape) -> list[TensorSpec]:
    """The text model's tensors: 2-D weights f16, RMS norms f32."""
    n_embd, n_ff = shape.n_embd, shape.n_ff
    n_embd_kv = n_embd // shape.n_head * shape.n_head_kv
    tensors = [TensorSpec("token_embd.weight", (n_embd, shape.n_vocab), "f16")]
    for il in range(shape.n_layer):
        tensors += [
            TensorSpec(f"blk.{il}.attn_norm.weight", (n_embd,), "f32", "ones"),
            TensorSpec(f"blk.{il}.attn_q.weight", (n_embd, n_embd), "f16"),
            TensorSpec(f"blk.{il}.attn_k.weight", (n_embd, n_embd_kv), "f16"),
            TensorSpec(f"blk.{il}.attn_v.weight", (n_embd, n_embd_kv), "f16"),
            TensorSpec(f"blk.{il}.attn_output.weight", (n_embd, n_embd), "f16"),
            TensorSpec(f"blk.{il}.ffn_norm.weight", (n_embd,), "f32", "ones"),
            TensorSpec(f"blk.{il}.ffn_gate.weight", (n_embd, n_ff), "f16"),
            TensorSpec(f"blk.{il}.ffn_up.weight", (n_embd, n_ff), "f16"),
            TensorSpec(f"blk.{il}.ffn_down.weight", (n_ff, n_embd), "f16"),
        ]
    tensors.append(TensorSpec("output_norm.weight", (n_embd,), "f32", "ones"))
    tensors.append(TensorSpec("output.weight", (n_embd, shape.n_vocab), "f16"))
    return tensors


def vision_tensors(shape: VisionShape, n_embd_out: int) -> list[TensorSpec]:
    """The mmproj's tensors in the legacy llava-1.6 converter layout (``.weight`` 2-D+ f16, rest f32).

    ``ffn_down`` holds HF's fc1 ``[n_embd, n_ff]`` and ``ffn_up`` its fc2: clip.cpp recognises that
    legacy naming and swaps them back. ``mm.0``/``mm.2`` project to ``n_embd_out``, the text width.
    """
    n_embd, n_ff = shape.n_embd, shape.n_ff
    n_pos = (shape.image_size // shape.patch_size) ** 2 + 1
    tensors = [
        TensorSpec("v.patch_embd.weight", (shape.patch_size, shape.patch_size, 3, n_embd), "f16"),
        TensorSpec("v.position_embd.weight", (n_embd, n_pos), "f16"),
        TensorSpec("v.class_embd", (n_embd,), "f32"),
        *_layer_norm("v.pre_ln", n_embd),
    ]
    for il in range(shape.n_layer):
        for proj in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensors += _linear(f"v.blk.{il}.{proj}", n_embd, n_embd)
        tensors += _layer_norm(f"v.blk.{il}.ln1", n_embd)
        tensors += _linear(f"v.blk.{il}.ffn_down", n_embd, n_ff)
        tensors += _linear(f"v.blk.{il}.ffn_up", n_ff, n_embd)
        tensors += _layer_norm(f"v.blk.{il}.ln2", n_embd)
    tensors += _linear("mm.0", n_embd, n_embd_out) + _linear("mm.2", n_embd_out, n_embd_out)
    tensors.append(TensorSpec("model.image_newline", (n_embd_out,), "f32", "zeros"))
    return tensors


def text_metadata(spec: SyntheticPreset) -> dict[str, Any]:
    """The text model's GGUF keys (``general.architecture`` is added by the writer)."""
    shape = spec.text
    vocab = build_vocab(shape.n_vocab)
    return {
        "general.name": NAME_PREFIX + spec.name,
        "general.file_type": _FTYPE_F16,
        "llama.context_length": shape.n_ctx,
        "llama.embedding_length": shape.n_embd,
        "llama.block_count": shape.n_layer,
        "llama.feed_forward_length": shape.n_ff,
        "llama.rope.dimension_count": shape.n_embd // shape.n_head,
        "llama.attention.head_count": shape.n_head,
        "llama.attention.head_count_kv": shape.n_head_kv,
        "llama.attention.layer_norm_rms_epsilon": 1e-5,
        "llama.rope.freq_base": shape.rope_base,
        "llama.vocab_size": shape.n_vocab,
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": list(vocab.tokens),
        "tokenizer.ggml.scores": list(vocab.scores),
        "tokenizer.ggml.token_type": list(vocab.types),
        "tokenizer.ggml.bos_token_id": BOS_ID,
        "tokenizer.ggml.eos_token_id": EOS_ID,
        "tokenizer.ggml.unknown_token_id": UNK_ID,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
    }


def vision_metadata(spec: SyntheticPreset) -> dict[str, Any]:
    """The mmproj's GGUF keys, as the legacy llava-1.6 converter writes them."""
    shape = spec.vision
    return {
        "general.name": f"{NAME_PREFIX}{spec.name}-mmproj",
        "general.description": "synthetic LLaVA-1.6 image encoder with random weights (llava-edge)",
        "general.file_type": _FTYPE_F16,
        "clip.has_text_encoder": False,
        "clip.has_vision_encoder": True,
        "clip.has_llava_projector": True,
        "clip.projector_type": "mlp",
        "clip.use_gelu": False,
        "clip.vision.image_size": shape.image_size,
        "clip.vision.patch_size": shape.patch_size,
        "clip.vision.embedding_length": shape.n_embd,
        "clip.vision.feed_forward_length": shape.n_ff,
        "clip.vision.projection_dim": shape.projection_dim,
        "clip.vision.attention.head_count": shape.n_head,
        "clip.vision.attention.layer_norm_epsilon": 1e-5,
        "clip.vision.block_count": shape.n_layer,
        "clip.vision.image_mean": _CLIP_MEAN,
        "clip.vision.image_std": _CLIP_STD,
        "clip.vision.image_grid_pinpoints": _PINPOINTS,
        "clip.vision.image_aspect_ratio": "anyres",
        "clip.vision.mm_patch_merge_type": "spatial_unpad",
    }


def _write_gguf(
    path: Path, arch: str, metadata: Mapping[str, Any], tensors: Sequence[TensorSpec], rng: np.random.Generator
) -> None:
    """Write a GGUF file, streaming one tensor at a time (a 7B f16 model never sits in memory)."""
    writer = GGUFWriter(path, arch)
    try:
        for key, value in metadata.items():
            _add_value(writer, key, value)
        for tensor in tensors:
            writer.add_tensor_info(tensor.name, tensor.shape[::-1], _NP_DTYPES[tensor.dtype], tensor.nbytes)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor in tensors:
            writer.write_tensor_data(_values(tensor, rng))
    finally:
        writer.close()
    fsync_file(path)


_NP_DTYPES: dict[str, Any] = {"f16": np.float16, "f32": np.float32}
_SCALARS: dict[type, GGUFValueType] = {
    bool: GGUFValueType.BOOL,
    int: GGUFValueType.UINT32,
    float: GGUFValueType.FLOAT32,
    str: GGUFValueType.STRING,
}


def _add_value(writer: GGUFWriter, key: str, value: Any) -> None:
    """Scalars by Python type (ints as uint32); lists as arrays (ints int32, floats float32)."""
    if isinstance(value, list):
        writer.add_array(key, value)
    else:
        writer.add_key_value(key, value, _SCALARS[type(value)])


def _values(tensor: TensorSpec, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    shape = tensor.shape[::-1]
    if tensor.init == "ones":
        values = np.ones(shape, np.float32)
    elif tensor.init == "zeros":
        values = np.zeros(shape, np.float32)
    else:
        values = rng.standard_normal(shape, dtype=np.float32)
        values *= _WEIGHT_STD
    return values.astype(_NP_DTYPES[tensor.dtype], copy=False)


def _linear(prefix: str, n_in: int, n_out: int) -> list[TensorSpec]:
    return [
        TensorSpec(f"{prefix}.weight", (n_in, n_out), "f16"),
        TensorSpec(f"{prefix}.bias", (n_out,), "f32", "zeros"),
    ]


def _layer_norm(prefix: str, n: int) -> list[TensorSpec]:
    return [TensorSpec(f"{prefix}.weight", (n,), "f32", "ones"), TensorSpec(f"{prefix}.bias", (n,), "f32", "zeros")]


def _quantizer_for(spec: SyntheticPreset, quantize: Quantizer | None) -> Quantizer | None:
    if spec.quant is not None and quantize is None:
        raise ModelFileError(
            f"Building synthetic-{spec.name} needs llama.cpp's quantizer: pass "
            "quantize=llava_edge.runtime.quantize.quantize_gguf, or load it with "
            f"Captioner(model=\"synthetic-{spec.name}\"), which passes it."
        )
    return quantize


def _write_pair(spec: SyntheticPreset, seed: int, directory: Path, quantize: Quantizer | None) -> None:
    """Write both files of a pair into ``directory``, quantizing the text model if the preset says so."""
    vision = vision_tensors(spec.vision, spec.text.n_embd)
    _write_gguf(directory / MMPROJ_FILE, "clip", vision_metadata(spec), vision, np.random.default_rng([seed, 1]))
    model = directory / MODEL_FILE
    f16 = model if spec.quant is None else directory / "model-f16.gguf"
    write_f16_text_model(spec.name, f16, seed=seed)
    if spec.quant is not None and quantize is not None:
        quantize(f16, model, spec.quant)
        f16.unlink()
        fsync_file(model)


def write_f16_text_model(preset: str, path: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """Write a preset's text model in f16, before any quantization, one tensor at a time: the base that
    quantized variants are made from (byte-identical to the intermediate of ``build_synthetic_pair``; about
    13.5 GiB for ``real-shape``). ``benchmarks/quant_ladder.py`` quantizes it to each type in turn."""
    spec = PRESETS[preset]
    _write_gguf(Path(path), "llama", text_metadata(spec), text_tensors(spec.text), np.random.default_rng([seed, 0]))
    return Path(path)


def _build_atomically(spec: SyntheticPreset, seed: int, target: Path, quantize: Quantizer | None) -> None:
    """Build in a hidden sibling directory, then rename it to ``target`` in one step."""
    if target.exists():  # a damaged pair (a file deleted by hand): replace it
        shutil.rmtree(target)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        scratch.chmod(0o755)  # mkdtemp's 0700 would otherwise stick to the cached pair
        _write_pair(spec, seed, scratch, quantize)
        try:
            os.rename(scratch, target)
        except OSError:
            if not _is_complete(target):  # someone else's complete build won the race: keep theirs
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def build_lock(target: Path) -> Iterator[None]:
    """An exclusive lock per pair (``.<pair>.lock`` beside it); stale partial builds are removed under it."""
    with file_lock(target.parent / f".{target.name}.lock"):
        for stale in target.parent.glob(f".{target.name}.*.partial"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed build; we hold the lock
        yield


def _is_complete(directory: Path) -> bool:
    return (directory / MODEL_FILE).is_file() and (directory / MMPROJ_FILE).is_file()


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
