"""The ambiguity bound: how many parses of one answer llama.cpp's grammar sampler may have to track at once.

Each alternative the grammar cannot tell apart yet is a parse stack the sampler checks every vocabulary token
against; nested alternatives multiply (four levels of 256 identical ``anyOf`` entries are 256^4 stacks, minutes
per token). So the product of the alternatives along any path from the root is bounded: ``enum`` entries,
``anyOf``/``oneOf`` alternatives, ``type`` lists and a ``pattern``'s alternations count; properties and items
follow one another, so siblings take the largest, not the product. A ``$ref`` is measured once (memoised), and a
recursive one counts once along a path. Robust to malformed schemas (they are refused later, by name), and fast:
linear in the schema's size.
"""

from __future__ import annotations

from typing import Any

from llava_edge.structured.pattern import PatternError, parse_pattern

_CHILD_MAPS = ("properties",)
_CHILD_SCHEMAS = ("items", "additionalProperties")
_CHILD_LISTS = ("prefixItems",)


class AmbiguityError(ValueError):
    """The product of alternatives along a path is over the limit; the message names where."""


def check_ambiguity(schema: dict[str, Any], limit: int, max_count: int) -> int:
    """The largest product of alternatives along a path of ``schema``.

    Raises:
        AmbiguityError: over ``limit`` (found as soon as it is passed).
    """
    return _Measure(schema, limit, max_count).weight(schema, "#")


class _Measure:
    def __init__(self, root: dict[str, Any], limit: int, max_count: int):
        self.root, self.limit, self.max_count = root, limit, max_count
        self.refs: dict[str, int] = {}
        self.open: set[str] = set()

    def weight(self, node: Any, path: str) -> int:
        if not isinstance(node, dict):
            return 1
        ref = node.get("$ref")
        if isinstance(ref, str):
            return self._ref(ref, path)
        own, alternatives = self._own(node)
        below = max((self.weight(sub, f"{path}/{key}") for key, sub in alternatives), default=1)
        below = max(below, self._children(node, path))
        total = own * below
        if total > self.limit:
            nested = f" times {below:,} nested below it" if below > 1 else ""
            raise AmbiguityError(f"{path} has {own:,} alternatives{nested}, {total:,} along one path, over the limit "
                                 f"of {self.limit} alternatives (enum entries, anyOf/oneOf alternatives, type lists "
                                 "and pattern alternations; nested ones multiply): shorten or flatten them")
        return total

    def _own(self, node: dict[str, Any]) -> tuple[int, list[tuple[str, Any]]]:
        """Alternatives at this node, and the subschemas that are alternatives."""
        own = 1
        alternatives: list[tuple[str, Any]] = []
        for keyword in ("anyOf", "oneOf"):
            if isinstance(node.get(keyword), list):
                own *= max(len(node[keyword]), 1)
                alternatives += [(f"{keyword}/{index}", sub) for index, sub in enumerate(node[keyword])]
        if isinstance(node.get("enum"), list):
            own *= max(len(node["enum"]), 1)
        if isinstance(node.get("type"), list):
            own *= max(len(node["type"]), 1)
        if isinstance(node.get("pattern"), str):
            try:
                own *= parse_pattern(node["pattern"], self.max_count).alternatives
            except PatternError:
                pass  # refused by name later
        return own, alternatives

    def _children(self, node: dict[str, Any], path: str) -> int:
        largest = 1
        for key in _CHILD_MAPS:
            if isinstance(node.get(key), dict):
                for name, sub in node[key].items():
                    largest = max(largest, self.weight(sub, f"{path}/{key}/{name}"))
        for key in _CHILD_SCHEMAS:
            largest = max(largest, self.weight(node.get(key), f"{path}/{key}"))
        for key in _CHILD_LISTS:
            if isinstance(node.get(key), list):
                for index, sub in enumerate(node[key]):
                    largest = max(largest, self.weight(sub, f"{path}/{key}/{index}"))
        return largest

    def _ref(self, ref: str, path: str) -> int:
        if ref in self.refs:
            return self.refs[ref]
        if ref in self.open or not ref.startswith("#"):
            return 1
        target: Any = self.root
        for part in ref[1:].strip("/").split("/"):
            if part:
                target = target.get(part) if isinstance(target, dict) else None
        self.open.add(ref)
        try:
            found = self.weight(target, ref)
        finally:
            self.open.discard(ref)
        self.refs[ref] = found
        return found
