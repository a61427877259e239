"""The OpenAI Responses API on the same server: ``POST /v1/responses``, ``GET`` and ``DELETE
/v1/responses/{id}``.

``input`` is a string or a list of messages whose content is a string or ``input_text`` / ``input_image``
parts (``image_url`` as a data URI or an http(s) URL under the server's fetch policy, with ``detail``);
``instructions`` opens the conversation; ``text.format`` asks for ``text``, ``json_object`` or
``json_schema``. The request becomes one chat call through the same queue and model worker as every other
route. ``stream: true`` sends the documented event sequence (``response.created`` ... ``response.output_text.delta``
... ``response.completed``, or ``response.incomplete`` when ``max_output_tokens`` cut the answer). With
``store`` (the default) the answer is kept in a bounded, expiring store (``response_store``) that
``previous_response_id`` continues from, reusing the evaluated image prefix like any follow-up.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from llava_edge.errors import InvalidRequestError, LlavaEdgeError, TaskNotFoundError
from llava_edge.events import TextDelta
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
from llava_edge.server.openai_api import openai_error, openai_error_body
from llava_edge.server.request_fields import RESPONSES, check_fields
from llava_edge.server.resident_model import ChatCall
from llava_edge.server.response_format import responses_structure
from llava_edge.server.response_store import ResponseStore, StoredResponse
from llava_edge.server.sampling_fields import RESPONSES_SAMPLERS, generation_options
from llava_edge.server.task_results import Outcome
from llava_edge.server.task_service import TaskService


@dataclass(frozen=True)
class ResponsesCall:
    """A parsed ``POST /v1/responses``: the chat call, the conversation it continues, and what its answer
    object echoes."""

    call: ChatCall
    turns: tuple[Turn, ...]
    echo: dict[str, Any]
    stream: bool
    store: bool


def add_responses_routes(app: FastAPI, service: TaskService) -> None:
    """Register the Responses routes on ``app``."""
    store = ResponseStore()

    async def create(request: Request) -> Response:
        try:
            authenticate_request(request, service)
            body = await read_json_object(request, service.settings.max_body_bytes)
            parsed = await asyncio.to_thread(_parse, body, service, store)
        except LlavaEdgeError as err:
            return openai_error(err)
        if parsed.stream:
            first, events = await first_and_rest(stream_while_connected(request, service, parsed.call))
            if isinstance(first, Outcome) and first.error is not None:
                return openai_error(first.error)
            return StreamingResponse(_events(events, parsed, store), media_type="text/event-stream")
        outcome = await answer_while_connected(request, service, parsed.call)
        if outcome.error is not None:
            return openai_error(outcome.error)
        return JSONResponse(_finish(parsed, outcome, store))

    async def retrieve(request: Request) -> Response:
        try:
            authenticate_request(request, service)
            return JSONResponse(_stored(store, request.path_params["response_id"]).response)
        except LlavaEdgeError as err:
            return openai_error(err)

    async def delete(request: Request) -> Response:
        try:
            authenticate_request(request, service)
            response_id = request.path_params["response_id"]
            if not store.delete(response_id):
                raise _unknown(response_id)
        except LlavaEdgeError as err:
            return openai_error(err)
        return JSONResponse({"id": response_id, "object": "response", "deleted": True})

    app.add_api_route("/v1/responses", create, methods=["POST"], include_in_schema=False)
    app.add_api_route("/v1/responses/{response_id}", retrieve, methods=["GET"], include_in_schema=False)
    app.add_api_route("/v1/responses/{response_id}", delete, methods=["DELETE"], include_in_schema=False)


def _parse(body: dict[str, Any], service: TaskService, store: ResponseStore) -> ResponsesCall:
    """Read a request (off the event loop: the schema's grammar is built here)."""
    requested = check_model(body.get("model"), service)
    check_fields(body, RESPONSES, where="/v1/responses")
    earlier = _previous(body.get("previous_response_id"), store)
    turns, detail = _input_turns(body.get("input"))
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequestError("instructions must be a string.", code="invalid_type", parameter="instructions")
    conversation = (*([Turn("system", instructions)] if instructions else []), *earlier, *turns)
    text: dict[str, Any] = body["text"] if isinstance(body.get("text"), dict) else {}
    prompt = bounded_prompt(list(conversation), service.captioner.runtime.options.n_ctx)
    call = ChatCall(conversation_images(list(conversation)), prompt,
                    generation_options(body, RESPONSES_SAMPLERS, service.captioner.generation), detail,
                    model=requested.target, structure=responses_structure(text.get("format")),
                    work=requested_work(body, requested))
    stream, store_it = body.get("stream", False), body.get("store", True)
    if not isinstance(stream, bool) or not isinstance(store_it, bool):
        raise InvalidRequestError("stream and store must be true or false.", code="invalid_type", parameter="stream")
    _check_metadata(body.get("metadata"))
    echo = {"model": requested.name, "instructions": instructions, "previous_response_id":
            body.get("previous_response_id"), "max_output_tokens": body.get("max_output_tokens"),
            "temperature": call.options.temperature, "top_p": call.options.top_p,
            "text": {"format": text.get("format") or {"type": "text"}}, "metadata": body.get("metadata") or {},
            "tools": body.get("tools") or [], "tool_choice": body.get("tool_choice") or "auto",
            "user": body.get("user")}
    return ResponsesCall(call, (*earlier, *turns), echo, stream, store_it)


def _check_metadata(metadata: object) -> None:
    """OpenAI's bounds on ``metadata`` (it is kept with a stored response): at most 16 pairs, keys of at most 64
    characters, string values of at most 512."""
    if metadata is None:
        return
    if not isinstance(metadata, dict) or len(metadata) > 16 or not all(
            isinstance(key, str) and len(key) <= 64 and isinstance(value, str) and len(value) <= 512
            for key, value in metadata.items()):
        raise InvalidRequestError("metadata must be at most 16 pairs of strings: keys of at most 64 characters, "
                                  "values of at most 512.", code="invalid_value", parameter="metadata")


def _previous(response_id: object, store: ResponseStore) -> tuple[Turn, ...]:
    if response_id is None:
        return ()
    if not isinstance(response_id, str):
        raise InvalidRequestError("previous_response_id must be a string.", code="invalid_type",
                                  parameter="previous_response_id")
    return _stored(store, response_id).turns


def _stored(store: ResponseStore, response_id: str) -> StoredResponse:
    entry = store.get(response_id)
    if entry is None:
        raise _unknown(response_id)
    return entry


def _unknown(response_id: str) -> TaskNotFoundError:
    return TaskNotFoundError(f"No response with id {quoted(response_id)} is kept here (never stored, deleted or "
                             "expired). Send the whole conversation as input instead.", code="not_found",
                             parameter="previous_response_id")


def _input_turns(value: object) -> tuple[list[Turn], str]:
    """The turns of ``input`` and the last image detail asked for."""
    if isinstance(value, str):
        return [Turn("user", value)], "auto"
    if not isinstance(value, list) or not value:
        raise InvalidRequestError("input must be a string or a non-empty list of messages.", code="invalid_input",
                                  parameter="input")
    check_message_count(len(value))
    turns, details = [], []
    for item in value:
        turn, detail = _item_turn(item)
        if turn is not None:
            turns.append(turn)
            details += detail
    return turns, details[-1] if details else "auto"


def _item_turn(item: object) -> tuple[Turn | None, list[str]]:
    if not isinstance(item, dict):
        raise InvalidRequestError("Each input item must be an object.", code="invalid_input", parameter="input")
    kind = item.get("type", "message")
    if kind == "function_call_output":
        return Turn("tool", str(item.get("output", ""))), []
    if kind in ("reasoning", "function_call"):
        return None, []  # this model never produced them; nothing of the answer depends on them
    if kind != "message":
        raise InvalidRequestError(f"Unsupported input item type {quoted(kind)}; send messages.",
                                  code="invalid_input", parameter="input")
    role = role_of(item.get("role"))
    role = {"developer": "system"}.get(role, role)
    text, images, details = _content(item.get("content"))
    return Turn(role, text, images), details


def _content(content: object) -> tuple[str, tuple[str, ...], list[str]]:
    if isinstance(content, str):
        return content, (), []
    if not isinstance(content, list):
        raise InvalidRequestError("content must be a string or a list of parts.", code="invalid_content",
                                  parameter="input")
    texts, images, details = [], [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            detail = part.get("detail") or "auto"
            if detail not in DETAIL_LEVELS:
                raise InvalidRequestError("detail must be low, high or auto.", code="invalid_detail",
                                          parameter="input")
            images.append(part["image_url"])
            details.append(detail)
        else:
            raise InvalidRequestError(f"Unsupported content part {quoted(kind if kind else part)}; send input_text "
                                      "and input_image parts (an input_image with image_url).",
                                      code="invalid_content", parameter="input")
    return "\n".join(texts), tuple(images), details


def _response(parsed: ResponsesCall, response_id: str, status: str, output: list[dict[str, Any]],
              result: Any = None) -> dict[str, Any]:
    """The response object, as ``POST`` answers it and the stream's lifecycle events carry it."""
    timings = result.timings if result is not None else None
    usage = None if timings is None else {
        "input_tokens": timings.prompt_tokens, "input_tokens_details": {"cached_tokens": timings.cached_tokens},
        "output_tokens": timings.generated_tokens, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": timings.prompt_tokens + timings.generated_tokens}
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    return {"id": response_id, "object": "response", "created_at": int(time.time()), "status": status,
            "error": None, "incomplete_details": incomplete, "output": output, "parallel_tool_calls": True,
            "reasoning": {"effort": None, "summary": None}, "store": parsed.store, "truncation": "disabled",
            "usage": usage, **parsed.echo}


def _message(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _finish(parsed: ResponsesCall, outcome: Outcome, store: ResponseStore,
            ids: tuple[str, str] | None = None) -> dict[str, Any]:
    """The finished response object; kept in ``store`` when the request asked for it."""
    response_id, item_id = ids or (f"resp_{uuid.uuid4().hex}", f"msg_{uuid.uuid4().hex}")
    result = outcome.result
    status = "incomplete" if result.finish_reason == "length" else "completed"
    response = _response(parsed, response_id, status, [_message(item_id, result.text, status)], result)
    if parsed.store:
        store.put(response, (*parsed.turns, Turn("assistant", result.text)))
    return response


async def _events(events: AsyncIterator[Any], parsed: ResponsesCall, store: ResponseStore) -> AsyncIterator[str]:
    """The documented event sequence, each ``event: <type>`` with its ``data`` and a ``sequence_number``. A
    client that disconnects ends the iteration, which cancels the caption."""
    ids = (f"resp_{uuid.uuid4().hex}", f"msg_{uuid.uuid4().hex}")
    where = {"item_id": ids[1], "output_index": 0, "content_index": 0}
    sequence = iter(range(1 << 30))

    def event(kind: str, **data: Any) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': next(sequence), **data})}\n\n"

    started = _response(parsed, ids[0], "in_progress", [])
    yield event("response.created", response=started)
    yield event("response.in_progress", response=started)
    yield event("response.output_item.added", output_index=0, item=_message(ids[1], None, "in_progress"))
    yield event("response.content_part.added", **where, part=_message(ids[1], "", "")["content"][0])
    async for item in events:
        if isinstance(item, TextDelta) and item.text:
            yield event("response.output_text.delta", **where, delta=item.text, logprobs=[])
        elif isinstance(item, Outcome):
            if item.error is not None:
                error = openai_error_body(item.error)["error"]
                yield event("error", code=error["code"], message=error["message"], param=error["param"])
                failed = {**started, "status": "failed", "error": {"code": error["code"], "message": error["message"]}}
                yield event("response.failed", response=failed)
                return
            response = _finish(parsed, item, store, ids)
            message = response["output"][0]
            yield event("response.output_text.done", **where, text=item.result.text, logprobs=[])
            yield event("response.content_part.done", **where, part=message["content"][0])
            yield event("response.output_item.done", output_index=0, item=message)
            yield event(f"response.{response['status']}", response=response)
