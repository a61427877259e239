"""llama.cpp's own quantizer, for the synthetic K-quant models (the real tensor mix)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import llama_cpp

from llava_edge.errors import RuntimeBackendError
from llava_edge.runtime.backend import init_backend

_QUANT_FTYPES = {
    "Q3_K_S": llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_S,
    "Q3_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_M,
    "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "Q4_K_S": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_S,
    "Q5_K_S": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_S,
    "Q5_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "Q6_K": llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K,
    "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
}


def quantize_gguf(source: Path, target: Path, quant: str = "Q4_K_M", *, threads: int = 0) -> None:
    """Quantize a GGUF text model with llama.cpp's own quantizer (the real K-quant tensor mix).

    Raises:
        RuntimeBackendError: llama.cpp reported a failure.
    """
    init_backend()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _QUANT_FTYPES[quant]
    params.nthread = threads
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0:
        raise RuntimeBackendError(f"llama.cpp could not quantize {source} to {quant} (status {status}).")
