"""Structured captions: which JSON Schemas are accepted, the built-in ``photo`` schema, and the check of an answer.

``check`` bounds a schema and keeps the keywords the grammar enforces; ``numbers`` and ``pattern`` write the GBNF
of bounded numbers and patterns; ``ambiguity`` bounds the alternatives along a path; ``unique`` removes duplicate
items; ``output`` turns a finished answer into its checked value and ``answers`` does so for a stream. Pure: no
llama.cpp here (``runtime.grammar`` builds the grammar); ``jsonschema`` (the ``structured`` extra) validates the
answers.
"""

from llava_edge.structured.check import SUPPORTED, SchemaLimits, check_schema
from llava_edge.structured.keywords import ENFORCED_FORMATS
from llava_edge.structured.output import (
    BUILT_IN,
    JSON_OBJECT_SCHEMA,
    PHOTO_PROMPT,
    PHOTO_SCHEMA,
    StructuredAnswer,
    StructuredOutput,
    schema_named,
)
from llava_edge.structured.validation import INSTALL_HINT, validation_error

__all__ = [
    "BUILT_IN",
    "ENFORCED_FORMATS",
    "INSTALL_HINT",
    "JSON_OBJECT_SCHEMA",
    "PHOTO_PROMPT",
    "PHOTO_SCHEMA",
    "SUPPORTED",
    "SchemaLimits",
    "StructuredAnswer",
    "StructuredOutput",
    "check_schema",
    "schema_named",
    "validation_error",
]
