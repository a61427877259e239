"""What a request asks of the model worker besides its prompt, in one typed object on every API: its image token
budget, how long the model stays loaded after it, and its priority class.

Priority classes: ``interactive`` (a person waits: the default) and ``background``. Background work is
- a Runware caption task delivered ``async`` or to a ``webhookURL`` / ``uploadEndpoint``;
- a request whose model name ends in ``:background`` (``llava:background`` is ``llava``, run in the background;
  an app's model setting can carry it);
- an OpenAI Chat Completions or Responses request with ``service_tier: "flex"``;
- any request (a WebSocket's upgrade request included) with the header ``X-Llava-Edge-Priority: background``.
Any other value of the header, and any other ``service_tier``, leaves a request interactive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llava_edge.schema import CaptionRequest
from llava_edge.server.keep_alive import requested_keep_alive
from llava_edge.token_budget import TokenBudget, token_budget

INTERACTIVE = "interactive"
BACKGROUND = "background"
PRIORITIES = (INTERACTIVE, BACKGROUND)
"""The classes, most urgent first (the ``priority`` label of ``/metrics`` and ``/health``'s ``queueDepths``)."""
PRIORITY_HEADER = "X-Llava-Edge-Priority"
BACKGROUND_SUFFIX = ":background"
FLEX_TIER = "flex"


@dataclass(frozen=True)
class WorkOptions:
    """A request's budget, keep-alive and priority, as the model worker reads them."""

    budget: TokenBudget | None = None
    """``image_tokens`` / ``token_selection``: at most that many image tokens fed per image; ``None``: all."""
    keep_alive: float | None = None
    """Seconds the model stays loaded after this answer; None: the server's ``--keep-alive``."""
    priority: str = INTERACTIVE
    """``interactive`` or ``background`` (see the module docstring)."""


def split_background(name: str) -> tuple[str, bool]:
    """A model name without its ``:background`` suffix, and whether it had one."""
    stripped = name.strip()
    if stripped.lower().endswith(BACKGROUND_SUFFIX) and len(stripped) > len(BACKGROUND_SUFFIX):
        return stripped[: -len(BACKGROUND_SUFFIX)], True
    return name, False


def header_priority(headers: Mapping[str, str]) -> str:
    """The class the ``X-Llava-Edge-Priority`` header asks for: background only when it says so."""
    value = headers.get(PRIORITY_HEADER.lower(), headers.get(PRIORITY_HEADER, ""))
    return BACKGROUND if value.strip().lower() == BACKGROUND else INTERACTIVE


def priority_of(*background: bool) -> str:
    """``background`` when any of the request's signs says so, else ``interactive``."""
    return BACKGROUND if any(background) else INTERACTIVE


def runware_work(request: CaptionRequest, raw: Mapping[str, Any], *, background: bool) -> tuple[str, WorkOptions]:
    """A Runware caption task's model name (without a ``:background`` suffix) and its work options (its
    ``imageTokens`` budget, ``keepAlive``, and its priority class): background
    when delivered ``async`` or to a webhook or upload endpoint, for a suffixed model, or when ``background``
    (the request's header) says so."""
    model, suffixed = split_background(request.model)
    delivered = request.delivery_method == "async" or bool(request.webhook_url or request.upload_endpoint)
    return model, WorkOptions(budget=token_budget(request.image_tokens, request.token_selection),
                              keep_alive=requested_keep_alive(raw, "keepAlive"),
                              priority=priority_of(delivered, suffixed, background))
