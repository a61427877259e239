"""What every image of a ``caption`` run shares (``CaptionJob``): the command builds it from its flags, and the
local and Ray paths read it. Which model runs, and how, is the shared ``command_options.ModelLoad``."""

from __future__ import annotations

from dataclasses import dataclass, field

from llava_edge.batch.photo_step import PhotoOptions
from llava_edge.generation import GenerationOptions
from llava_edge.structured import StructuredOutput


@dataclass(frozen=True)
class CaptionJob:
    """The question asked of every image of a run, how it is answered, and where else the caption goes."""

    prompt: str | None = None
    """The instruction; ``None``: a detailed description (``schema.DEFAULT_PROMPT``)."""
    detail: str = "auto"
    """auto | low | high: how many CLIP tiles an image is seen as."""
    image_tokens: int | None = None
    """``--image-tokens``: at most this many image tokens fed per image; ``None``: all of them."""
    token_selection: str | None = None
    """``--token-selection``: how a budget picks its tokens (``None``: ``diverse``)."""
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    """Sampling: ``--max-tokens``, ``--temperature`` and ``--seed`` over the defaults."""
    schema: StructuredOutput | None = None
    """The checked schema every answer follows (``--json-schema``, ``--structured``); ``None``: free text."""
    photo: PhotoOptions | None = None
    """Where else each caption is written (the image, XMP sidecars, dataset files); ``None``: only the outputs."""
