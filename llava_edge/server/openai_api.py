"""OpenAI Chat Completions on the same server: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Requests become one caption call (``chat.py``) through the same queue and model worker as Runware tasks;
answers and errors take OpenAI's shapes, so the official ``openai`` client works by changing ``base_url``.
``response_format`` (``json_object``, ``json_schema``) constrains the answer to JSON (``response_format.py``).
Every field is decided in ``request_fields``: sampler fields are honoured, hints accepted, and only fields whose
neglect would change what the answer means (``n`` > 1, a required tool call, logprobs) are refused. A
conversation without an image is answered as text; ``tools`` are accepted and the answer is text.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from llava_edge.errors import InvalidRequestError, LlavaEdgeError
from llava_edge.events import Progress, TextDelta
from llava_edge.schema import DETAIL_LEVELS
from llava_edge.server.bodies import read_json_object
from llava_edge.server.chat import (
    answer_while_connected,
    authenticate_request,
    check_model,
    first_and_rest,
    requested_work,
    stream_while_connected,
)
from llava_edge.server.conversation import (
    Turn,
    bounded_prompt,
    check_message_count,
    conversation_images,
    quoted,
    role_of,
)
from llava_edge.server.families import openai_type
from llava_edge.server.model_listing import CAPABILITIES, installed_list
from llava_edge.server.public_errors import for_client
from llava_edge.server.request_fields import OPENAI_CHAT, check_fields
from llava_edge.server.request_log import note_refusal
from llava_edge.server.resident_model import ChatCall
from llava_edge.server.response_format import openai_structure
from llava_edge.server.sampling_fields import OPENAI_SAMPLERS, generation_options
from llava_edge.server.statuses import retry_headers, status_for
from llava_edge.server.task_results import Outcome
from llava_edge.server.task_service import TaskService


def add_openai_routes(app: FastAPI, service: TaskService) -> None:
    """Register the OpenAI routes on ``app``."""

    async def chat_completions(request: Request) -> Response:
        try:
            authenticate_request(request, service)
            body = await read_json_object(request, service.settings.max_body_bytes)
            call, model, stream = await asyncio.to_thread(_chat_call, body, service)
        except LlavaEdgeError as err:
            return openai_error(err)
        if stream:
            usage, progress = _stream_flags(body.get("stream_options"))
            first, events = await first_and_rest(stream_while_connected(request, service, call))
            if isinstance(first, Outcome) and first.error is not None:
                return openai_error(first.error)
            return StreamingResponse(_sse(events, model, usage, include_progress=progress),
                                     media_type="text/event-stream")
        outcome = await answer_while_connected(request, service, call)
        if outcome.error is not None:
            return openai_error(outcome.error)
        return JSONResponse(_completion(model, outcome.result))

    async def list_models(request: Request) -> Response:
        try:
            authenticate_request(request, service)
        except LlavaEdgeError as err:
            return openai_error(err)
        return JSONResponse({"object": "list", "data": _model_list(service)})

    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"], include_in_schema=False)
    app.add_api_route("/v1/models", list_models, methods=["GET"], include_in_schema=False)


def _model_list(service: TaskService) -> list[dict[str, Any]]:
    """One entry per installed model, the resident one first (``resident`` says which is loaded); the other
    names that pick it are its ``aliases``."""
    return [{"id": model.id, "object": "model", "created": 0, "owned_by": "llava-edge", "resident": model.resident,
             "aliases": list(model.aliases), "capabilities": list(CAPABILITIES)} for model in installed_list(service)]


def openai_error(error: LlavaEdgeError) -> JSONResponse:
    """An error in OpenAI's shape and status."""
    status = status_for(error, "openai")
    headers = retry_headers(status)
    note_refusal(error.code, error.message)
    return JSONResponse(openai_error_body(error), status_code=status, headers=headers)


def openai_error_body(error: LlavaEdgeError) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}``."""
    kind = openai_type(status_for(error, "openai"))
    return {"error": {"message": for_client(error).message, "type": kind, "param": error.parameter,
                      "code": error.code}}


def _chat_call(body: dict[str, Any], service: TaskService) -> tuple[ChatCall, str, bool]:
    requested = check_model(body.get("model"), service)
    check_fields(body, OPENAI_CHAT, where="/v1/chat/completions")
    turns, detail = _turns(body.get("messages"))
    options = generation_options(body, OPENAI_SAMPLERS, service.captioner.generation)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequestError("stream must be true or false.", code="invalid_type", parameter="stream")
    prompt = bounded_prompt(turns, service.captioner.runtime.options.n_ctx)
    call = ChatCall(conversation_images(turns), prompt, options, detail, model=requested.target,
                    structure=openai_structure(body.get("response_format")), work=requested_work(body, requested))
    return call, requested.name, stream


def _turns(messages: object) -> tuple[list[Turn], str]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty array.", code="invalid_messages",
                                  parameter="messages")
    check_message_count(len(messages))
    turns, details = [], []
    for message in messages:
        if not isinstance(message, dict):
            raise InvalidRequestError("Each message must be an object.", code="invalid_messages",
                                      parameter="messages")
        role = role_of(message.get("role"))
        role = {"developer": "system", "function": "tool"}.get(role, role)
        text, images, detail = _content(message.get("content"))
        turns.append(Turn(role, text, images))
        details += detail
    return turns, details[-1] if details else "auto"


def _content(content: object) -> tuple[str, tuple[str, ...], list[str]]:
    """(text, image URLs, details) of one message's content (a string or a list of parts)."""
    if content is None or isinstance(content, str):
        return content or "", (), []
    if not isinstance(content, list):
        raise InvalidRequestError("content must be a string or a list of parts.", code="invalid_content",
                                  parameter="messages")
    texts, images, details = [], [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal") and isinstance(part.get(kind), str):
            texts.append(part[kind])
        elif kind == "image_url":
            url, detail = _image_url(part.get("image_url"))
            images.append(url)
            details.append(detail)
        else:
            raise InvalidRequestError(f"Unsupported content part {quoted(kind if kind else part)}; send text and "
                                      "image_url parts.", code="invalid_content", parameter="messages")
    return "\n".join(texts), tuple(images), details


def _image_url(value: object) -> tuple[str, str]:
    if isinstance(value, str):  # some clients send the URL itself
        return value, "auto"
    if not isinstance(value, dict) or not isinstance(value.get("url"), str):
        raise InvalidRequestError("image_url must be {\"url\": ...}.", code="invalid_image_url",
                                  parameter="messages")
    detail = value.get("detail", "auto")
    if detail not in DETAIL_LEVELS:
        raise InvalidRequestError("image_url.detail must be low, high or auto.", code="invalid_detail",
                                  parameter="messages")
    return value["url"], detail


def _completion(model: str, result: Any) -> dict[str, Any]:
    timings = result.timings
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": model, "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                     "finish_reason": result.finish_reason, "logprobs": None}],
        "usage": {"prompt_tokens": timings.prompt_tokens, "completion_tokens": timings.generated_tokens,
                  "total_tokens": timings.prompt_tokens + timings.generated_tokens,
                  "prompt_tokens_details": {"cached_tokens": timings.cached_tokens}},
    }


async def _sse(events: AsyncIterator[Any], model: str, include_usage: bool, *,
               include_progress: bool = False) -> AsyncIterator[str]:
    """Text deltas as ``chat.completion.chunk`` server-sent events as they are generated, ending with
    ``data: [DONE]``. A client that disconnects ends the iteration, which cancels the caption.

    With ``include_progress`` (``stream_options.include_progress``, a llava-edge extension the page uses) the
    stream also carries ``event: progress`` events, each ``{"stage", "done", "total", "elapsed_s", "eta_s"}``
    (``stage``: ``load``, ``encode`` or ``prefill``), before the text. Without it the stream is plain OpenAI."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "system_fingerprint": None}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    async for event in events:
        if isinstance(event, TextDelta) and event.text:
            yield chunk({"content": event.text})
        elif isinstance(event, Progress) and include_progress:
            yield progress_event(event)
        elif isinstance(event, Outcome):
            if event.error is not None:
                yield f"data: {json.dumps(openai_error_body(event.error))}\n\n"
            else:
                yield chunk({}, event.result.finish_reason)
                if include_usage:
                    usage = _completion(model, event.result)["usage"]
                    yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
    yield "data: [DONE]\n\n"


def progress_event(progress: Progress) -> str:
    """One ``event: progress`` server-sent event (see ``_sse``)."""
    eta = None if progress.eta_s is None else round(progress.eta_s, 3)
    data = {"stage": progress.stage, "done": progress.done, "total": progress.total,
            "elapsed_s": round(progress.elapsed_s, 3), "eta_s": eta}
    return f"event: progress\ndata: {json.dumps(data)}\n\n"


def _stream_flags(options: object) -> tuple[bool, bool]:
    """(``include_usage``, ``include_progress``) of a request's ``stream_options``."""
    if not isinstance(options, dict):
        return False, False
    return bool(options.get("include_usage")), bool(options.get("include_progress"))
