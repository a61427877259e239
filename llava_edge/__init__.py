"""llava-edge: offline image captioning with LLaVA-1.6-Mistral-7B GGUF, speaking the Runware caption API.

The public names load on first use (PEP 562), so ``import llava_edge`` and the commands that only manage
model files never import ``llama_cpp``: a missing or broken GPU build of llama-cpp-python cannot break them.
"""

import typing as _typing
from importlib import import_module as _import_module

from llava_edge import errors
from llava_edge._version import __version__

if _typing.TYPE_CHECKING:
    from llava_edge.api import CaptionDone, Captioner, CaptionResult, caption, run_task
    from llava_edge.batch.runner import caption_many
    from llava_edge.events import Progress, TextDelta
    from llava_edge.generation import GenerationOptions, RuntimeOptions, Timings
    from llava_edge.models.catalog import ModelFiles, ModelSpec, available_models
    from llava_edge.models.download import download_model
    from llava_edge.token_budget import image_token_count

_LAZY = {
    "CaptionDone": "llava_edge.api",
    "CaptionResult": "llava_edge.api",
    "Captioner": "llava_edge.api",
    "GenerationOptions": "llava_edge.generation",
    "ModelFiles": "llava_edge.models.catalog",
    "ModelSpec": "llava_edge.models.catalog",
    "Progress": "llava_edge.events",
    "RuntimeOptions": "llava_edge.generation",
    "TextDelta": "llava_edge.events",
    "Timings": "llava_edge.generation",
    "available_models": "llava_edge.models.catalog",
    "caption": "llava_edge.api",
    "caption_many": "llava_edge.batch.runner",
    "download_model": "llava_edge.models.download",
    "image_token_count": "llava_edge.token_budget",
    "run_task": "llava_edge.api",
}

__all__ = [
    "CaptionDone",
    "CaptionResult",
    "Captioner",
    "GenerationOptions",
    "ModelFiles",
    "ModelSpec",
    "Progress",
    "RuntimeOptions",
    "TextDelta",
    "Timings",
    "__version__",
    "available_models",
    "caption",
    "caption_many",
    "download_model",
    "errors",
    "image_token_count",
    "run_task",
]


def __getattr__(name: str) -> _typing.Any:
    """Import a public name's module the first time the name is used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llava_edge' has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
