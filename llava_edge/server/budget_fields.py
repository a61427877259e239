"""The image token budget as the chat APIs send it: the body fields ``image_tokens`` and ``token_selection``
(OpenAI Chat Completions and Responses, llava-edge extensions) and the same keys in Ollama's ``options``.

``image_tokens`` caps the image tokens each image of the call feeds (``null`` or absent: all of them), and
``token_selection`` says how they are chosen (``diverse``, the default; ``pooled``; ``uniform``); see
``Captioner.stream``. A value of the wrong type is a 400 that names the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llava_edge.errors import InvalidRequestError
from llava_edge.server.conversation import quoted
from llava_edge.token_budget import SELECTIONS, TokenBudget, token_budget


def requested_budget(fields: Mapping[str, Any], *, prefix: str = "") -> TokenBudget | None:
    """The budget of a request's ``image_tokens`` and ``token_selection`` (``None``: every token is fed);
    ``prefix`` is where the fields sit in the request (``options.``), for messages and ``parameter``.

    Raises:
        InvalidRequestError: ``image_tokens`` not an integer of at least 1, or an unknown ``token_selection``.
    """
    tokens, selection = fields.get("image_tokens"), fields.get("token_selection")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
        raise InvalidRequestError(
            f"{prefix}image_tokens must be an integer of at least 1 (the most image tokens fed per image), or left "
            f"out for all of them; got {quoted(tokens, 40)}.", code="invalid_value", parameter=f"{prefix}image_tokens")
    if selection is not None and selection not in SELECTIONS:
        raise InvalidRequestError(
            f"{prefix}token_selection must be one of {', '.join(SELECTIONS)}; got {quoted(selection, 40)}.",
            code="invalid_value", parameter=f"{prefix}token_selection")
    return token_budget(tokens, selection)
