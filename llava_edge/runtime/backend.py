"""llama.cpp's process-wide side: backend start, its log routed to ``logging``, Ctrl-C and abort
callbacks, what the build can do, and where the layers go for a device choice."""

from __future__ import annotations

import ctypes
import logging
import threading
from collections import deque
from typing import Any

import llama_cpp
import llama_cpp.mtmd_cpp as mtmd

from llava_edge.errors import RuntimeBackendError
from llava_edge.host.cpu import cpu_has_amx

DEVICES = ("auto", "cpu", "metal", "cuda")
_log = logging.getLogger("llava_edge.llama_cpp")
_LOG_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.INFO, 4: logging.WARNING}
"""ggml's DEBUG, INFO, WARN, ERROR. Its warnings are routine (context shorter than trained), so they are
logged at INFO; its errors at WARNING, and the last few are quoted in RuntimeBackendError messages."""
recent_errors: deque[str] = deque(maxlen=3)
_GPU_DEVICE_TYPES = (1, 2)
"""``ggml_backend_dev_type``: GGML_BACKEND_DEVICE_TYPE_GPU, _IGPU (CPU is 0, ACCEL 3)."""
_interrupted = threading.Event()


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def _forward_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # An exception cannot cross the C callback: a Ctrl-C that lands here is remembered and re-raised
    # by raise_if_interrupted() once llama.cpp returns.
    try:
        python_level = _LOG_LEVELS.get(level, logging.DEBUG)
        if python_level >= logging.WARNING:
            recent_errors.append(text.decode("utf-8", "replace").strip())
        if _log.isEnabledFor(python_level):
            _log.log(python_level, text.decode("utf-8", "replace").rstrip())
    except KeyboardInterrupt:
        _interrupted.set()


@llama_cpp.ggml_abort_callback  # type: ignore[untyped-decorator]
def ABORT_NOW(data: ctypes.c_void_p) -> bool:
    """An abort callback that stops llama.cpp at its next check (between batches)."""
    return True


NO_ABORT = llama_cpp.ggml_abort_callback()
"""A NULL abort callback: llama.cpp runs every batch to the end."""


def raise_if_interrupted() -> None:
    """Re-raise a Ctrl-C that arrived while llama.cpp was logging."""
    if _interrupted.is_set():
        _interrupted.clear()
        raise KeyboardInterrupt


_backend_ready = False


def init_backend() -> None:
    """Route llama.cpp and libmtmd logs to ``logging`` and initialise the backend, once."""
    global _backend_ready
    if not _backend_ready:
        llama_cpp.llama_log_set(_forward_log, ctypes.c_void_p(0))
        mtmd.mtmd_log_set(_forward_log, ctypes.c_void_p(0))
        mtmd.mtmd_helper_log_set(_forward_log, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _backend_ready = True


def llama_says() -> str:
    """The last errors llama.cpp logged, for an error message ("" when it logged none)."""
    return f" (llama.cpp: {'; '.join(recent_errors)})" if recent_errors else ""


def system_info() -> str:
    """llama.cpp's system info line (compiled CPU features and backends)."""
    return bytes(llama_cpp.llama_print_system_info()).decode("utf-8", "replace")


def gpu_backends() -> list[str]:
    """GPU backends compiled into llama.cpp: any of "cuda", "metal" (empty for a CPU-only build)."""
    info = system_info().upper()
    return ([name for name in ("cuda", "metal") if name.upper() in info]
            if llama_cpp.llama_supports_gpu_offload() else [])


def backend_info() -> dict[str, Any]:
    """What the installed llama-cpp-python can do: version, GPU offload, compiled features, and on a Metal
    build the working-set limit the Metal device reports (``metal_working_set_bytes``)."""
    backends = gpu_backends()
    facts: dict[str, Any] = {
        "llama_cpp_python": llama_cpp.__version__,
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "gpu_backends": backends,
        "system_info": system_info().strip(),
        "cpu_has_amx": cpu_has_amx(),
    }
    if "metal" in backends:
        facts["metal_working_set_bytes"] = gpu_device_memory()
    return facts


def gpu_device_memory() -> int | None:
    """Total memory of the first GPU device ggml reports (Metal: ``recommendedMaxWorkingSetSize``), in
    bytes; ``None`` without one, or where this build does not export ggml's device API."""
    lib = llama_cpp.llama_cpp._lib
    try:
        count, get, kind, memory = (lib.ggml_backend_dev_count, lib.ggml_backend_dev_get,
                                    lib.ggml_backend_dev_type, lib.ggml_backend_dev_memory)
    except AttributeError:
        return None
    count.restype, count.argtypes = ctypes.c_size_t, []
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    kind.restype, kind.argtypes = ctypes.c_int, [ctypes.c_void_p]
    memory.restype = None
    memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]
    for index in range(count()):
        device = get(index)
        if kind(device) in _GPU_DEVICE_TYPES:
            free, total = ctypes.c_size_t(), ctypes.c_size_t()
            memory(device, ctypes.byref(free), ctypes.byref(total))
            return int(total.value) or None
    return None


def offload_plan(device: str) -> tuple[int, bool]:
    """(n_gpu_layers, CLIP on GPU) for a device choice."""
    if device not in DEVICES:
        raise RuntimeBackendError(f"device must be one of {', '.join(DEVICES)}, got {device!r}.")
    offload = bool(llama_cpp.llama_supports_gpu_offload())
    if device == "cpu" or (device == "auto" and not offload):
        return 0, False
    if device != "auto" and device not in gpu_backends():
        raise RuntimeBackendError(
            f"This llama-cpp-python build has no {device} support. Reinstall it with "
            f"CMAKE_ARGS=\"-DGGML_{device.upper()}=on\" pip install --force-reinstall --no-cache-dir llama-cpp-python, "
            "or use device=\"cpu\"."
        )
    return 999, True


def check_repack_safe(repack: bool) -> None:
    """Refuse ggml's repacked (AMX) weights where they crash on K-quants."""
    if repack and cpu_has_amx() and "AMX_INT8 = 1" in system_info():
        raise RuntimeBackendError(
            "repack=True uses ggml's AMX kernels, which crash on K-quant models on this CPU (llama.cpp #20824). "
            "Keep repack off, or rebuild llama-cpp-python with "
            "CMAKE_ARGS=\"-DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' "
            "-DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'\"."
        )
