"""What constrains a structured caption (``StructuredOutput``), the built-in schemas, and how a finished answer
becomes its checked value."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llava_edge.errors import SchemaError, StructuredOutputError
from llava_edge.structured.unique import deduplicate
from llava_edge.structured.validation import validation_error

_SHORT = {"type": "string", "minLength": 1}


def _text(max_length: int, description: str) -> dict[str, Any]:
    return {**_SHORT, "maxLength": max_length, "description": description}


PHOTO_SCHEMA: dict[str, Any] = {
    "title": "photo",
    "type": "object",
    "properties": {
        "caption": _text(400, "One or two sentences describing the image."),
        "alt_text": _text(250, "A short description for people who cannot see the image."),
        "keywords": {"type": "array", "items": _text(40, "One keyword."), "minItems": 1, "maxItems": 12},
        "main_subjects": {"type": "array", "items": _text(60, "A main subject."), "minItems": 1, "maxItems": 5},
    },
    "required": ["caption", "alt_text", "keywords", "main_subjects"],
    "additionalProperties": False,
}
"""The built-in ``photo`` schema: caption, alt text, keywords and main subjects, every length bounded."""
PHOTO_PROMPT = ("Describe this image as JSON: a caption of one or two sentences, alt text for people who cannot "
                "see it, up to 12 keywords, and the main subjects.")
"""The prompt used with the ``photo`` schema when none is given."""
JSON_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}
"""Any JSON object: OpenAI's ``{"type": "json_object"}`` and Ollama's ``format: "json"``."""
BUILT_IN = {"photo": PHOTO_SCHEMA, "json": JSON_OBJECT_SCHEMA}


@dataclass(frozen=True)
class StructuredAnswer:
    """A finished answer under a ``StructuredOutput``: its text, value and why it ended."""

    text: str
    data: Any
    """The JSON value, checked against the schema; ``None`` when the answer is incomplete."""
    finish_reason: str


@dataclass(frozen=True)
class StructuredOutput:
    """What constrains an answer: the GBNF grammar, and the JSON Schema it was made from (``None`` for a grammar
    given as it is). Made by ``llava_edge.api.structured_output``; immutable, so one can serve many captions."""

    grammar: str
    schema: dict[str, Any] | None
    name: str
    """``photo``, ``json``, ``schema`` (a schema of the caller's) or ``grammar``."""
    prompt: str | None = None
    """The prompt to use when the caller gives none (the ``photo`` schema asks for its fields)."""
    deduplicates: bool = False
    """The schema has ``uniqueItems``: later duplicates are removed from the answer, so its text is only known
    once it is complete (a stream holds it back until then)."""
    max_depth: int | None = None
    """The most ``[``/``{`` an answer may have open at once (set for schemas, so every answer can be checked)."""

    def finish(self, text: str, finish_reason: str) -> StructuredAnswer:
        """The answer's text and value. The value is ``None`` when the answer is incomplete: cut by ``max_tokens``
        (``finish_reason`` ``"length"``) or a stop string, made from a raw grammar, or left with fewer items
        than ``minItems`` once duplicates are removed (then ``finish_reason`` becomes ``"length"``).

        Raises:
            StructuredOutputError: a complete JSON document that does not validate.
            MissingExtraError: ``jsonschema`` is not installed.
        """
        if self.schema is None or finish_reason != "stop":
            return StructuredAnswer(text, None, finish_reason)
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return StructuredAnswer(text, None, finish_reason)  # a stop string cut the document
        if self.max_depth is not None and _depth(value) > self.max_depth:  # the sampler keeps answers shallower
            return StructuredAnswer(text, None, "length")
        if self.deduplicates:
            result = deduplicate(value, self.schema)
            if result.changed:
                value, text = result.value, json.dumps(result.value, ensure_ascii=False)
            if result.too_short:
                return StructuredAnswer(text, None, "length")
        problem = validation_error(value, self.schema)
        if problem is not None:
            raise StructuredOutputError(f"The answer does not follow the {self.name} schema: {problem}. "
                                        "Report this with the schema; the grammar should have prevented it.")
        return StructuredAnswer(text, value, finish_reason)

    def parse(self, text: str, finish_reason: str) -> Any:
        """The answer's value alone (``finish(text, finish_reason).data``)."""
        return self.finish(text, finish_reason).data


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value`` (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def schema_named(value: object, *, parameter: str = "schema") -> tuple[str, dict[str, Any]]:
    """(name, schema) for a schema given as a dict or as the name of a built-in one (``photo``, ``json``).

    Raises:
        SchemaError: an unknown name, or neither a name nor an object.
    """
    if isinstance(value, str):
        if value not in BUILT_IN:
            raise SchemaError(f"Unknown built-in schema {json.dumps(value[:40])}; use one of {', '.join(BUILT_IN)}, "
                              "or give a JSON Schema object.", parameter=parameter)
        return value, BUILT_IN[value]
    if not isinstance(value, dict):
        raise SchemaError("A schema must be a JSON Schema object or a built-in name (photo, json).",
                          parameter=parameter)
    return "schema", value
