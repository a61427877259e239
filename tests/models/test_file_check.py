"""Bad model files become a ModelFileError naming the file, the problem and the fix, before llama.cpp sees them.

Each bad file is made from the tiny synthetic pair: copied and truncated, swapped, or rewritten with
gguf's own writer with one key or tensor changed. The last tests show what llama.cpp does with one of
them on its own (it aborts the process), which is why the check exists.
"""

from __future__ import annotations

import base64
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from llava_edge.errors import ModelFileError
from llava_edge.models.catalog import ModelFiles
from llava_edge.models.file_check import ArrayInfo, check_model_pair, read_header
from llava_edge.models.synthetic import PRESETS, _add_value, text_metadata, text_tensors

TEXT_WIDTH = PRESETS["tiny"].text.n_embd


def rewrite(
    source: Path,
    target: Path,
    *,
    arch: str | None = None,
    drop: tuple[str, ...] = (),
    values: dict[str, Any] | None = None,
    tensors: dict[str, np.ndarray[Any, Any]] | None = None,
) -> Path:
    """Copy a GGUF with gguf's reader and writer: relabel the architecture (and its key prefix), drop keys,
    give keys new values of the same type, or replace tensors."""
    reader = gguf.GGUFReader(source)
    old_arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(target, arch or old_arch)
    values, tensors = values or {}, tensors or {}
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF.") or field.name in drop:
            continue
        kind = field.types[0]
        name = (f"{arch}.{field.name[len(old_arch) + 1:]}" if arch and field.name.startswith(old_arch + ".")
                else field.name)
        value = values.get(field.name, field.contents())
        writer.add_key_value(name, value, kind, sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    arrays = [(tensor.name, tensors.get(tensor.name, tensor.data)) for tensor in reader.tensors]
    for name, array in arrays:
        writer.add_tensor_info(name, array.shape, array.dtype, array.nbytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, array in arrays:
        writer.write_tensor_data(array)
    writer.close()
    return target


def expect_refused(model: Path, mmproj: Path, bad: Path, *fragments: str) -> ModelFileError:
    """check_model_pair refuses the pair; the message names the bad file and says each fragment."""
    with pytest.raises(ModelFileError) as caught:
        check_model_pair(model, mmproj)
    message = str(caught.value)
    assert str(bad) in message
    for fragment in fragments:
        assert fragment in message
    assert caught.value.code == "modelUnavailable" and caught.value.parameter == "model"
    return caught.value


def test_the_tiny_pair_passes(tiny_files: ModelFiles) -> None:
    check_model_pair(tiny_files.model_path, tiny_files.mmproj_path)


def test_header_matches_gguf_reader(tiny_files: ModelFiles) -> None:
    for path in (tiny_files.model_path, tiny_files.mmproj_path):
        ours, theirs = read_header(path), gguf.GGUFReader(path)
        assert [t.name for t in theirs.tensors] == list(ours.tensors)
        for tensor in theirs.tensors:
            mine = ours.tensors[tensor.name]
            assert (mine.shape, mine.offset, mine.nbytes, mine.type_name) == (
                tuple(int(n) for n in tensor.shape), tensor.data_offset, tensor.n_bytes, tensor.tensor_type.name)
        for name, field in theirs.fields.items():
            if name.startswith("GGUF."):
                continue
            value = ours.metadata[name]
            expected = field.contents()
            if isinstance(value, ArrayInfo):
                assert value.count == len(expected)
            elif isinstance(value, float) or (isinstance(value, list) and value and isinstance(value[0], float)):
                assert np.allclose(value, expected)
            else:
                assert value == expected, name


# --- damaged files -------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["model", "mmproj"])
def test_truncated_file(tiny_files: ModelFiles, tmp_path: Path, which: str) -> None:
    model, mmproj = _copies(tiny_files, tmp_path)
    bad = model if which == "model" else mmproj
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) * 2 // 3])
    expect_refused(model, mmproj, bad, "is truncated", f"need {len(data):,} bytes", "download it again")


def test_truncated_inside_the_header(tiny_files: ModelFiles, tmp_path: Path) -> None:
    model, mmproj = _copies(tiny_files, tmp_path)
    model.write_bytes(model.read_bytes()[:300])
    expect_refused(model, mmproj, model, "cut short")


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"", "is empty (0 bytes)"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "is not a GGUF file"),
        (b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "looks like a web page"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 4368439584\n", "Git LFS pointer"),
        (b"GGU", "is not a GGUF file"),
        (b"\0" * 4096, "begins with zeros: it is still being written"),
    ],
)
def test_not_a_gguf_file(tiny_files: ModelFiles, tmp_path: Path, content: bytes, fragment: str) -> None:
    model, mmproj = _copies(tiny_files, tmp_path)
    mmproj.write_bytes(content)
    expect_refused(model, mmproj, mmproj, fragment)


def test_missing_file(tiny_files: ModelFiles, tmp_path: Path) -> None:
    expect_refused(tmp_path / "absent.gguf", tiny_files.mmproj_path, tmp_path / "absent.gguf", "No text model file")


@pytest.mark.parametrize(
    "version, fragment", [(1, "GGUF version 1"), (99, "GGUF version 99"), (0x03000000, "big-endian")]
)
def test_unsupported_version(tiny_files: ModelFiles, tmp_path: Path, version: int, fragment: str) -> None:
    model, mmproj = _copies(tiny_files, tmp_path)
    _patch(model, 4, struct.pack("<I", version))
    expect_refused(model, mmproj, model, fragment)


def test_corrupt_array_length_is_refused_at_once(tiny_files: ModelFiles, tmp_path: Path) -> None:
    """gguf.GGUFReader spins practically forever on this file (2**40 empty reads); the check answers at once."""
    model, mmproj = _copies(tiny_files, tmp_path)
    key = b"tokenizer.ggml.scores"
    where = model.read_bytes().index(key) + len(key) + 8  # skip the value type and the item type
    _patch(model, where, struct.pack("<Q", 2**40))
    expect_refused(model, mmproj, model, "'tokenizer.ggml.scores' claims 1,099,511,627,776 items")


def test_unknown_tensor_type(tiny_files: ModelFiles, tmp_path: Path) -> None:
    model, mmproj = _copies(tiny_files, tmp_path)
    name = b"output_norm.weight"
    where = model.read_bytes().index(name) + len(name) + 4 + 8  # skip n_dims and its one dimension
    _patch(model, where, struct.pack("<I", 250))
    expect_refused(model, mmproj, model, "'output_norm.weight' has the unknown type 250")


# --- the wrong files -----------------------------------------------------------------------------------


def test_text_model_of_another_architecture(tiny_files: ModelFiles, tmp_path: Path) -> None:
    """llama.cpp loads this one (qwen2 reads the same tensors) and captions gibberish; the check refuses it."""
    bad = rewrite(tiny_files.model_path, tmp_path / "qwen2.gguf", arch="qwen2")
    expect_refused(bad, tiny_files.mmproj_path, bad, "architecture 'qwen2', not 'llama'")


def test_swapped_files(tiny_files: ModelFiles) -> None:
    expect_refused(tiny_files.mmproj_path, tiny_files.model_path, tiny_files.mmproj_path,
                   "is a CLIP vision projector", "swapped")


def test_text_model_given_as_mmproj(tiny_files: ModelFiles) -> None:
    expect_refused(tiny_files.model_path, tiny_files.model_path, tiny_files.model_path,
                   "(mmproj)", "is a llama text model", "swapped")


def test_projector_width_does_not_match_the_text_model(tiny_files: ModelFiles, tmp_path: Path) -> None:
    vision = PRESETS["tiny"].vision.n_embd
    wide = {
        "mm.0.weight": np.zeros((128, vision), np.float16), "mm.0.bias": np.zeros(128, np.float32),
        "mm.2.weight": np.zeros((128, 128), np.float16), "mm.2.bias": np.zeros(128, np.float32),
        "model.image_newline": np.zeros(128, np.float32),
    }
    bad = rewrite(tiny_files.mmproj_path, tmp_path / "wide-mmproj.gguf", tensors=wide)
    error = expect_refused(tiny_files.model_path, bad, bad, "128-wide embeddings", f"embedding width {TEXT_WIDTH}")
    assert str(tiny_files.model_path) in str(error)


@pytest.mark.parametrize(
    "which, key, fragment",
    [
        ("model", "llama.embedding_length", "lacks the key 'llama.embedding_length'"),
        ("model", "tokenizer.ggml.tokens", "lacks the key 'tokenizer.ggml.tokens'"),
        ("mmproj", "clip.has_vision_encoder", "has no vision encoder"),
        ("mmproj", "clip.projector_type", "projector type None"),
        ("mmproj", "clip.vision.patch_size", "lacks the key 'clip.vision.patch_size'"),
    ],
)
def test_missing_key(tiny_files: ModelFiles, tmp_path: Path, which: str, key: str, fragment: str) -> None:
    model, mmproj = tiny_files.model_path, tiny_files.mmproj_path
    source = model if which == "model" else mmproj
    bad = rewrite(source, tmp_path / f"no-{key}.gguf", drop=(key,))
    expect_refused(bad if which == "model" else model, bad if which == "mmproj" else mmproj, bad, fragment)


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        # Each of these loads in llama.cpp, then GGML_ASSERT aborts the process at the first image:
        ("clip.vision.attention.head_count", 3, "width 32 is not a multiple of head count 3"),
        ("clip.vision.attention.head_count", 0, "head_count is 0"),
        ("clip.vision.patch_size", 13, "image size 336 is not a multiple of patch size 13"),
        ("clip.vision.image_size", 448, "v.position_embd.weight has shape (32, 577)"),
        # ... and with this one the first image never finishes:
        ("clip.vision.image_size", 0, "image_size is 0"),
        ("clip.projector_type", "ldp", "projector type 'ldp'"),
    ],
)
def test_mmproj_that_llama_cpp_would_crash_on(
    tiny_files: ModelFiles, tmp_path: Path, key: str, value: object, fragment: str
) -> None:
    bad = rewrite(tiny_files.mmproj_path, tmp_path / "edited-mmproj.gguf", values={key: value})
    expect_refused(tiny_files.model_path, bad, bad, fragment)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="measures with the POSIX resource module")
def test_big_model_header_is_read_without_touching_tensor_data(tmp_path: Path) -> None:
    """A real-shape Mistral-7B f16 header (32,000-token vocabulary, 291 tensors) over 14.5 GB of sparse data."""
    path = tmp_path / "real-shape-f16.gguf"
    preset = PRESETS["real-shape"]
    writer = gguf.GGUFWriter(path, "llama")
    for key, value in text_metadata(preset).items():
        _add_value(writer, key, value)  # written exactly as the synthetic builder writes them
    specs = text_tensors(preset.text)
    for spec in specs:
        writer.add_tensor_info(spec.name, spec.shape[::-1], np.float16 if spec.dtype == "f16" else np.float32,
                               spec.nbytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with open(path, "r+b") as handle:  # a hole where the weights would be: no disk is used
        handle.truncate(read_header(path).data_end)
    assert path.stat().st_size > 14e9
    code = textwrap.dedent(
        """
        import sys
        from llava_edge.host.process import peak_rss_bytes
        from llava_edge.models.file_check import check_text_model
        before = peak_rss_bytes()
        check_text_model(sys.argv[1])
        print((peak_rss_bytes() - before) / 2**20)
        """
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], check=False, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 16  # MiB; measured under 1 MiB: the tensor data was never read


# --- what llama.cpp does without the check ---------------------------------------------------------------

_LLAMA_CPP_ALONE = textwrap.dedent(
    """
    import sys
    import llama_cpp
    from llama_cpp.llama_chat_format import Llava16ChatHandler

    model, mmproj, image = sys.argv[1:4]
    handler = Llava16ChatHandler(clip_model_path=mmproj, verbose=True)
    llm = llama_cpp.Llama(model_path=model, n_ctx=2048, n_threads=1, chat_handler=handler, verbose=True)
    print("loaded", flush=True)
    llm.create_chat_completion(
        messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": "Describe."}]}],
        max_tokens=2,
    )
    print("captioned", flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="abort() is SIGABRT on POSIX")
def test_llama_cpp_alone_aborts_on_a_file_the_check_refuses(
    tiny_files: ModelFiles, tmp_path: Path, make_image: Any
) -> None:
    bad = rewrite(tiny_files.mmproj_path, tmp_path / "heads3-mmproj.gguf",
                  values={"clip.vision.attention.head_count": 3})
    image = "data:image/png;base64," + base64.b64encode(make_image(32, 32)).decode()
    result = subprocess.run([sys.executable, "-c", _LLAMA_CPP_ALONE, str(tiny_files.model_path), str(bad), image],
                            check=False, capture_output=True, text=True, timeout=300)
    assert "loaded" in result.stdout.split() and "captioned" not in result.stdout  # it loads, then the first image ...
    assert result.returncode == -signal.SIGABRT  # ... by abort(), taking the whole process with it
    assert "GGML_ASSERT(ggml_nelements(a) == ne0*ne1*ne2) failed" in result.stderr
    expect_refused(tiny_files.model_path, bad, bad, "not a multiple of head count 3")


def _copies(files: ModelFiles, directory: Path) -> tuple[Path, Path]:
    model, mmproj = directory / "model.gguf", directory / "mmproj.gguf"
    shutil.copy(files.model_path, model)
    shutil.copy(files.mmproj_path, mmproj)
    return model, mmproj


def _patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)
