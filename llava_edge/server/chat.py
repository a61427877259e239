"""Conversations as the OpenAI and Ollama APIs send them, turned into one caption call: the image, the
prompt text after it in the model's template, and the generation options.

Chat clients resend the whole history each turn, images included. The image always opens the prompt
(``[INST] <image>\\n...``), so every turn about the same image shares the evaluated image prefix, which the
runtime keeps: a follow-up question does not encode the image again. Earlier turns follow as text in
Mistral's instruction format; a system message opens the first user turn (Mistral has no system role).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from llava_edge.errors import (
    AuthenticationError,
    InvalidRequestError,
    LlavaEdgeError,
    ServerBusyError,
    TooManyAttemptsError,
    UnknownModelError,
)
from llava_edge.models.catalog import load_registry
from llava_edge.server.auth import bearer_key
from llava_edge.server.families import quoted
from llava_edge.server.model_listing import GENERIC_NAMES, installed_files, installed_list, name_table

if TYPE_CHECKING:
    from fastapi import Request

    from llava_edge.server.task_service import TaskService

T = TypeVar("T")
OLLAMA_STYLE_NAMES = GENERIC_NAMES
"""Names Ollama users type for this model; all mean the start model (``model_listing``)."""
MAX_CONVERSATION_IMAGES = 8
"""Different images one conversation may show: each takes 576 to 2,880 tokens of the context, so more
cannot fit the default n_ctx anyway; the bound stops a request naming hundreds of URLs before any is read."""


@dataclass(frozen=True)
class Turn:
    """One message: ``role`` is "system", "user" or "assistant"; ``images`` are data URIs or URLs."""

    role: str
    text: str
    images: tuple[str, ...] = ()


def conversation_images(turns: list[Turn]) -> tuple[str, ...]:
    """The different images of a conversation, in the order they first appear (chat clients resend each
    image with the history: a resent image counts once).

    Raises:
        InvalidRequestError: no image, or more than ``MAX_CONVERSATION_IMAGES``.
    """
    images = tuple(dict.fromkeys(image for turn in turns for image in turn.images))
    if not images:
        raise InvalidRequestError(
            "This model captions images: attach one (an image_url part, or images in an Ollama message).",
            code="missingImage", parameter="messages",
        )
    if len(images) > MAX_CONVERSATION_IMAGES:
        raise InvalidRequestError(
            f"The conversation holds {len(images)} different images; at most {MAX_CONVERSATION_IMAGES} fit one "
            "context. Start a new conversation for the next images.",
            code="tooManyImages", parameter="messages",
        )
    return images


def conversation_prompt(turns: list[Turn]) -> tuple[str, ...]:
    """The text after each image of ``conversation_images``: earlier turns in Mistral's format, ending with
    the last user message (the template closes it with ``[/INST]``). The first image opens the prompt (the
    template puts it there); a later image goes at the start of the user turn that first shows it, so text
    ``i`` is everything between image ``i`` and the next one.

    Raises:
        InvalidRequestError: no user message last, or an unknown role.
    """
    system = "\n".join(turn.text for turn in turns if turn.role == "system" and turn.text)
    dialogue = [turn for turn in turns if turn.role != "system"]
    for turn in dialogue:
        if turn.role not in ("user", "assistant"):
            raise InvalidRequestError(f"Unknown message role {turn.role[:40]!r}; use system, user or assistant.",
                                      code="invalidRole", parameter="messages")
    if not dialogue or dialogue[-1].role != "user":
        raise InvalidRequestError("The last message must be the user's question.", code="invalidMessages",
                                  parameter="messages")
    texts, seen = [f"{system}\n\n" if system else ""], set(conversation_images(turns)[:1])
    for index, turn in enumerate(dialogue):
        if turn.role == "assistant":
            texts[-1] += f" [/INST] {turn.text.strip()}</s>"
            continue
        texts[-1] += "[INST] " if index else ""
        for image in turn.images:
            if image not in seen:
                seen.add(image)
                texts.append("\n")
        texts[-1] += turn.text.strip()
    return tuple(texts)


def error_status(error: LlavaEdgeError) -> int:
    """The HTTP status both chat APIs give an error."""
    for cls, status in ((TooManyAttemptsError, 429), (AuthenticationError, 401), (UnknownModelError, 404),
                        (ServerBusyError, 503), (InvalidRequestError, 400)):
        if isinstance(error, cls):
            return status
    return 500


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object (an empty body is ``{}``).

    Raises:
        InvalidRequestError: not JSON, nested too deep, or not an object.
    """
    try:
        value = json.loads(body or b"{}")
    except (ValueError, RecursionError) as err:
        raise InvalidRequestError("The body is not valid JSON.", code="invalidJson", parameter="body") from err
    if not isinstance(value, dict):
        raise InvalidRequestError("The body must be a JSON object.", code="invalidJson", parameter="body")
    return value


def parse_stop(value: object, *, limit: int) -> tuple[str, ...]:
    """Stop strings given as one string or a list of at most ``limit`` non-empty strings."""
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or len(stops) > limit or not all(isinstance(s, str) and s for s in stops):
        raise InvalidRequestError(f"stop must be a string or up to {limit} strings.", code="invalidStop",
                                  parameter="stop")
    return tuple(stops)


@functools.lru_cache(maxsize=8)
def _registered(model_name: str, registry: str | None) -> tuple[tuple[str, ...], str]:
    """(aliases, quantization) of a variant, read from its registry once; ``((), "unknown")`` for local or
    synthetic files that no registry lists."""
    try:
        spec = load_registry(registry).resolve(model_name)
    except LlavaEdgeError:
        return (), "unknown"
    return tuple(spec.aliases), spec.quant


def resident_names(service: TaskService) -> list[str]:
    """The resident model's id first, then its aliases, and the generic names while it is the start model
    (or while the start model cannot be loaded again by name)."""
    captioner = service.captioner
    aliases, _ = _registered(captioner.model_name, _registry_path(service))
    start = service.resident.start_model
    generic = OLLAMA_STYLE_NAMES if captioner.model_name == start or start not in _installed(service).values() else ()
    return list(dict.fromkeys([captioner.model_name, *aliases, *generic]))


def installed_model_ids(service: TaskService) -> list[str]:
    """The models on this machine that a request may name, the resident one first."""
    return [model.id for model in installed_list(service)]


def model_names(service: TaskService) -> list[str]:
    """Every name a request may give: the installed models' ids (resident first), then the resident's
    aliases and Ollama-style names."""
    return list(dict.fromkeys([*installed_model_ids(service), *resident_names(service)]))


def quantization_of(model_name: str, service: TaskService) -> str:
    """A model's quantization level (``Q4_K_M``), or ``unknown``."""
    return _registered(model_name, _registry_path(service))[1]


def _registry_path(service: TaskService) -> str | None:
    registry = service.captioner.registry
    return None if registry is None else os.fspath(registry)


def _installed(service: TaskService) -> dict[str, str]:
    return name_table(service)


@dataclass(frozen=True)
class RequestedModel:
    """A chat request's ``model``, resolved once."""

    name: str
    """As the request gave it: answers echo it."""
    swap: str | None
    """The installed model to swap in before answering; None when the name is the resident model's."""


def check_model(name: object, service: TaskService) -> RequestedModel:
    """The requested model when it names the resident model or another installed one.

    Raises:
        UnknownModelError: a model that is not on this machine.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequestError("model is required.", code="missingModel", parameter="model")
    swap = _swap_target(name, service)
    if swap is not None or name.strip().lower() in _lowered(resident_names(service)):
        return RequestedModel(name, swap)
    installed = installed_model_ids(service)
    raise UnknownModelError(
        f"Model {quoted(name)} is not on this machine. Installed: {', '.join(installed[:8])}; "
        f"{installed[0]} is loaded (also called {', '.join(resident_names(service)[1:4])}). "
        "Name one of these, or download another with `llava-edge pull VARIANT`.",
        code="modelNotFound",
    )


def _swap_target(name: str, service: TaskService) -> str | None:
    """The installed model to swap in for a request naming ``name``; None when it names the resident one
    (or nothing installed)."""
    key = name.strip().lower()
    if key in _lowered(resident_names(service)):
        return None
    target = {known.lower(): model for known, model in _installed(service).items()}.get(key)
    if target is None or target == service.captioner.model_name:
        return None
    return None if installed_files(target, service).model_path == service.captioner.files.model_path else target


def _lowered(names: list[str]) -> set[str]:
    return {name.lower() for name in names}


def authenticate_request(request: Request, service: TaskService) -> None:
    """Check the request's ``Authorization: Bearer`` key (the server's key, when it has one)."""
    service.auth.verify(request.client.host if request.client else "",
                        bearer_key(request.headers.get("authorization", "")))


async def first_and_rest(events: AsyncIterator[T]) -> tuple[T, AsyncIterator[T]]:
    """The first item of a stream, and the stream again from that item on: an error that comes before
    any output can still be answered with a status code instead of inside a 200 stream."""
    first = await anext(events)

    async def replay() -> AsyncIterator[T]:
        yield first
        async for item in events:
            yield item

    return first, replay()


def parse_number(value: object, name: str, low: float, high: float, *, integer: bool,
                 label: str | None = None) -> Any:
    """A number (an integer when ``integer``) from ``low`` to ``high``; ``label`` names it in the message.

    Raises:
        InvalidRequestError: of another type or out of range (``parameter`` is ``name``).
    """
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise InvalidRequestError(f"{label or name} must be {kind} from {low} to {high}.", code="invalid_value",
                                  parameter=name)
    return value
