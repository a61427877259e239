"""What the chat APIs (OpenAI, Responses, Ollama) share besides the conversation itself: which model a request
names (the resident one, another installed one to swap in, or an unknown one), the installed models' names,
authentication, and reading a JSON body.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from llava_edge.errors import (
    InvalidRequestError,
    LlavaEdgeError,
    UnknownModelError,
)
from llava_edge.models.catalog import load_registry
from llava_edge.server.auth import bearer_key
from llava_edge.server.conversation import quoted
from llava_edge.server.model_listing import GENERIC_NAMES, installed_files, installed_list, name_table

if TYPE_CHECKING:
    from fastapi import Request

    from llava_edge.server.task_service import TaskService

T = TypeVar("T")


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
    generic = GENERIC_NAMES if captioner.model_name == start or start not in name_table(service).values() else ()
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
    target = {known.lower(): model for known, model in name_table(service).items()}.get(key)
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
