"""Ollama's native API on the same server: ``/api/generate``, ``/api/chat``, ``/api/tags``, ``/api/show``,
``/api/version``, ``/api/ps``, and ``GET /`` answering ``Ollama is running``.

``stream`` defaults to true as in Ollama: newline-delimited JSON, then a final object with ``done: true``,
``done_reason`` and durations in nanoseconds. Errors are ``{"error": "..."}`` with Ollama's statuses (an
unknown model is 404). Ollama's own ``curl -d`` examples send JSON with a form content type, so these
routes read the body as JSON whatever its declared type; the Origin and Host checks keep web pages out.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from llava_edge._version import __version__
from llava_edge.errors import InvalidRequestError, LlavaEdgeError
from llava_edge.events import LOAD, Progress, TextDelta
from llava_edge.generation import GenerationOptions
from llava_edge.server.bodies import read_json_object
from llava_edge.server.budget_fields import requested_budget
from llava_edge.server.chat import (
    answer_while_connected,
    authenticate_request,
    check_model,
    first_and_rest,
    quantization_of,
    stream_while_connected,
)
from llava_edge.server.conversation import (
    Turn,
    bounded_prompt,
    check_message_count,
    conversation_images,
    role_of,
)
from llava_edge.server.keep_alive import requested_keep_alive
from llava_edge.server.model_listing import CAPABILITIES, InstalledModel, installed_files, installed_list
from llava_edge.server.public_errors import for_client
from llava_edge.server.request_fields import OLLAMA, OLLAMA_OPTIONS, check_fields
from llava_edge.server.request_log import note_refusal
from llava_edge.server.resident_model import ChatCall
from llava_edge.server.response_format import ollama_structure
from llava_edge.server.sampling_fields import OLLAMA_SAMPLERS, generation_options
from llava_edge.server.statuses import retry_headers, status_for
from llava_edge.server.task_results import Outcome
from llava_edge.server.task_service import TaskService
from llava_edge.server.work_options import WorkOptions, priority_of
from llava_edge.token_budget import TokenBudget

OLLAMA_COMPATIBLE_VERSION = "0.12.0"
"""Reported by ``/api/version``: the Ollama API level these routes follow (clients gate features on it)."""


def add_ollama_routes(app: FastAPI, service: TaskService) -> None:
    """Register the Ollama routes on ``app``."""

    async def generate(request: Request) -> Response:
        return await _answer(request, service, chat=False)

    async def chat(request: Request) -> Response:
        return await _answer(request, service, chat=True)

    async def tags(request: Request) -> Response:
        return _guarded(request, service, lambda: {"models": _tags(service)})

    async def show(request: Request) -> Response:
        try:
            authenticate_request(request, service)
            body = await read_json_object(request, service.settings.max_body_bytes)
            requested = check_model(body.get("model", body.get("name")), service)
        except LlavaEdgeError as err:
            return ollama_error(err)
        entry = _model_entry(service, requested.target)
        return JSONResponse({"modelfile": "", "parameters": "", "template": service.captioner.files.template,
                             "details": entry["details"], "model_info": {"general.architecture": "llama"},
                             "capabilities": list(CAPABILITIES), "modified_at": entry["modified_at"]})

    async def version() -> Response:
        return JSONResponse({"version": OLLAMA_COMPATIBLE_VERSION, "llava_edge": __version__})

    async def running(request: Request) -> Response:
        return _guarded(request, service, lambda: {"models": [
            {**_tag(service, installed_list(service)[0]), "expires_at": service.resident.idle.expires_at(),
             "size_vram": 0}] if service.resident.loaded else []})

    async def root() -> Response:
        return PlainTextResponse("Ollama is running")

    app.add_api_route("/api/generate", generate, methods=["POST"], include_in_schema=False)
    app.add_api_route("/api/chat", chat, methods=["POST"], include_in_schema=False)
    app.add_api_route("/api/tags", tags, methods=["GET"], include_in_schema=False)
    app.add_api_route("/api/show", show, methods=["POST"], include_in_schema=False)
    app.add_api_route("/api/version", version, methods=["GET"], include_in_schema=False)
    app.add_api_route("/api/ps", running, methods=["GET"], include_in_schema=False)
    app.add_api_route("/", root, methods=["GET", "HEAD"], include_in_schema=False)


def ollama_error(error: LlavaEdgeError) -> JSONResponse:
    """An error as Ollama answers it: ``{"error": "..."}`` with the status."""
    status = status_for(error, "ollama")
    note_refusal(error.code, error.message)
    return JSONResponse({"error": for_client(error).message}, status_code=status, headers=retry_headers(status))


async def _answer(request: Request, service: TaskService, *, chat: bool) -> Response:
    started = time.perf_counter()
    try:
        authenticate_request(request, service)
        body = await read_json_object(request, service.settings.max_body_bytes)
        model, call, stream = await asyncio.to_thread(_ollama_call, body, service, chat, request.url.path)
        if call.load_only:
            return await _load_only(request, service, call, model, chat, stream)
    except LlavaEdgeError as err:
        return ollama_error(err)
    if stream:
        first, events = await first_and_rest(stream_while_connected(request, service, call))
        if isinstance(first, Outcome) and first.error is not None:
            return ollama_error(first.error)
        return StreamingResponse(_ndjson(events, model, chat, started), media_type="application/x-ndjson")
    call, loads = _timing_loads(call)
    outcome = await answer_while_connected(request, service, call)
    if outcome.error is not None:
        return ollama_error(outcome.error)
    return JSONResponse(_final(model, outcome.result, chat, time.perf_counter() - started, sum(loads)))


def _ollama_call(body: dict[str, Any], service: TaskService, chat: bool,
                 where: str) -> tuple[str, ChatCall, bool]:
    """(model name to echo, the call (``load_only`` without a prompt), stream) of a generate or chat request;
    read off the event loop (a ``format`` schema's grammar is built here)."""
    requested = check_model(body.get("model"), service)
    check_fields(body, OLLAMA, where=where)
    turns = _chat_turns(body) if chat else _generate_turns(body)
    options, budget = _options(body.get("options"), service, where=where)
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise InvalidRequestError("stream must be true or false.", parameter="stream")
    work = WorkOptions(budget, requested_keep_alive(body), priority_of(requested.background))
    if not turns:
        return requested.name, ChatCall((), (), options, model=requested.target, work=work, load_only=True), stream
    prompt = bounded_prompt(turns, service.captioner.runtime.options.n_ctx)
    call = ChatCall(conversation_images(turns), prompt, options, model=requested.target,
                    structure=ollama_structure(body), work=work)
    return requested.name, call, stream


async def _load_only(request: Request, service: TaskService, call: ChatCall, model: str, chat: bool,
                     stream: bool) -> Response:
    """The answer to a request with no prompt and no messages: as Ollama, it loads the model (``done_reason``
    ``load``), or with ``keep_alive`` 0 unloads it once no other request wants it (``unload``)."""
    outcome = await answer_while_connected(request, service, call)
    if outcome.error is not None:
        return ollama_error(outcome.error)
    reason = "unload" if call.work.keep_alive == 0 else "load"
    answer: dict[str, Any] = {"model": model, "created_at": _now(), "done": True, "done_reason": reason}
    answer.update({"message": {"role": "assistant", "content": ""}} if chat else {"response": ""})
    if stream:
        return Response(json.dumps(answer) + "\n", media_type="application/x-ndjson")
    return JSONResponse(answer)


def _generate_turns(body: dict[str, Any]) -> list[Turn]:
    """The turns of an ``/api/generate`` request: none when it has no prompt and no image (load only)."""
    prompt, system, images = body.get("prompt") or "", body.get("system"), body.get("images") or []
    if not isinstance(prompt, str) or (system is not None and not isinstance(system, str)):
        raise InvalidRequestError("prompt and system must be strings.", parameter="prompt")
    if not prompt and not images:
        return []
    turns = [Turn("system", system)] if system else []
    return [*turns, Turn("user", prompt, _images(images))]


def _chat_turns(body: dict[str, Any]) -> list[Turn]:
    """The turns of an ``/api/chat`` request: none when ``messages`` is absent or empty (load only)."""
    messages = body.get("messages") or []
    if not isinstance(messages, list):
        raise InvalidRequestError("messages must be an array.", parameter="messages")
    check_message_count(len(messages))
    turns = []
    for message in messages:
        content = message.get("content") or "" if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise InvalidRequestError("Each message must be {\"role\", \"content\", \"images\"}.",
                                      parameter="messages")
        turns.append(Turn(role_of(message.get("role")), content, _images(message.get("images") or [])))
    return turns


def _images(images: object) -> tuple[str, ...]:
    if not isinstance(images, list) or not all(isinstance(image, str) and image for image in images):
        raise InvalidRequestError("images must be a list of base64-encoded images.", parameter="images")
    return tuple(image.strip() for image in images)


def _options(options: object, service: TaskService, *, where: str) -> tuple[GenerationOptions, TokenBudget | None]:
    """The generation options and the image token budget (``image_tokens``, ``token_selection``) of a
    request's ``options`` (every documented key is decided; hints such as ``num_ctx`` are accepted: the loaded
    context serves, and a request that does not fit it is refused with the numbers)."""
    options = options or {}
    if not isinstance(options, dict):
        raise InvalidRequestError("options must be an object.", parameter="options")
    check_fields(options, OLLAMA_OPTIONS, where=f"{where} options", prefix="options.")
    generation = generation_options(options, OLLAMA_SAMPLERS, service.captioner.generation, prefix="options.",
                                    stop_limit=16)
    return generation, requested_budget(options, prefix="options.")


def _timing_loads(call: ChatCall) -> tuple[ChatCall, list[float]]:
    """``call`` noting the seconds of a model load it waits for (Ollama's ``load_duration``)."""
    loads: list[float] = []

    def seen(event: Progress | TextDelta) -> None:  # from the model thread
        if seconds := _load_seconds(event):
            loads.append(seconds)

    return replace(call, on_event=seen), loads


def _load_seconds(event: object) -> float:
    """The seconds of a model load ``event`` reports as finished; 0.0 for any other event."""
    if isinstance(event, Progress) and event.stage == LOAD and event.done == event.total:
        return event.elapsed_s
    return 0.0


def _final(model: str, result: Any, chat: bool, elapsed_s: float, load_s: float = 0.0) -> dict[str, Any]:
    timings = result.timings
    prefill_s = timings.image_encode_s + timings.image_prefill_s + timings.text_prefill_s
    answer: dict[str, Any] = {"model": model, "created_at": _now()}
    if chat:
        answer["message"] = {"role": "assistant", "content": result.text}
    else:
        answer["response"] = result.text
    return {**answer, "done": True, "done_reason": result.finish_reason,
            "total_duration": _ns(elapsed_s), "load_duration": _ns(load_s),
            "prompt_eval_count": timings.prompt_tokens, "prompt_eval_duration": _ns(prefill_s),
            "eval_count": timings.generated_tokens, "eval_duration": _ns(timings.decode_s)}


async def _ndjson(events: AsyncIterator[Any], model: str, chat: bool, started: float) -> AsyncIterator[str]:
    """Text deltas as Ollama streams them, one JSON object a line, then the final object (``done: true``,
    durations). A client that disconnects ends the iteration, which cancels the caption."""
    load_s = 0.0
    async for event in events:
        load_s += _load_seconds(event)
        if isinstance(event, TextDelta) and event.text:
            piece: dict[str, Any] = {"model": model, "created_at": _now(), "done": False}
            content = {"message": {"role": "assistant", "content": event.text}} if chat else {"response": event.text}
            yield json.dumps({**piece, **content}) + "\n"
        elif isinstance(event, Outcome):
            if event.error is not None:
                yield json.dumps({"error": for_client(event.error).message}) + "\n"
                continue
            final = _final(model, event.result, chat, time.perf_counter() - started, load_s)
            empty = {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
            yield json.dumps({**final, **empty}) + "\n"


def _model_entry(service: TaskService, name: str) -> dict[str, Any]:
    """Ollama's description of an installed model (``name`` is its id)."""
    files = installed_files(name, service)
    size = sum(path.stat().st_size for path in (files.model_path, files.mmproj_path))
    modified = datetime.fromtimestamp(files.model_path.stat().st_mtime, UTC).isoformat()
    details = {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama", "clip"],
               "parameter_size": "7B", "quantization_level": quantization_of(name, service)}
    return {"name": name, "model": name, "modified_at": modified, "size": size,
            "digest": hashlib.sha256(f"{files.model_path}:{size}".encode()).hexdigest(), "details": details}


def _tags(service: TaskService) -> list[dict[str, Any]]:
    """One entry per installed model under its Ollama name, the resident one first; the other names that pick
    it are its ``aliases``."""
    return [_tag(service, model) for model in installed_list(service)]


def _tag(service: TaskService, model: InstalledModel) -> dict[str, Any]:
    entry = _model_entry(service, model.id)
    return {**entry, "name": model.tag, "model": model.tag, "aliases": list(model.aliases),
            "capabilities": list(CAPABILITIES)}


def _guarded(request: Request, service: TaskService, answer: Any) -> Response:
    try:
        authenticate_request(request, service)
    except LlavaEdgeError as err:
        return ollama_error(err)
    return JSONResponse(answer())


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)
