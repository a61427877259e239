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

if TYPE_CHECKING:
    from fastapi import Request

    from llava_edge.server.task_service import TaskService

T = TypeVar("T")
OLLAMA_STYLE_NAMES = ("llava", "llava:latest", "llava:7b", "llava-1.6-mistral", "llava-1.6-mistral:7b",
                      "llava:7b-v1.6-mistral")
"""Names Ollama users type for this model; all mean the loaded variant."""


@dataclass(frozen=True)
class Turn:
    """One message: ``role`` is "system", "user" or "assistant"; ``images`` are data URIs or URLs."""

    role: str
    text: str
    images: tuple[str, ...] = ()


def conversation_image(turns: list[Turn]) -> str:
    """The one image of a conversation (it may be resent in several turns).

    Raises:
        InvalidRequestError: no image, or more than one different image.
    """
    images = list(dict.fromkeys(image for turn in turns for image in turn.images))
    if not images:
        raise InvalidRequestError(
            "This model captions images: attach one (an image_url part, or images in an Ollama message).",
            code="missingImage", parameter="messages",
        )
    if len(images) > 1:
        raise InvalidRequestError(
            f"The conversation holds {len(images)} different images; this server answers about one image per "
            "conversation. Start a new conversation for the next image.",
            code="tooManyImages", parameter="messages",
        )
    return images[0]


def conversation_prompt(turns: list[Turn]) -> str:
    """The text after the image: earlier turns in Mistral's format, ending with the last user message
    (the template closes it with ``[/INST]``).

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
    parts: list[str] = []
    for turn in dialogue:
        if turn.role == "user":
            parts.append(f"{turn.text.strip()}" if not parts else f"[INST] {turn.text.strip()}")
        else:
            parts.append(f" [/INST] {turn.text.strip()}</s>")
    prompt = "".join(parts)
    return f"{system}\n\n{prompt}" if system else prompt


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
    """(aliases, quantization) of a loaded variant, read from its registry once; ``((), "unknown")`` for
    local or synthetic files that no registry lists."""
    try:
        spec = load_registry(registry).resolve(model_name)
    except LlavaEdgeError:
        return (), "unknown"
    return tuple(spec.aliases), spec.quant


def model_names(service: TaskService) -> list[str]:
    """The loaded variant's id first, then its aliases and the Ollama-style names."""
    captioner = service.captioner
    aliases, _ = _registered(captioner.model_name, _registry_path(service))
    return list(dict.fromkeys([captioner.model_name, *aliases, *OLLAMA_STYLE_NAMES]))


def loaded_quantization(service: TaskService) -> str:
    """The loaded variant's quantization level (``Q4_K_M``), or ``unknown``."""
    return _registered(service.captioner.model_name, _registry_path(service))[1]


def _registry_path(service: TaskService) -> str | None:
    registry = service.captioner.registry
    return None if registry is None else os.fspath(registry)


def check_model(name: object, service: TaskService) -> str:
    """The requested model name when it names the loaded model.

    Raises:
        UnknownModelError: another or an unknown model.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequestError("model is required.", code="missingModel", parameter="model")
    known = model_names(service)
    if name.strip().lower() in {known_name.lower() for known_name in known}:
        return name
    raise UnknownModelError(
        f"Model {name[:80]!r} is not loaded here; this server serves {service.captioner.model_name} "
        f"(also called {', '.join(known[1:4])}). Restart it with --model to serve another.",
        code="modelNotFound",
    )


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
