"""JSON Schemas as real apps send them, taken from their source: shared by the structured-output tests and
the app replays."""

from __future__ import annotations

from typing import Any

PHOTOPRISM_LABELS: dict[str, Any] = {  # internal/ai/vision/schema/labels.go, LabelsJsonSchemaDefault
    "type": "object",
    "properties": {"labels": {"type": "array", "items": {
        "type": "object",
        "properties": {"name": {"type": "string", "minLength": 1},
                       "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                       "topicality": {"type": "number", "minimum": 0, "maximum": 1}},
        "required": ["name", "confidence", "topicality"], "additionalProperties": False}, "default": []}},
    "required": ["labels"], "additionalProperties": False,
}
HOME_ASSISTANT_TASK: dict[str, Any] = {  # ai_task structure -> helpers/llm.py selector_serializer, as ollama sends it
    "type": "object",
    "properties": {
        "brightness": {"type": "number", "minimum": 0, "maximum": 100, "description": "Light level"},
        "temperature": {"type": "number", "minimum": -10.5, "maximum": 35.5},
        "light": {"type": "string", "format": "entity_id", "description": "Which light"},
        "rooms": {"type": "array", "items": {"type": "string", "enum": ["kitchen", "hall", "garden"]},
                  "uniqueItems": True},
        "when": {"type": "string", "format": "time"},
        "colour": {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3, "format": "RGB"},
        "language": {"type": "string", "format": "RFC 5646"},
    },
    "required": ["brightness", "light", "rooms"],
}
