"""Check a LLaVA-1.6 GGUF model pair before llama.cpp loads it, so a bad file is a ``ModelFileError``.

What llama.cpp (llama-cpp-python 0.3.36) does on its own, measured on the tiny synthetic pair: truncated,
empty or non-GGUF files, missing keys, swapped files or a projector of the wrong width fail to load with
no reason to show; a llama model relabelled ``qwen2`` loads and captions gibberish; an mmproj whose head
count does not divide its width, whose patch size does not divide its image size, or whose position
table is smaller than its patch grid loads, then ``GGML_ASSERT`` aborts the process at the first image
(with ``clip.vision.image_size = 0`` the first image hangs).

``check_model_pair`` reads both headers (keys and tensor table, never tensor data). Not with
``gguf.GGUFReader``: it builds a numpy view per array element (2.6 s and ~90 MB for a 32,000-token
vocabulary) and spins practically forever on a corrupt array length. The walk here uses gguf's
constants, keeps only short arrays, and bounds every length by the file size.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path

from llava_edge.errors import ModelFileError
from llava_edge.models.gguf_header import GGUF_VERSIONS as GGUF_VERSIONS
from llava_edge.models.gguf_header import ArrayInfo as ArrayInfo
from llava_edge.models.gguf_header import Corrupt, GGUFHeader, HeaderWalk, TensorInfo

TEXT_ARCH = "llama"
VISION_ARCH = "clip"
PROJECTOR_TYPES = ("mlp",)  # LLaVA-1.6's projector: two linear layers with a GELU (mm.0, mm.2)

TEXT_ROLE, MMPROJ_ROLE = "text model", "vision projector (mmproj)"


@dataclass(frozen=True)
class _Role:
    """Which file of the pair is being checked; what it is when swapped, and what to use instead."""

    name: str
    arch: str
    other_arch: str
    is_other: str
    pass_instead: str
    use_instead: str


_TEXT = _Role(TEXT_ROLE, TEXT_ARCH, VISION_ARCH, "is a CLIP vision projector (an mmproj), not a text model",
              "pass the large llama GGUF as the model",
              "LLaVA-1.6-Mistral's text model is a llama-architecture GGUF; use the one published with it.")
_MMPROJ = _Role(MMPROJ_ROLE, VISION_ARCH, TEXT_ARCH, "is a llama text model, not a vision projector",
                "pass the smaller clip GGUF as the mmproj",
                "Use the mmproj (clip) GGUF published with LLaVA-1.6-Mistral.")

_TEXT_KEYS = (
    "llama.context_length", "llama.embedding_length", "llama.block_count", "llama.feed_forward_length",
    "llama.attention.head_count", "llama.attention.layer_norm_rms_epsilon", "tokenizer.ggml.model",
    "tokenizer.ggml.tokens",
)
_VISION_DIMS = (
    "clip.vision.image_size", "clip.vision.patch_size", "clip.vision.embedding_length",
    "clip.vision.feed_forward_length", "clip.vision.attention.head_count", "clip.vision.block_count",
)
_VISION_KEYS = ("clip.vision.attention.layer_norm_epsilon", "clip.vision.image_mean", "clip.vision.image_std")
_REDOWNLOAD = "Delete it and download it again (`llava-edge pull VARIANT`), or use the file published with the model."


def check_model_pair(model_path: str | os.PathLike[str], mmproj_path: str | os.PathLike[str]) -> None:
    """Check that two files are a LLaVA-1.6 text model and its mmproj that llama.cpp can load safely, reading only
    their headers (a few MB at most, even for a 4 GB model; tensor data is never read).

    Raises:
        ModelFileError: naming the file, what is wrong with it, and what to do.
    """
    text = check_text_model(model_path)
    vision = check_mmproj(mmproj_path)
    text_width = text.metadata["llama.embedding_length"]
    projector_width = vision.tensors["mm.2.weight"].shape[1]
    if projector_width != text_width:
        raise ModelFileError(
            f"The {MMPROJ_ROLE} {vision.path} projects images to {projector_width}-wide embeddings, but the "
            f"{TEXT_ROLE} {text.path} has embedding width {text_width}: the mmproj belongs to another model. "
            "Use the mmproj published with this text model."
        )


def check_text_model(path: str | os.PathLike[str]) -> GGUFHeader:
    """Check one file as the LLaVA-1.6 text model (``llama`` architecture) and return its header."""
    header = _read_as(path, _TEXT)
    _require_keys(header, TEXT_ROLE, _TEXT_KEYS)
    width = _positive_int(header, TEXT_ROLE, "llama.embedding_length")
    _positive_int(header, TEXT_ROLE, "llama.block_count")
    embeddings = _require_tensor(header, TEXT_ROLE, "token_embd.weight")
    if embeddings.shape[0] != width:
        raise _inconsistent(TEXT_ROLE, header.path, f"token_embd.weight is {embeddings.shape[0]} wide", f"{width}")
    return header


def check_mmproj(path: str | os.PathLike[str]) -> GGUFHeader:
    """Check one file as a LLaVA-1.6 mmproj (``clip`` with a vision encoder and an MLP projector)."""
    header = _read_as(path, _MMPROJ)
    if header.metadata.get("clip.has_vision_encoder") is not True:
        raise _problem(MMPROJ_ROLE, header.path, "has no vision encoder (clip.has_vision_encoder is not true)",
                       "Use the mmproj published with LLaVA-1.6-Mistral.")
    projector = header.metadata.get("clip.projector_type", header.metadata.get("clip.vision.projector_type"))
    if projector not in PROJECTOR_TYPES:
        raise _problem(MMPROJ_ROLE, header.path, f"has projector type {projector!r}, not 'mlp' as LLaVA-1.6 uses",
                       "It belongs to another model family; use the mmproj published with LLaVA-1.6-Mistral.")
    _require_keys(header, MMPROJ_ROLE, _VISION_KEYS)
    _check_vision_shape(header, {key: _positive_int(header, MMPROJ_ROLE, key) for key in _VISION_DIMS})
    return header


def read_header(path: str | os.PathLike[str], role: str = "model file") -> GGUFHeader:
    """Read a GGUF file's metadata and tensor table through a memory map, touching only the header pages.

    Raises:
        ModelFileError: the file is missing, empty, not GGUF, of an unsupported version, or its header is
            cut short or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"No {role} file at {path}. Check the path, or download the model again.")
    if path.stat().st_size == 0:
        raise _problem(role, path, "is empty (0 bytes)", "The download did not finish. " + _REDOWNLOAD)
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            _check_magic(buffer, role, path)
            return HeaderWalk(buffer).header(path)
    except Corrupt as err:
        raise _problem(role, path, str(err), _REDOWNLOAD) from None
    except OSError as err:
        raise ModelFileError(f"Cannot read the {role} {path}: {err.strerror or err}.") from err


# --- checks ----------------------------------------------------------------------------------------


def _read_as(path: str | os.PathLike[str], role: _Role) -> GGUFHeader:
    """The header of a complete file of the role's architecture; a swapped pair is named as such."""
    header = _read_complete(Path(path), role.name)
    arch = header.architecture
    if arch == role.other_arch:
        raise _problem(role.name, header.path, role.is_other,
                       f"model_path and mmproj_path look swapped: {role.pass_instead}.")
    if arch != role.arch:
        raise _problem(role.name, header.path, f"has architecture {arch!r}, not {role.arch!r}", role.use_instead)
    return header


def _read_complete(path: Path, role: str) -> GGUFHeader:
    """The header, after checking that the file holds all the tensor data its table declares."""
    header = read_header(path, role)
    if header.data_end > header.file_size:
        percent = 100 * header.file_size // header.data_end
        raise _problem(
            role, path,
            f"is truncated: its tensors need {header.data_end:,} bytes but the file has {header.file_size:,} "
            f"({percent}%)",
            "The download was probably interrupted. " + _REDOWNLOAD,
        )
    return header


def _check_vision_shape(header: GGUFHeader, dims: dict[str, int]) -> None:
    """The CLIP hyper-parameters and tensor shapes must agree, or llama.cpp aborts at the first image."""
    image, patch = dims["clip.vision.image_size"], dims["clip.vision.patch_size"]
    width, heads = dims["clip.vision.embedding_length"], dims["clip.vision.attention.head_count"]
    if image % patch:
        raise _inconsistent(MMPROJ_ROLE, header.path, f"image size {image} is not a multiple of patch size {patch}")
    if width % heads:
        raise _inconsistent(MMPROJ_ROLE, header.path, f"width {width} is not a multiple of head count {heads}")
    patches = _require_tensor(header, MMPROJ_ROLE, "v.patch_embd.weight")
    if patches.shape != (patch, patch, 3, width):
        raise _inconsistent(MMPROJ_ROLE, header.path, f"v.patch_embd.weight has shape {patches.shape}",
                            f"{(patch, patch, 3, width)}")
    n_positions = (image // patch) ** 2 + (1 if "v.class_embd" in header.tensors else 0)
    positions = _require_tensor(header, MMPROJ_ROLE, "v.position_embd.weight")
    if positions.shape != (width, n_positions):
        raise _inconsistent(MMPROJ_ROLE, header.path, f"v.position_embd.weight has shape {positions.shape}",
                            f"{(width, n_positions)} for {image}px images in {patch}px patches")
    first, last = (_require_tensor(header, MMPROJ_ROLE, name) for name in ("mm.0.weight", "mm.2.weight"))
    if len(first.shape) != 2 or len(last.shape) != 2 or first.shape[0] != width or first.shape[1] != last.shape[0]:
        raise _inconsistent(MMPROJ_ROLE, header.path, f"the projector maps {first.shape} then {last.shape}",
                            f"({width}, n) then (n, m)")


def _require_keys(header: GGUFHeader, role: str, keys: tuple[str, ...]) -> None:
    missing = [key for key in keys if key not in header.metadata]
    if missing:
        raise _problem(role, header.path, f"lacks the key {missing[0]!r} that llama.cpp needs",
                       "It is incomplete or was converted for another model. " + _REDOWNLOAD)


def _positive_int(header: GGUFHeader, role: str, key: str) -> int:
    _require_keys(header, role, (key,))
    value = header.metadata[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _inconsistent(role, header.path, f"{key} is {value!r}", "a positive integer")
    return value


def _require_tensor(header: GGUFHeader, role: str, name: str) -> TensorInfo:
    tensor = header.tensors.get(name)
    if tensor is None:
        raise _problem(role, header.path, f"has no tensor {name!r}",
                       "It is incomplete or was converted for another model. " + _REDOWNLOAD)
    return tensor


def _problem(role: str, path: Path, problem: str, advice: str) -> ModelFileError:
    return ModelFileError(f"The {role} {path} {problem}. {advice}")


def _inconsistent(role: str, path: Path, found: str, expected: str | None = None) -> ModelFileError:
    wanted = f" (expected {expected})" if expected else ""
    return _problem(role, path, f"is inconsistent: {found}{wanted}",
                    "llama.cpp does not check this and may crash the process on the first image. The file is "
                    "damaged or was edited. " + _REDOWNLOAD)


def _check_magic(buffer: mmap.mmap, role: str, path: Path) -> None:
    start = bytes(buffer[:64])
    if start[:4] == b"GGUF":
        return
    if start.startswith(b"version https://git-lfs"):
        raise _problem(role, path, "is a Git LFS pointer, not the model",
                       "Fetch the real file with `git lfs pull`, or download it with `llava-edge pull VARIANT`.")
    hint = " (it looks like a web page: a failed download saved an error page)" if start.lstrip()[:1] == b"<" else ""
    if not start.strip(b"\0"):  # llama.cpp's quantizer writes the header last; some downloaders preallocate
        hint = " (it begins with zeros: it is still being written, or a download preallocated it and stopped)"
    raise _problem(role, path, f"is not a GGUF file{hint}: it starts with {start[:16]!r}", _REDOWNLOAD)
