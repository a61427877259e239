"""``uniqueItems``: a grammar cannot forbid repeating an earlier item, so later duplicates are removed from the
answer. An array left with fewer than its ``minItems`` makes the answer incomplete (like a length cut)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from llava_edge.structured.validation import validator_for


def has_unique_items(schema: object) -> bool:
    """Whether any subschema of ``schema`` (definitions included) asks for ``uniqueItems``."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("uniqueItems") is True:
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


@dataclass(frozen=True)
class Deduplicated:
    """An answer's value with later duplicates removed from its ``uniqueItems`` arrays."""

    value: Any
    changed: bool
    too_short: bool
    """An array has fewer items than its ``minItems`` once its duplicates are gone."""


def deduplicate(value: Any, schema: dict[str, Any]) -> Deduplicated:
    """Remove later duplicates (JSON equality: ``1`` equals ``1.0``, not ``true``) from every array whose schema
    has ``uniqueItems``, innermost arrays first; ``anyOf``/``oneOf`` follow the first alternative the value
    matches once deduplicated. ``value`` is not modified."""
    walk = _Walk(schema)
    result = walk.visit(value, schema)
    return Deduplicated(result, walk.changed, walk.too_short)


class _Walk:
    def __init__(self, root: dict[str, Any]):
        self.root = root
        self.validator = validator_for(root)
        self.changed = self.too_short = False

    def visit(self, value: Any, schema: Any) -> Any:
        schema = self._resolved(schema)
        if not isinstance(schema, dict):
            return value
        branches = schema.get("anyOf") or schema.get("oneOf")
        if branches:
            return self._branch(value, branches)
        if isinstance(value, dict):
            return {key: self.visit(item, self._property(schema, key)) for key, item in value.items()}
        if isinstance(value, list):
            return self._array(value, schema)
        return value

    def _branch(self, value: Any, branches: list[Any]) -> Any:
        state = (self.changed, self.too_short)
        for branch in branches:
            self.changed, self.too_short = state
            candidate = self.visit(value, branch)
            if self.validator.evolve(schema=branch).is_valid(candidate):
                return candidate
        self.changed, self.too_short = state
        return value

    def _array(self, value: list[Any], schema: dict[str, Any]) -> list[Any]:
        prefix = schema.get("prefixItems", [])
        items = [self.visit(item, prefix[index] if index < len(prefix) else schema.get("items", {}))
                 for index, item in enumerate(value)]
        if schema.get("uniqueItems") is not True:
            return items
        seen: set[Hashable] = set()
        kept = []
        for item in items:
            key = _json_key(item)
            if key not in seen:
                seen.add(key)
                kept.append(item)
        if len(kept) < len(items):
            self.changed = True
            self.too_short = self.too_short or len(kept) < schema.get("minItems", 0)
        return kept

    def _property(self, schema: dict[str, Any], key: str) -> Any:
        properties = schema.get("properties", {})
        if key in properties:
            return properties[key]
        extra = schema.get("additionalProperties")
        return extra if isinstance(extra, dict) else {}

    def _resolved(self, schema: Any) -> Any:
        seen = 0
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and seen < 64:
            target: Any = self.root
            for part in schema["$ref"].removeprefix("#").strip("/").split("/"):
                if part:
                    target = target.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(target, dict) \
                        else {}
            schema, seen = target, seen + 1
        return schema


def _json_key(value: Any) -> Hashable:
    """A key equal for equal JSON values: numbers by value, ``true`` apart from ``1``, objects unordered."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("array", tuple(_json_key(item) for item in value))
    return ("object", frozenset((key, _json_key(item)) for key, item in value.items()))
