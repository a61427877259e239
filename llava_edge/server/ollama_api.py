"""Ollama's native API on the same server: ``/api/generate``, ``/api/chat``, ``/api/tags``, ``/api/show``,
``/api/version``, ``/api/ps``, and ``GET /`` answering ``Ollama is running``.

``stream`` defaults to true as in Ollama: newline-delimited JSON, then a final object with ``done: true``,
``done_reason`` and durations in nanoseconds. Errors are ``{"error": "..."}`` with Ollama's statuses (an
unknown model is 404). Ollama's own ``curl -d`` examples send JSON with a form content type, so these
routes read the body as JSON whatever its declared type; the Origin and Host checks keep web pages out.
"""

from __future__ import annotations

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
from llava_edge.events import TextDelta
from llava_edge.generation import GenerationOptions
from llava_edge.schema import MAX_TOKENS_LIMIT
from llava_edge.server.chat import (
    Turn,
    authenticate_request,
    check_model,
    conversation_images,
    conversation_prompt,
    error_status,
    first_and_rest,
    installed_files,
    installed_model_ids,
    parse_json_object,
    parse_number,
    parse_stop,
    quantization_of,
    resident_names,
)
from llava_edge.server.public_errors import for_client
from llava_edge.server.resident_model import ChatCall
from llava_edge.server.response_format import ollama_structure
from llava_edge.server.task_results import Outcome
from llava_edge.server.task_service import TaskService

OLLAMA_COMPATIBLE_VERSION = "0.12.0"
"""Reported by ``/api/version``: the Ollama API level these routes follow (clients gate features on it)."""
_OPTION_FIELDS = {"num_predict": "max_tokens", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
                  "seed": "seed", "stop": "stop", "num_ctx": None}


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
            body = parse_json_object(await request.body())
            requested = check_model(body.get("model", body.get("name")), service)
        except LlavaEdgeError as err:
            return ollama_error(err)
        entry = _model_entry(service, requested.swap or service.captioner.model_name)
        return JSONResponse({"modelfile": "", "parameters": "", "template": service.captioner.files.template,
                             "details": entry["details"], "model_info": {"general.architecture": "llama"},
                             "capabilities": ["completion", "vision"], "modified_at": entry["modified_at"]})

    async def version() -> Response:
        return JSONResponse({"version": OLLAMA_COMPATIBLE_VERSION, "llava_edge": __version__})

    async def running(request: Request) -> Response:
        return _guarded(request, service, lambda: {"models": [
            {**_model_entry(service, service.captioner.model_name), "expires_at": "0001-01-01T00:00:00Z",
             "size_vram": 0}]})

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
    status = error_status(error)
    return JSONResponse({"error": for_client(error).message}, status_code=status,
                        headers={"Retry-After": "2"} if status in (429, 503) else None)


async def _answer(request: Request, service: TaskService, *, chat: bool) -> Response:
    started = time.perf_counter()
    try:
        authenticate_request(request, service)
        body = parse_json_object(await request.body())
        requested = check_model(body.get("model"), service)
        model = requested.name
        _refuse_unsupported(body)
        turns = _chat_turns(body) if chat else _generate_turns(body)
        options = _options(body.get("options"), service)
        stream = body.get("stream", True)
        if not isinstance(stream, bool):
            raise InvalidRequestError("stream must be true or false.", parameter="stream")
        call = ChatCall(conversation_images(turns), conversation_prompt(turns), options,
                        model=requested.swap, structure=ollama_structure(body))
    except LlavaEdgeError as err:
        return ollama_error(err)
    if stream:
        first, events = await first_and_rest(service.chat_stream(call, base_url=str(request.base_url)))
        if isinstance(first, Outcome) and first.error is not None:
            return ollama_error(first.error)
        return StreamingResponse(_ndjson(events, model, chat, started), media_type="application/x-ndjson")
    outcome = await service.chat(call, base_url=str(request.base_url))
    if outcome.error is not None:
        return ollama_error(outcome.error)
    return JSONResponse(_final(model, outcome.result, chat, time.perf_counter() - started))


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for name in ("context", "tools", "suffix"):
        if body.get(name):
            raise InvalidRequestError(f"{name} is not supported by this server.", parameter=name)
    if body.get("raw"):
        raise InvalidRequestError("raw prompts are not supported: the model's template is always applied.",
                                  parameter="raw")


def _generate_turns(body: dict[str, Any]) -> list[Turn]:
    prompt, system, images = body.get("prompt", ""), body.get("system"), body.get("images") or []
    if not isinstance(prompt, str) or (system is not None and not isinstance(system, str)):
        raise InvalidRequestError("prompt and system must be strings.", parameter="prompt")
    turns = [Turn("system", system)] if system else []
    return [*turns, Turn("user", prompt, _images(images))]


def _chat_turns(body: dict[str, Any]) -> list[Turn]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty array.", parameter="messages")
    turns = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("content", ""), str):
            raise InvalidRequestError("Each message must be {\"role\", \"content\", \"images\"}.",
                                      parameter="messages")
        turns.append(Turn(str(message.get("role")), message.get("content", ""),
                          _images(message.get("images") or [])))
    return turns


def _images(images: object) -> tuple[str, ...]:
    if not isinstance(images, list) or not all(isinstance(image, str) and image for image in images):
        raise InvalidRequestError("images must be a list of base64-encoded images.", parameter="images")
    return tuple(image.strip() for image in images)


def _options(options: object, service: TaskService) -> GenerationOptions:
    options = options or {}
    if not isinstance(options, dict):
        raise InvalidRequestError("options must be an object.", parameter="options")
    changes: dict[str, Any] = {}
    for name, value in options.items():
        if name not in _OPTION_FIELDS:
            raise InvalidRequestError(f"Option {name[:40]!r} is not supported; use "
                                      f"{', '.join(_OPTION_FIELDS)}.", parameter=name)
        if value is None:
            continue
        if name == "num_ctx":
            _check_num_ctx(value, service)
        elif name == "stop":
            changes["stop"] = parse_stop(value, limit=16)
        else:
            changes[_OPTION_FIELDS[name] or name] = _option_number(name, value)
    return replace(service.captioner.generation, **changes)


def _option_number(name: str, value: object) -> Any:
    ranges = {"num_predict": (1, MAX_TOKENS_LIMIT), "temperature": (0, 2), "top_p": (0, 1), "top_k": (1, 1000),
              "seed": (0, 2**32 - 1)}
    low, high = ranges[name]
    integer = name in ("num_predict", "top_k", "seed")
    return parse_number(value, name, low, high, integer=integer, label=f"options.{name}")


def _check_num_ctx(value: object, service: TaskService) -> None:
    loaded = service.captioner.runtime.n_ctx
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError("options.num_ctx must be a positive integer.", parameter="num_ctx")
    if value > loaded:
        raise InvalidRequestError(f"options.num_ctx {value} is more than the loaded context of {loaded} tokens; "
                                  "restart the server with a larger --n-ctx, or ask for less.",
                                  parameter="num_ctx")


def _final(model: str, result: Any, chat: bool, elapsed_s: float) -> dict[str, Any]:
    timings = result.timings
    prefill_s = timings.image_encode_s + timings.image_prefill_s + timings.text_prefill_s
    answer: dict[str, Any] = {"model": model, "created_at": _now()}
    if chat:
        answer["message"] = {"role": "assistant", "content": result.text}
    else:
        answer["response"] = result.text
    return {**answer, "done": True, "done_reason": result.finish_reason,
            "total_duration": _ns(elapsed_s), "load_duration": 0,
            "prompt_eval_count": timings.prompt_tokens, "prompt_eval_duration": _ns(prefill_s),
            "eval_count": timings.generated_tokens, "eval_duration": _ns(timings.decode_s)}


async def _ndjson(events: AsyncIterator[Any], model: str, chat: bool, started: float) -> AsyncIterator[str]:
    """Text deltas as Ollama streams them, one JSON object a line, then the final object (``done: true``,
    durations). A client that disconnects ends the iteration, which cancels the caption."""
    async for event in events:
        if isinstance(event, TextDelta) and event.text:
            piece: dict[str, Any] = {"model": model, "created_at": _now(), "done": False}
            content = {"message": {"role": "assistant", "content": event.text}} if chat else {"response": event.text}
            yield json.dumps({**piece, **content}) + "\n"
        elif isinstance(event, Outcome):
            if event.error is not None:
                yield json.dumps({"error": event.error.message}) + "\n"
                continue
            final = _final(model, event.result, chat, time.perf_counter() - started)
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
    """The installed models (the resident one first), then the resident one under its Ollama-style names
    (``llava:7b``): clients that look for the name they were configured with find it."""
    installed = installed_model_ids(service)
    tagged = [name for name in resident_names(service) if ":" in name and name not in installed]
    resident = _model_entry(service, installed[0])
    return [_model_entry(service, name) for name in installed] + [{**resident, "name": name, "model": name}
                                                                   for name in tagged]


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
