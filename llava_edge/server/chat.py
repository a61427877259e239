"""What the chat APIs (OpenAI, Responses, Ollama) share besides the conversation itself: which model a request
names (the resident one, another installed one to swap in, or an unknown one), the installed models' names,
authentication, and reading a JSON body.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from llava_edge.errors import (
    InvalidRequestError,
    LlavaEdgeError,
    UnknownModelError,
)
from llava_edge.events import Progress, TextDelta
from llava_edge.server.auth import bearer_key
from llava_edge.server.budget_fields import requested_budget
from llava_edge.server.conversation import quoted
from llava_edge.server.keep_alive import requested_keep_alive
from llava_edge.server.model_listing import (
    GENERIC_NAMES,
    installed_list,
    name_table,
    registry_entry,
    registry_path,
    resolve_model,
)
from llava_edge.server.read_policy import client_key
from llava_edge.server.resident_model import ChatCall
from llava_edge.server.task_results import Outcome
from llava_edge.server.work_options import (
    BACKGROUND,
    FLEX_TIER,
    WorkOptions,
    header_priority,
    priority_of,
    split_background,
)

if TYPE_CHECKING:
    from fastapi import Request

    from llava_edge.server.task_service import TaskService

T = TypeVar("T")
DISCONNECT_POLL_S = 0.25
"""How often a non-streamed chat answer checks that its client is still there."""


def resident_names(service: TaskService) -> list[str]:
    """The resident model's id first, then its aliases, and the generic names while it is the start model
    (or while the start model cannot be loaded again by name)."""
    captioner = service.captioner
    aliases, _ = registry_entry(captioner.model_name, registry_path(service))
    start = service.resident.start_model
    generic = GENERIC_NAMES if captioner.model_name == start or start not in name_table(service).values() else ()
    return list(dict.fromkeys([captioner.model_name, *aliases, *generic]))


def installed_model_ids(service: TaskService) -> list[str]:
    """The models on this machine that a request may name, the resident one first."""
    return [model.id for model in installed_list(service)]


def quantization_of(model_name: str, service: TaskService) -> str:
    """A model's quantization level (``Q4_K_M``), or ``unknown``."""
    return registry_entry(model_name, registry_path(service))[1]


@dataclass(frozen=True)
class RequestedModel:
    """A request's ``model``, resolved once."""

    name: str
    """As the request gave it: answers echo it."""
    target: str
    """The id of the installed model that answers it (swapped in first when another one is resident)."""
    background: bool = False
    """The name ended in ``:background``: the request is background work (``work_options``)."""


def requested_work(body: dict[str, Any], requested: RequestedModel) -> WorkOptions:
    """The budget, ``keep_alive`` and priority of an OpenAI Chat Completions or Responses request: background
    with ``service_tier: "flex"`` or a ``:background`` model name (the header is read by ``answered``)."""
    flex = body.get("service_tier") == FLEX_TIER
    return WorkOptions(requested_budget(body), requested_keep_alive(body), priority_of(flex, requested.background))


def check_model(name: object, service: TaskService) -> RequestedModel:
    """The installed model a request's ``model`` names, resolved as every API resolves it (``resolve_model``).

    Raises:
        InvalidRequestError: no model named; UnknownModelError: a model that is not on this machine.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequestError("model is required.", code="missingModel", parameter="model")
    model, background = split_background(name)
    target = resolve_model(model, service)
    if target is not None:
        return RequestedModel(name, target, background)
    installed = installed_model_ids(service)
    raise UnknownModelError(
        f"Model {quoted(name)} is not on this machine. Installed: {', '.join(installed[:8])}; "
        f"{installed[0]} is loaded (also called {', '.join(resident_names(service)[1:4])}). "
        "Name one of these, or download another with `llava-edge pull VARIANT`.",
        code="modelNotFound",
    )


def authenticate_request(request: Request, service: TaskService) -> None:
    """Check the request's ``Authorization: Bearer`` key (the server's key, when it has one)."""
    service.auth.verify(request.client.host if request.client else "",
                        bearer_key(request.headers.get("authorization", "")))


def request_client(request: Request) -> str:
    """The client an HTTP request counts for (``read_policy.client_key``): its API key, else its address."""
    return client_key(api_key=bearer_key(request.headers.get("authorization", "")) or None,
                      address=request.client.host if request.client else "")


async def answer_while_connected(request: Request, service: TaskService, call: ChatCall) -> Outcome:
    """``service.worker.chat(call)`` for a non-streamed answer, watching the client meanwhile: when it disconnects,
    the call is cancelled as a closed stream's is (``ModelWorker.cancel_chat``), so a caption nobody waits for
    stops at its next step, and a queued one never runs."""
    call = prioritised(call, request)
    answer = asyncio.ensure_future(service.worker.chat(call, base_url=str(request.base_url),
                                                       client=request_client(request)))
    while not answer.done():
        await asyncio.wait({answer}, timeout=DISCONNECT_POLL_S)
        if not answer.done() and await request.is_disconnected():
            service.worker.cancel_chat(call)
            break
    return await answer


async def stream_while_connected(request: Request, service: TaskService,
                                 call: ChatCall) -> AsyncIterator[Progress | TextDelta | Outcome]:
    """``service.worker.chat(call)`` for this request's client as it happens: progress events and text deltas (sent
    from the model thread), then the outcome. Leaving the iteration early (the client disconnected) cancels the
    caption at its next step."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[Progress | TextDelta | Outcome] = asyncio.Queue()

    def forward(event: Progress | TextDelta) -> None:  # from the model thread
        loop.call_soon_threadsafe(events.put_nowait, event)

    streamed = replace(prioritised(call, request), on_event=forward)
    answer = asyncio.ensure_future(service.worker.chat(streamed, base_url=str(request.base_url),
                                                client=request_client(request)))
    answer.add_done_callback(lambda done: events.put_nowait(_outcome_of(done)))
    try:
        while not isinstance(item := await events.get(), Outcome):
            yield item
        yield item
    finally:
        service.worker.cancel_chat(streamed)


def _outcome_of(done: asyncio.Future[Outcome]) -> Outcome:
    """A chat call's outcome, whatever became of it (the stream must end either way)."""
    if done.cancelled() or done.exception() is not None:
        return Outcome.failure(LlavaEdgeError("The caption failed unexpectedly; send it again."))
    return done.result()


def prioritised(call: ChatCall, request: Request) -> ChatCall:
    """``call`` as background work when the request's ``X-Llava-Edge-Priority`` header says so."""
    if header_priority(request.headers) != BACKGROUND or call.work.priority == BACKGROUND:
        return call
    return replace(call, work=replace(call.work, priority=BACKGROUND))


async def first_and_rest(events: AsyncIterator[T]) -> tuple[T, AsyncIterator[T]]:
    """The first item of a stream, and the stream again from that item on: an error that comes before
    any output can still be answered with a status code instead of inside a 200 stream."""
    first = await anext(events)

    async def replay() -> AsyncIterator[T]:
        yield first
        async for item in events:
            yield item

    return first, replay()
