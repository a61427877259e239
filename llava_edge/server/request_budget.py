"""A request's images refused from their headers, before any pixel is decoded: the decoded pixels of one request
are bounded (``ServerSettings.max_request_pixels``), and images that cannot fit the context together with the
prompt and the answer's tokens are refused at once, instead of after decoding them all in the model thread.

The token figure is a lower bound, so the check never refuses what the model would accept: the images count
exactly (``image_token_count``, the same answer the runtime gets), the text at most ``CHARS_PER_TOKEN_AT_MOST``
characters a token, and the answer its ``max_tokens``. The runtime's own check, on the tokenized prompt, still
decides what passes.
"""

from __future__ import annotations

from collections.abc import Sequence

from llava_edge.errors import ContextOverflowError, InvalidImageError
from llava_edge.generation import UNTIL_CONTEXT_FULL
from llava_edge.token_budget import image_token_count

CHARS_PER_TOKEN_AT_MOST = 16
"""No token of the supported vocabularies spells more characters: the prompt's length over this is a lower
bound on its tokens."""


def check_before_decoding(sizes: Sequence[tuple[int, int]], *, detail: str, image_tokens: int | None,
                          prompt_chars: int, max_tokens: int, n_ctx: int, max_pixels: int) -> None:
    """Refuse a request whose images, by their headers' sizes, break the per-request pixel bound or cannot fit
    ``n_ctx`` with the prompt and ``max_tokens``.

    Raises:
        InvalidImageError: more than ``max_pixels`` pixels in all.
        ContextOverflowError: at least more tokens than ``n_ctx``, with the numbers.
    """
    pixels = sum(width * height for width, height in sizes)
    if pixels > max_pixels:
        raise InvalidImageError(
            f"The request's {len(sizes)} images hold {pixels} pixels together; the server decodes at most "
            f"{max_pixels} pixels per request. Send fewer or smaller images (downscale them first).",
            parameter="messages",
        )
    images = sum(image_token_count(width, height, detail, image_tokens) for width, height in sizes)
    text = prompt_chars // CHARS_PER_TOKEN_AT_MOST
    answer = 1 if max_tokens == UNTIL_CONTEXT_FULL else max_tokens
    if images + text + answer <= n_ctx:
        return
    what = "The image" if len(sizes) == 1 else f"The {len(sizes)} images"
    raise ContextOverflowError(
        f"{what} ({images} tokens) plus prompt (at least {text} tokens) plus max_tokens ({answer}) is at least "
        f"{images + text + answer} tokens, more than n_ctx {n_ctx}. "
        f"{'Send fewer images, use' if len(sizes) > 1 else 'Use'} detail=\"low\", lower "
        "max_tokens, or load the model with a larger n_ctx.",
        parameter="maxTokens" if images + text < n_ctx else "messages",
    )
