"""The check that what one call puts in the context fits, before any compute."""

from __future__ import annotations

from llava_edge.errors import ContextOverflowError
from llava_edge.generation import PromptChunk, image_tokens, prompt_tokens


def check_context(layout: list[PromptChunk], n_ctx: int, max_tokens: int, n_images: int,
                  reserved_for: str = "max_tokens") -> None:
    """Refuse a prompt whose tokens plus ``max_tokens`` (``reserved_for`` names them) exceed ``n_ctx``.

    Raises:
        ContextOverflowError: with the numbers and what to change.
    """
    image, prompt = image_tokens(layout), prompt_tokens(layout)
    if prompt + max_tokens <= n_ctx:
        return
    if n_images == 0:
        raise ContextOverflowError(
            f"The conversation ({prompt} tokens) plus {reserved_for} ({max_tokens}) is {prompt + max_tokens} "
            f"tokens, more than n_ctx {n_ctx}. Shorten the conversation, lower {reserved_for}, or load "
            "the model with a larger n_ctx.",
            parameter="messages" if prompt >= n_ctx else "maxTokens",
        )
    images = "image" if n_images == 1 else f"{n_images} images"
    raise ContextOverflowError(
        f"The {images} ({image} tokens) plus prompt ({prompt - image} tokens) plus "
        f"{reserved_for} ({max_tokens}) is {prompt + max_tokens} tokens, more than n_ctx {n_ctx}. "
        f"{'Send fewer images, use' if n_images > 1 else 'Lower max_tokens, use'} detail=\"low\", "
        "or load the model with a larger n_ctx.",
        parameter="maxTokens" if prompt < n_ctx else "prompt",
    )
