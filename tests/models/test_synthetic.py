"""Tests for the synthetic model builder: files, determinism, caching, and llama.cpp really running them.

llama.cpp may ``abort()`` on a malformed file, so everything that loads a model runs in a subprocess
(``_probe``) that reports back as JSON.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from llava_edge.models.catalog import ModelFiles, load_registry
from llava_edge.models.synthetic import (
    FORMAT_VERSION,
    PRESETS,
    TEMPLATE,
    build_synthetic_pair,
    preset_names,
    synthetic_preset_for,
    text_tensors,
    vision_tensors,
)
from llava_edge.models.synthetic_vocab import SPACE, build_vocab
from llava_edge.runtime.quantize import quantize_gguf

PROMPT = "[INST] Describe this image. [/INST]"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    return build_synthetic_pair("tiny", cache_dir=tmp_path_factory.mktemp("synthetic"), seed=0)


@pytest.fixture(scope="session")
def tiny_probe(tiny: ModelFiles, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _probe(tiny, tmp_path_factory.mktemp("images"))


def _fields(path: Path) -> dict[str, Any]:
    reader = gguf.GGUFReader(path)
    return {name: field.contents() for name, field in reader.fields.items()}


def _tensors(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    reader = gguf.GGUFReader(path)
    return {t.name: (tuple(int(n) for n in t.shape), t.tensor_type.name) for t in reader.tensors}


# --- files on disk ------------------------------------------------------------------------------


def test_tiny_pair_layout_and_size(tiny: ModelFiles) -> None:
    assert tiny.name == "synthetic-tiny"
    assert tiny.template == TEMPLATE == load_registry().models["Q4_K_M"].template
    assert tiny.model_path.parent.name == f"tiny-seed0-v{FORMAT_VERSION}"
    assert (tiny.model_path.name, tiny.mmproj_path.name) == ("model.gguf", "mmproj.gguf")
    assert tiny.model_path.stat().st_size + tiny.mmproj_path.stat().st_size < 1_000_000
    assert not list(tiny.model_path.parent.parent.glob("*.partial"))


def test_text_model_keys_and_tensors(tiny: ModelFiles) -> None:
    fields = _fields(tiny.model_path)
    shape = PRESETS["tiny"].text
    assert fields["general.architecture"] == "llama"
    assert fields["llama.embedding_length"] == shape.n_embd
    assert fields["llama.attention.head_count_kv"] == shape.n_head_kv
    assert fields["llama.rope.freq_base"] == 1e6
    assert fields["tokenizer.ggml.model"] == "llama"
    assert fields["tokenizer.ggml.pre"] == "default"
    assert "tokenizer.chat_template" not in fields
    assert (fields["tokenizer.ggml.bos_token_id"], fields["tokenizer.ggml.eos_token_id"]) == (1, 2)
    assert fields["tokenizer.ggml.add_bos_token"] is True and fields["tokenizer.ggml.add_eos_token"] is False
    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens) == shape.n_vocab == fields["llama.vocab_size"]
    assert tokens[:4] == ["<unk>", "<s>", "</s>", "<0x00>"] and tokens[258] == "<0xFF>"
    assert fields["tokenizer.ggml.token_type"][:4] == [2, 3, 3, 6]
    tensors = _tensors(tiny.model_path)
    assert tensors["token_embd.weight"] == ((shape.n_embd, shape.n_vocab), "F16")
    assert tensors["blk.1.attn_k.weight"] == ((shape.n_embd, 32), "F16")
    assert tensors["blk.0.ffn_down.weight"] == ((shape.n_ff, shape.n_embd), "F16")
    assert tensors["output_norm.weight"] == ((shape.n_embd,), "F32")
    assert len(tensors) == 3 + 9 * shape.n_layer


def test_mmproj_keys_and_tensors(tiny: ModelFiles) -> None:
    fields = _fields(tiny.mmproj_path)
    vision, n_embd = PRESETS["tiny"].vision, PRESETS["tiny"].text.n_embd
    assert fields["general.architecture"] == "clip"
    assert fields["clip.projector_type"] == "mlp"
    assert fields["clip.has_llava_projector"] is True and fields["clip.use_gelu"] is False
    assert (fields["clip.vision.image_size"], fields["clip.vision.patch_size"]) == (336, 14)
    assert fields["clip.vision.image_grid_pinpoints"] == [336, 672, 672, 336, 672, 672, 1008, 336, 336, 1008]
    assert fields["clip.vision.image_aspect_ratio"] == "anyres"
    assert fields["clip.vision.mm_patch_merge_type"] == "spatial_unpad"
    assert len(fields["clip.vision.image_mean"]) == len(fields["clip.vision.image_std"]) == 3
    tensors = _tensors(tiny.mmproj_path)
    assert tensors["v.patch_embd.weight"] == ((14, 14, 3, vision.n_embd), "F16")
    assert tensors["v.position_embd.weight"] == ((vision.n_embd, 577), "F16")
    assert tensors["v.blk.0.ffn_down.weight"] == ((vision.n_embd, vision.n_ff), "F16")
    assert tensors["v.blk.0.ffn_up.weight"] == ((vision.n_ff, vision.n_embd), "F16")
    assert tensors["mm.0.weight"] == ((vision.n_embd, n_embd), "F16")
    assert tensors["mm.2.weight"] == ((n_embd, n_embd), "F16")  # projector output width = text n_embd
    assert tensors["model.image_newline"] == ((n_embd,), "F32")


def test_weights_are_small_and_finite(tiny: ModelFiles) -> None:
    for path in (tiny.model_path, tiny.mmproj_path):
        for tensor in gguf.GGUFReader(path).tensors:
            data = np.asarray(tensor.data, dtype=np.float32)
            assert np.isfinite(data).all(), tensor.name
            assert np.abs(data).max() <= 1.0, tensor.name


def test_build_is_deterministic_in_seed(tiny: ModelFiles, tmp_path: Path) -> None:
    again = build_synthetic_pair("tiny", cache_dir=tmp_path / "a", seed=0)
    other = build_synthetic_pair("tiny", cache_dir=tmp_path / "b", seed=1)
    assert again.model_path.read_bytes() == tiny.model_path.read_bytes()
    assert again.mmproj_path.read_bytes() == tiny.mmproj_path.read_bytes()
    assert other.model_path.read_bytes() != tiny.model_path.read_bytes()
    assert other.mmproj_path.read_bytes() != tiny.mmproj_path.read_bytes()
    assert other.model_path.parent.name == f"tiny-seed1-v{FORMAT_VERSION}"


def test_second_call_uses_the_cache(tmp_path: Path) -> None:
    first = build_synthetic_pair("tiny", cache_dir=tmp_path, seed=3)
    stamps = (first.model_path.stat().st_mtime_ns, first.mmproj_path.stat().st_mtime_ns)
    time.sleep(0.01)
    second = build_synthetic_pair("tiny", cache_dir=tmp_path, seed=3)
    assert second == first
    assert (second.model_path.stat().st_mtime_ns, second.mmproj_path.stat().st_mtime_ns) == stamps


def test_default_cache_dir_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAVA_EDGE_CACHE", str(tmp_path))
    files = build_synthetic_pair("tiny")
    assert files.model_path == tmp_path / "synthetic" / f"tiny-seed0-v{FORMAT_VERSION}" / "model.gguf"


def test_killed_build_leaves_nothing_that_looks_valid(tmp_path: Path) -> None:
    stale = tmp_path / f".tiny-seed0-v{FORMAT_VERSION}.abc123.partial"
    stale.mkdir()
    (stale / "model.gguf").write_bytes(b"GGUF truncated")
    files = build_synthetic_pair("tiny", cache_dir=tmp_path)
    assert not stale.exists()
    assert files.model_path.stat().st_size > 100_000


@pytest.mark.slow
def test_concurrent_builds_agree(tmp_path: Path) -> None:
    code = ("import sys; from llava_edge.models.synthetic import build_synthetic_pair as b; "
            "b('tiny', cache_dir=sys.argv[1])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)]) for _ in range(3)]
    assert [proc.wait(timeout=120) for proc in procs] == [0, 0, 0]
    reference = build_synthetic_pair("tiny", cache_dir=tmp_path / "ref")
    built = tmp_path / f"tiny-seed0-v{FORMAT_VERSION}"
    assert (built / "model.gguf").read_bytes() == reference.model_path.read_bytes()
    assert {p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")} == {built.name, "ref"}


# --- names, presets and the real-shape recipe -------------------------------------------------------


def test_names() -> None:
    assert preset_names() == ["tiny", "kquant-small", "ladder", "real-shape", "real-shape-4l"]
    assert synthetic_preset_for("synthetic-tiny") == "tiny"
    assert synthetic_preset_for("Synthetic-Real-Shape") == "real-shape"
    assert synthetic_preset_for("synthetic-huge") is None
    assert synthetic_preset_for("tiny") is None
    with pytest.raises(KeyError, match="tiny, kquant-small, ladder, real-shape"):
        build_synthetic_pair("huge")


def test_real_shape_recipe() -> None:
    preset = PRESETS["real-shape"]
    text = text_tensors(preset.text)
    assert sum(int(np.prod(t.shape)) for t in text) == 7_241_732_096  # Mistral-7B's parameter count
    assert 13.4 * 2**30 < sum(t.nbytes for t in text) < 13.6 * 2**30  # the streamed f16 intermediate
    shapes = {t.name: t.shape for t in text}
    assert shapes["blk.31.attn_k.weight"] == (4096, 1024)
    assert shapes["blk.31.ffn_gate.weight"] == (4096, 14336)
    assert shapes["output.weight"] == (4096, 32000)
    vision = vision_tensors(preset.vision, preset.text.n_embd)
    header = 624_451_072 - sum(t.nbytes for t in vision)  # the published mmproj-model-f16.gguf
    assert 0 < header < 32_768
    assert {t.name: t.shape for t in vision}["mm.2.weight"] == (4096, 4096)
    assert len([t for t in vision if t.name.startswith("v.blk.22.")]) == 16
    assert not [t for t in vision if t.name.startswith("v.blk.23.")]
    assert preset.quant == "Q4_K_M"


def test_real_shape_vocab_is_exactly_32000() -> None:
    vocab = build_vocab(32000)
    assert len(vocab) == len(set(vocab.tokens)) == 32000
    assert vocab.scores[-1] == -(32000 - 259 - 1)
    with pytest.raises(ValueError, match="at least"):
        build_vocab(500)


def test_kquant_small_dims_are_k_quant_friendly() -> None:
    text = PRESETS["kquant-small"].text
    assert text.n_embd % 256 == 0 and text.n_ff % 256 == 0
    assert PRESETS["kquant-small"].quant == "Q4_K_M"


# --- llama.cpp loads and runs the files -------------------------------------------------------------


def test_llama_cpp_tokenizes_english_into_pieces(tiny_probe: dict[str, Any]) -> None:
    pieces = tiny_probe["pieces"]
    assert pieces[0] == "<s>"
    assert len(pieces) < len(PROMPT) / 3
    assert pieces[1:5] == [SPACE + "[INST]", SPACE + "Describe", SPACE + "this", SPACE + "image"]


@pytest.mark.parametrize(("size", "expected"), [("336x336", 576), ("672x672", 2880), ("1008x336", 2304)])
def test_mtmd_image_token_counts(tiny_probe: dict[str, Any], size: str, expected: int) -> None:
    assert tiny_probe["image_tokens"][size] == expected


def test_caption_runs_end_to_end(tiny_probe: dict[str, Any]) -> None:
    assert tiny_probe["n_generated"] == 8


@pytest.mark.slow
def test_kquant_small_is_q4_k_m_and_runs(tmp_path: Path) -> None:
    files = build_synthetic_pair("kquant-small", cache_dir=tmp_path / "a", quantize=quantize_gguf)
    again = build_synthetic_pair("kquant-small", cache_dir=tmp_path / "b", quantize=quantize_gguf)
    assert again.model_path.read_bytes() == files.model_path.read_bytes()  # llama.cpp's quantizer too
    assert not (files.model_path.parent / "model-f16.gguf").exists()
    assert _fields(files.model_path)["general.file_type"] == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    types = {kind for _, kind in _tensors(files.model_path).values()}
    assert "Q4_K" in types and "F16" not in types
    assert files.model_path.stat().st_size < 4_000_000
    assert _probe(files, tmp_path, images=((336, 336),))["image_tokens"]["336x336"] == 576


# --- the subprocess probe ---------------------------------------------------------------------------

_PROBE = textwrap.dedent(
    r"""
    import ctypes, json, sys, time
    import llama_cpp
    from llama_cpp import mtmd_cpp as mtmd
    from llama_cpp.llama_chat_format import Llava16ChatHandler

    model, mmproj, images = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])

    # Llama() has no switch for ggml's repacked/AMX buffers, which crash on K-quants on AMX CPUs
    # (llama.cpp #20824): load with them off, as llava-edge's runtime does.
    default_params = llama_cpp.llama_cpp.llama_model_default_params
    def params_without_extra_bufts():
        params = default_params()
        params.use_extra_bufts = False
        return params
    llama_cpp.llama_cpp.llama_model_default_params = params_without_extra_bufts

    llm = llama_cpp.Llama(model_path=model, n_ctx=4096, n_threads=2, verbose=False)
    tokens = llm.tokenize(b"[INST] Describe this image. [/INST]")
    pieces = [llm._model.token_get_text(t) for t in tokens]

    params = mtmd.mtmd_context_params_default()
    params.use_gpu, params.n_threads, params.warmup = False, 2, False
    ctx = mtmd.mtmd_init_from_file(mmproj.encode(), llm.model, params)
    assert ctx, "mtmd_init_from_file failed"
    counts = {}
    for width, height, path in images:
        rgb = (ctypes.c_uint8 * (width * height * 3))(*([128] * (width * height * 3)))
        bitmap = mtmd.mtmd_bitmap_init(width, height, rgb)
        prompt = b"[INST] " + mtmd.mtmd_default_marker() + b"\nDescribe this image. [/INST]"
        text = mtmd.mtmd_input_text(prompt, len(prompt), True, True)
        chunks = mtmd.mtmd_input_chunks_init()
        bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
        assert mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(text), bitmaps, 1) == 0
        chunk_list = [mtmd.mtmd_input_chunks_get(chunks, i) for i in range(mtmd.mtmd_input_chunks_size(chunks))]
        counts[f"{width}x{height}"] = sum(
            mtmd.mtmd_input_chunk_get_n_tokens(c) for c in chunk_list
            if mtmd.mtmd_input_chunk_get_type(c) == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE
        )
        mtmd.mtmd_input_chunks_free(chunks)
        mtmd.mtmd_bitmap_free(bitmap)
    mtmd.mtmd_free(ctx)
    del llm

    handler = Llava16ChatHandler(clip_model_path=mmproj, verbose=False)
    llm = llama_cpp.Llama(model_path=model, n_ctx=4096, n_threads=2, chat_handler=handler, verbose=False)
    url = "file://" + images[-1][2]
    reply = llm.create_chat_completion(
        messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "Describe this image."}]}],
        max_tokens=8, temperature=0.0,
    )
    print(json.dumps({
        "pieces": pieces, "image_tokens": counts,
        "n_generated": reply["usage"]["completion_tokens"], "caption": reply["choices"][0]["message"]["content"],
    }))
    """
)


def _probe(
    files: ModelFiles, image_dir: Path, images: tuple[tuple[int, int], ...] = ((336, 336), (1008, 336), (672, 672))
) -> dict[str, Any]:
    """Load the pair in a fresh interpreter: tokenize, count mtmd image tokens, caption the last image."""
    specs = []
    for width, height in images:
        path = image_dir / f"gray-{width}x{height}.png"
        path.write_bytes(_png(width, height))
        specs.append((width, height, str(path)))
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(files.model_path), str(files.mmproj_path), json.dumps(specs)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def _png(width: int, height: int) -> bytes:
    """A mid-gray RGB PNG, without needing Pillow."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * (3 * width) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
