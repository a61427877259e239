"""The GGUF header walk: a file's metadata and tensor table read through a memory map, every length checked
against what is left of the file, only short arrays kept (``file_check`` says why not ``gguf.GGUFReader``)."""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, GGUFValueType

GGUF_VERSIONS = (2, 3)  # what llama.cpp reads (v1 was dropped long ago)
_SCALARS = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H", GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i", GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q", GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}
_SHORT_ARRAY = 64
"""Arrays up to this length are kept (pinpoints, image mean/std); longer ones only counted (vocabularies)."""
_MAX_DIMS, _MIN_KV_BYTES, _MIN_TENSOR_INFO_BYTES = 4, 8 + 4 + 1, 8 + 4 + 4 + 8  # ggml's rank; smallest entries


@dataclass(frozen=True)
class ArrayInfo:
    """A metadata array too long to keep: its element type and length."""

    item_type: GGUFValueType
    count: int


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor table."""

    shape: tuple[int, ...]
    """GGUF ``ne`` order: the fastest-varying dimension first (a linear layer is ``(n_in, n_out)``)."""
    type_name: str
    offset: int
    """Absolute offset of the data in the file."""
    nbytes: int


@dataclass(frozen=True)
class GGUFHeader:
    """What a GGUF file declares: its metadata and tensor table, read without touching tensor data."""

    path: Path
    version: int
    file_size: int
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo]

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    @property
    def data_end(self) -> int:
        """Where the last tensor's data ends: the size the file must have at least."""
        return max((tensor.offset + tensor.nbytes for tensor in self.tensors.values()), default=0)


# --- the header walk -------------------------------------------------------------------------------


class Corrupt(Exception):
    """The header breaks the GGUF format; the message says where."""


class HeaderWalk:
    """Reads a GGUF header from a buffer; every length is checked against what is left of the file."""

    def __init__(self, buffer: mmap.mmap):
        self.buffer = buffer
        self.pos = 4

    def header(self, path: Path) -> GGUFHeader:
        version = self.unpack("<I", "the version")
        if version not in GGUF_VERSIONS:
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            raise Corrupt(
                "is a big-endian GGUF, which llama.cpp cannot read on this machine" if swapped in GGUF_VERSIONS
                else f"has GGUF version {version}; llama.cpp reads versions {GGUF_VERSIONS}"
            )
        n_tensors, n_kv = self.unpack("<Q", "the tensor count"), self.unpack("<Q", "the key count")
        if n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES > self.left:
            raise Corrupt(f"is cut short or corrupt: it declares {n_kv:,} keys and {n_tensors:,} tensors, but only "
                           f"{self.left:,} bytes follow")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = self.string("a key name")
            if key in metadata:
                raise Corrupt(f"has the key {key!r} twice")
            metadata[key] = self.value(self.unpack("<I", f"the type of {key!r}"), key)
        table = [self.tensor_entry() for _ in range(n_tensors)]
        alignment = metadata.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment < 1 or alignment & (alignment - 1):
            raise Corrupt(f"has general.alignment {alignment!r}, not a power of two")
        data_start = -(-self.pos // alignment) * alignment
        tensors = _tensor_table(table, data_start, alignment)
        return GGUFHeader(path, version, len(self.buffer), metadata, tensors)

    @property
    def left(self) -> int:
        return len(self.buffer) - self.pos

    def take(self, size: int, what: str) -> int:
        if size > self.left:
            raise Corrupt(f"is cut short or corrupt: {what} at byte {self.pos} needs {size:,} bytes, "
                           f"{self.left:,} are left")
        start, self.pos = self.pos, self.pos + size
        return start

    def unpack(self, fmt: str, what: str) -> Any:
        return struct.unpack_from(fmt, self.buffer, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        size = self.unpack("<Q", what)
        start = self.take(size, what)
        try:
            return self.buffer[start : start + size].decode("utf-8")
        except UnicodeDecodeError:
            raise Corrupt(f"is corrupt: {what} at byte {start} is not UTF-8 text") from None

    def value(self, raw_type: int, key: str) -> Any:
        kind = _value_type(raw_type, key)
        if kind == GGUFValueType.STRING:
            return self.string(key)
        if kind == GGUFValueType.ARRAY:
            return self.array(key)
        return self.unpack(_SCALARS[kind], key)

    def array(self, key: str) -> list[Any] | ArrayInfo:
        item = _value_type(self.unpack("<I", key), key)
        count = self.unpack("<Q", key)
        if item == GGUFValueType.ARRAY:
            raise Corrupt(f"is corrupt: {key!r} is an array of arrays")
        item_size = 8 if item == GGUFValueType.STRING else struct.calcsize(_SCALARS[item])
        if count * item_size > self.left:
            raise Corrupt(f"is cut short or corrupt: {key!r} claims {count:,} items, more than the file holds")
        if count <= _SHORT_ARRAY:
            return [self.value(item, key) for _ in range(count)]
        if item == GGUFValueType.STRING:
            for _ in range(count):
                self.take(self.unpack("<Q", key), key)
        else:
            self.take(count * item_size, key)
        return ArrayInfo(item, count)

    def tensor_entry(self) -> _TableEntry:
        name = self.string("a tensor name")
        n_dims = self.unpack("<I", f"the rank of {name!r}")
        if not 1 <= n_dims <= _MAX_DIMS:
            raise Corrupt(f"is corrupt: tensor {name!r} has {n_dims} dimensions")
        shape = tuple(self.unpack("<Q", f"the shape of {name!r}") for _ in range(n_dims))
        return name, shape, self.unpack("<I", f"the type of {name!r}"), self.unpack("<Q", f"the offset of {name!r}")


def _value_type(raw: int, key: str) -> GGUFValueType:
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise Corrupt(f"is corrupt: {key!r} has the unknown value type {raw}") from None


_TableEntry = tuple[str, tuple[int, ...], int, int]  # name, shape, ggml type id, offset in the data section


def _tensor_table(table: list[_TableEntry], data_start: int, alignment: int) -> dict[str, TensorInfo]:
    tensors: dict[str, TensorInfo] = {}
    for name, shape, raw_type, offset in table:
        try:
            ggml_type = GGMLQuantizationType(raw_type)
            block, type_size = GGML_QUANT_SIZES[ggml_type]
        except (ValueError, KeyError):
            raise Corrupt(f"is corrupt: tensor {name!r} has the unknown type {raw_type}") from None
        if name in tensors or shape[0] % block or offset % alignment:
            raise Corrupt(f"is corrupt: tensor {name!r} is repeated, misaligned or has a bad shape {shape}")
        nbytes = math.prod(shape) // block * type_size
        tensors[name] = TensorInfo(shape, ggml_type.name, data_start + offset, nbytes)
    return tensors
