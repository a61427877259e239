"""llava-edge: offline image captioning with LLaVA-1.6-Mistral-7B GGUF, speaking the Runware caption API."""

from . import errors
from .api import Captioner, CaptionResult, caption, run_task
from .batch import caption_many
from .download import download_model
from .generation import GenerationOptions, RuntimeOptions, Timings
from .registry import ModelFiles, ModelSpec, available_models

__version__ = "0.1.0"

__all__ = [
    "CaptionResult",
    "Captioner",
    "GenerationOptions",
    "ModelFiles",
    "ModelSpec",
    "RuntimeOptions",
    "Timings",
    "__version__",
    "available_models",
    "caption",
    "caption_many",
    "download_model",
    "errors",
    "run_task",
]
