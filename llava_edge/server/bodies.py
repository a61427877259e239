"""Request bodies, read as a stream under one size cap on every POST route.

The declared ``Content-Length`` is checked before any byte is read, and the bytes are counted as they
arrive, so a chunked body (no length) or a lying one stops at the cap too: no request holds more than
``max_body_bytes`` of the server's memory. The Runware routes read the first ``preauth_body_bytes`` only,
until the key is checked (``app.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from llava_edge.errors import InvalidRequestError, PayloadTooLargeError

if TYPE_CHECKING:
    from fastapi import Request

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""A JSON escape of a UTF-16 surrogate (half of a pair, or alone)."""


async def read_body(request: Request, cap: int) -> bytes:
    """The whole body, at most ``cap`` bytes.

    Raises:
        PayloadTooLargeError: declared or found larger than ``cap``.
    """
    check_declared_size(request, cap)
    return await read_up_to(request.stream().__aiter__(), b"", cap, limit_is_error=True)


async def read_json_object(request: Request, cap: int) -> dict[str, Any]:
    """The body as one JSON object (an empty body is ``{}``), at most ``cap`` bytes.

    Raises:
        PayloadTooLargeError: larger than ``cap``. InvalidRequestError: not one JSON object.
    """
    return parse_json_object(await read_body(request, cap))


def check_declared_size(request: Request, cap: int) -> None:
    """Refuse a body whose ``Content-Length`` is over ``cap`` before reading it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit():
        check_size(int(declared), cap)


async def read_up_to(chunks: AsyncIterator[bytes], start: bytes, cap: int, *, limit_is_error: bool) -> bytes:
    """Read on from ``start`` until the body ends or ``cap`` bytes are in hand (an error if ``limit_is_error``)."""
    body = bytearray(start)
    while len(body) < cap or limit_is_error:
        try:
            body += await chunks.__anext__()
        except StopAsyncIteration:
            break
        if limit_is_error:
            check_size(len(body), cap)
    return bytes(body)


def check_size(size: int, cap: int) -> None:
    """Refuse ``size`` bytes when over ``cap``."""
    if size > cap:
        raise too_large(size, cap)


def too_large(size: int, cap: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The request is at least {size} bytes; the limit is {cap}. Send smaller images (or one task per request).",
        parameter="body",
    )


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
    _check_text(body, value)
    return value


def _check_text(body: bytes, value: dict[str, Any]) -> None:
    """Refuse a lone surrogate escape (``"\\ud800"``): valid JSON, but no UTF-8 text can hold it, so a prompt, a
    stop string or a schema holding one would fail deep in the tokenizer. Only a body with such an escape is
    walked.

    Raises:
        InvalidRequestError: a string of the body holds a lone surrogate.
    """
    if _SURROGATE_ESCAPE.search(body) is None:
        return
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidRequestError("The body holds a lone UTF-16 surrogate escape (such as \\ud800), which is not "
                                  "Unicode text; send the characters themselves or complete surrogate pairs.",
                                  code="invalidJson", parameter="body") from err
