"""Structured output on the chat APIs: OpenAI's ``response_format`` and Ollama's ``format``, read into a
``StructuredOutput`` while the request is parsed, so a refused schema is answered at once (400) and never
reaches the model worker."""

from __future__ import annotations

from typing import Any

from llava_edge.api import structured_output
from llava_edge.errors import SchemaError
from llava_edge.server.conversation import quoted
from llava_edge.structured import StructuredOutput

_OPENAI_SHAPES = ('{"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "json_schema": {"name", '
                  '"schema", "strict"}}')


def openai_structure(response_format: object) -> StructuredOutput | None:
    """The structure an OpenAI ``response_format`` asks for: ``None`` for text, any JSON object for
    ``json_object``, the schema for ``json_schema`` (``strict`` or not, the grammar enforces it).

    Raises:
        SchemaError: another shape, or a schema that is refused (parameter ``response_format``).
    """
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise SchemaError(f"response_format must be an object: {_OPENAI_SHAPES}.", code="invalid_response_format",
                          parameter="response_format")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return structured_output("json", parameter="response_format")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise SchemaError('response_format.json_schema must be {"name", "schema": {...}, "strict"}.',
                              code="invalid_response_format", parameter="response_format")
        return structured_output(spec["schema"], parameter="response_format")
    raise SchemaError(f"response_format {quoted(response_format)} is not supported; send "
                      f"{_OPENAI_SHAPES}.", code="invalid_response_format", parameter="response_format")


def responses_structure(text_format: object) -> StructuredOutput | None:
    """The structure a Responses API ``text.format`` asks for: ``{"type": "text"}``, ``{"type": "json_object"}``
    or ``{"type": "json_schema", "name", "schema", "strict"}`` (the schema sits beside the type, not inside a
    ``json_schema`` object as in Chat Completions).

    Raises:
        SchemaError: another shape, or a schema that is refused (parameter ``text.format``).
    """
    if isinstance(text_format, dict) and text_format.get("type") == "json_schema":
        if not isinstance(text_format.get("schema"), dict):
            raise SchemaError('text.format must be {"type": "json_schema", "name", "schema": {...}, "strict"}.',
                              code="invalid_response_format", parameter="text.format")
        return structured_output(text_format["schema"], parameter="text.format")
    if text_format is None or (isinstance(text_format, dict) and text_format.get("type") in ("text", "json_object")):
        return openai_structure(text_format)
    raise SchemaError(f"text.format {quoted(text_format)} is not supported; send {{\"type\": \"text\"}}, "
                      '{"type": "json_object"} or {"type": "json_schema", "name", "schema", "strict"}.',
                      code="invalid_response_format", parameter="text.format")


def ollama_structure(body: dict[str, Any]) -> StructuredOutput | None:
    """The structure an Ollama ``format`` asks for: ``"json"`` (any JSON object) or a JSON Schema object.

    Raises:
        SchemaError: another value, or a schema that is refused (parameter ``format``).
    """
    value = body.get("format")
    if value in (None, ""):
        return None
    if value == "json":
        return structured_output("json", parameter="format")
    if isinstance(value, dict):
        return structured_output(value, parameter="format")
    raise SchemaError(f"format {quoted(value)} is not supported; send \"json\" or a JSON Schema object.",
                      parameter="format")
