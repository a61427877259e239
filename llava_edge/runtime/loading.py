"""Loading: the llama.cpp model, its context and the libmtmd (CLIP) context, from a model pair and options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import llama_cpp
import llama_cpp.mtmd_cpp as mtmd

from llava_edge.errors import RuntimeBackendError
from llava_edge.generation import RuntimeOptions
from llava_edge.host.cores import default_threads
from llava_edge.models.catalog import ModelFiles
from llava_edge.runtime.backend import llama_says, recent_errors


def load_model(path: Path, options: RuntimeOptions, gpu_layers: int) -> Any:
    """The text model, with ``gpu_layers`` offloaded."""
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = gpu_layers
    params.use_extra_bufts = options.repack
    if not options.use_mmap:
        params.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE
    recent_errors.clear()
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise RuntimeBackendError(
            f"llama.cpp could not load the model {path}{llama_says()}. Check the file and free memory."
        )
    return model


def new_context(model: Any, options: RuntimeOptions) -> Any:
    """A llama.cpp context of ``options.n_ctx`` tokens on ``model``."""
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = options.n_ctx
    params.n_batch = options.n_batch
    params.n_ubatch = options.n_ubatch
    params.n_threads = options.threads or default_threads()
    params.n_threads_batch = options.threads_batch or default_threads()
    params.flash_attn_type = _flash_attn(options)
    context = llama_cpp.llama_init_from_model(model, params)
    if not context:
        raise RuntimeBackendError(
            f"llama.cpp could not create a context of {options.n_ctx} tokens. Free memory or lower n_ctx."
        )
    return context


def new_mtmd(mmproj_path: Path, model: Any, options: RuntimeOptions, on_gpu: bool) -> Any:
    """A libmtmd context for the vision projector, bound to the text model."""
    params = mtmd.mtmd_context_params_default()
    params.use_gpu = on_gpu
    params.print_timings = False
    params.n_threads = options.threads_batch or default_threads()
    params.warmup = False
    params.flash_attn_type = _flash_attn(options)
    context = mtmd.mtmd_init_from_file(str(mmproj_path).encode(), model, params)
    if not context or not mtmd.mtmd_support_vision(context):
        if context:
            mtmd.mtmd_free(context)
        raise RuntimeBackendError(
            f"libmtmd could not load the vision projector {mmproj_path}{llama_says()}. Check that "
            "it is the mmproj that belongs to this model."
        )
    return context


def identity(files: ModelFiles, options: RuntimeOptions) -> str:
    """What the evaluated state depends on: the model files and the options that change numerics."""
    stats = [f"{path}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
             for path in (files.model_path, files.mmproj_path)]
    numerics = (options.device, options.n_ctx, options.n_batch, options.n_ubatch, options.flash_attn, options.repack)
    return "|".join([*stats, repr(numerics)])


def _flash_attn(options: RuntimeOptions) -> int:
    enabled = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    return int(enabled if options.flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
