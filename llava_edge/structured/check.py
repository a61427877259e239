"""Which JSON Schemas are accepted: bounds on their size and shape, the keywords the grammar enforces, and a
copy of the schema the grammar converter reads.

A schema is a program the client sends, turned into a grammar that constrains every sampled token. So it is
checked before anything is built: its size, nesting, ``$ref`` chains, ``enum`` sizes, the counts that become
repeated grammar rules (``minItems``/``maxItems``/``minLength``/``maxLength``, pattern repetitions) and the
product of alternatives along any path (the ambiguity bound) have limits (``SchemaLimits``). A keyword the
validator checks but the grammar cannot enforce is refused by name; annotations and keywords the validator does
not know (``title``, ``default``, ``examples``, a ``format`` without grammar rules, ...) are ignored. Pure: no
llama.cpp here (``runtime.grammar`` builds the grammar).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from llava_edge.errors import SchemaError
from llava_edge.structured.ambiguity import AmbiguityError, check_ambiguity
from llava_edge.structured.keywords import NUMBER_KEYWORDS, enforced_format, has_number_keywords, number_rule
from llava_edge.structured.numbers import number_gbnf
from llava_edge.structured.pattern import PatternError, parse_pattern
from llava_edge.structured.validation import jsonschema_module, known_keywords, validator_for

SUPPORTED = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
    "minLength", "maxLength", "enum", "const", "anyOf", "oneOf", "$ref", "$defs", "definitions", "format",
    "pattern", "uniqueItems", *NUMBER_KEYWORDS,
})
"""Keywords the grammar enforces (``format`` only for the formats it has rules for; ``uniqueItems`` by removing
later duplicates)."""
_COUNTS = ("minItems", "maxItems", "minLength", "maxLength")
_SCHEMA_MAPS = ("properties", "$defs", "definitions")
"""Keywords whose value maps names to subschemas."""
_SCHEMA_LISTS = ("anyOf", "oneOf", "prefixItems")
_DEFINITIONS = ("$defs", "definitions")


@dataclass(frozen=True)
class SchemaLimits:
    """How big a schema (and the grammar made from it) may be. Each bound keeps the grammar small and the check
    fast: a schema over one is refused before any grammar is built."""

    max_schema_bytes: int = 65_536
    """The schema as compact JSON."""
    max_depth: int = 32
    """Nesting of the schema's JSON (each object property adds two levels: ``properties``, then the name)."""
    max_ref_depth: int = 16
    """``$ref`` hops along one path from the root (a recursive ``$ref`` counts once)."""
    max_enum: int = 256
    """Entries of one ``enum`` (and alternatives of one ``anyOf``/``oneOf``)."""
    max_alternatives: int = 256
    """The product of alternatives along any path (``enum``, ``anyOf``/``oneOf``, ``type`` lists, pattern
    alternations): how many parses the grammar sampler may track at once."""
    max_count: int = 1_000
    """Any one ``minItems``/``maxItems``/``minLength``/``maxLength`` or pattern repetition: each unit is a repeated
    grammar rule."""
    max_total_count: int = 4_000
    """All those counts of the schema added up."""
    max_grammar_bytes: int = 262_144
    """The generated (or given) GBNF grammar."""
    max_answer_depth: int = 32
    """Brackets an answer may have open at once (tokens that would open one more are ruled out), so a recursive
    schema or ``{"type": "object"}`` cannot make an answer too deep to check."""


def check_schema(schema: dict[str, Any], limits: SchemaLimits | None = None, *, parameter: str = "schema"
                 ) -> dict[str, Any]:
    """Check a JSON Schema against ``limits`` and the supported keywords; return a copy with only the keywords
    the grammar enforces, ready for the grammar converter.

    Raises:
        SchemaError: naming the bound or keyword that refused it, and what to do instead.
        MissingExtraError: ``jsonschema`` is not installed.
    """
    limits = limits or SchemaLimits()
    refuse = _Refusal(parameter)
    _check_depth(schema, limits.max_depth, refuse)
    try:
        size = len(json.dumps(schema, separators=(",", ":")))
    except (TypeError, ValueError) as err:
        raise refuse(f"the schema is not JSON ({err})") from err
    if size > limits.max_schema_bytes:
        raise refuse(f"it is {size:,} bytes, over the limit of {limits.max_schema_bytes:,}")
    try:  # before the meta-schema check: it is linear, and refuses the costliest schemas first
        check_ambiguity(schema, limits.max_alternatives, limits.max_count)
    except AmbiguityError as err:
        raise refuse(str(err)) from None
    _check_meta_schema(schema, refuse)
    walker = _Walker(schema, limits, refuse)
    cleaned = walker.clean(schema, "#")
    _check_refs(walker.refs, limits.max_ref_depth, refuse)
    return cleaned


class _Refusal:
    """Builds the ``SchemaError`` for one schema: a reason, then what to do."""

    def __init__(self, parameter: str):
        self.parameter = parameter

    def __call__(self, reason: str) -> SchemaError:
        return SchemaError(f"{self.parameter}: the JSON Schema is refused: {reason}.", parameter=self.parameter)


def _check_depth(schema: object, max_depth: int, refuse: _Refusal) -> None:
    """Without recursion, so a schema nested 100,000 deep (or a dict that contains itself) is refused quickly."""
    stack: list[tuple[object, int]] = [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise refuse(f"it is nested more than {max_depth} levels deep; flatten it or use $defs")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def _check_meta_schema(schema: dict[str, Any], refuse: _Refusal) -> None:
    jsonschema = jsonschema_module()
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as err:
        where = "/".join(str(part) for part in err.absolute_path) or "the root"
        # jsonschema's own message quotes the values as Python reprs ({'a': None}); ours quotes them as JSON
        rule = f"{err.validator} {_json_excerpt(err.validator_value)}"
        raise refuse(f"it is not a valid JSON Schema (at {where}: {_json_excerpt(err.instance)} breaks the "
                     f"meta-schema's rule {rule})") from None


def _json_excerpt(value: object, limit: int = 80) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "..."


class _Walker:
    """One pass over a schema: checks every subschema, collects its ``$ref`` graph, and copies it with only the
    keywords the grammar enforces."""

    def __init__(self, root: dict[str, Any], limits: SchemaLimits, refuse: _Refusal):
        self.root, self.limits, self.refuse = root, limits, refuse
        self.known = known_keywords(root)
        self.total_count = 0
        self.refs: dict[str, set[str]] = {"#": set()}
        """Each subschema that has ``$ref``s below it (the root ``#`` and every ``$defs`` entry) -> their targets."""
        self._owner = "#"
        self._validator: Any = None

    def clean(self, schema: object, path: str) -> dict[str, Any]:
        if not isinstance(schema, dict):
            raise self.refuse(f"{path} is {json.dumps(schema)[:20]}, not a schema object; only additionalProperties "
                              "may be true or false")
        unknown = sorted(set(schema) & self.known - SUPPORTED)
        if unknown:
            raise self.refuse(f"{path} uses {', '.join(unknown)}, which the grammar cannot enforce (supported: "
                              f"{', '.join(sorted(SUPPORTED))})")
        kept = {key: value for key, value in schema.items() if key in SUPPORTED}
        if "format" in kept and not enforced_format(kept):
            del kept["format"]  # an annotation: no grammar rule enforces it
        self._check_keywords(kept, path)
        cleaned: dict[str, Any] = {}
        for key, value in kept.items():
            if key in _SCHEMA_MAPS:
                cleaned[key] = {name: self._sub(key, sub, f"{path}/{key}/{name}") for name, sub in value.items()}
            elif key in _SCHEMA_LISTS:
                cleaned[key] = [self.clean(sub, f"{path}/{key}/{index}") for index, sub in enumerate(value)]
            elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
                cleaned[key] = self.clean(value, f"{path}/{key}")
            else:
                cleaned[key] = copy.deepcopy(value)
        self._check_enum(cleaned, path)
        return cleaned

    def _sub(self, key: str, schema: object, path: str) -> dict[str, Any]:
        if key == "properties":
            return self.clean(schema, path)
        owner, self._owner = self._owner, path
        self.refs.setdefault(path, set())
        try:
            return self.clean(schema, path)
        finally:
            self._owner = owner

    def _check_keywords(self, schema: dict[str, Any], path: str) -> None:
        constraints = set(schema) - set(_DEFINITIONS)
        for keyword in ("$ref", "anyOf", "oneOf"):
            if keyword in schema and constraints - {keyword}:
                others = ", ".join(sorted(constraints - {keyword}))
                raise self.refuse(f"{path} has {others} beside {keyword}, which the grammar would ignore; move them "
                                  f"into the {'referenced schema' if keyword == '$ref' else 'alternatives'}")
        if "$ref" in schema:
            self._check_ref(schema["$ref"], path)
        for keyword in ("anyOf", "oneOf", "enum"):
            if keyword in schema and len(schema[keyword]) > self.limits.max_enum:
                raise self.refuse(f"{path}/{keyword} has {len(schema[keyword]):,} entries, over the limit of "
                                  f"{self.limits.max_enum}")
            if keyword in schema and not schema[keyword]:
                raise self.refuse(f"{path}/{keyword} is empty")
        self._check_type(schema, path, constraints)
        self._check_value_keywords(schema, path, constraints)
        self._check_counts(schema, path)

    def _check_type(self, schema: dict[str, Any], path: str, constraints: set[str]) -> None:
        kind = schema.get("type")
        if isinstance(kind, list) and constraints - {"type"}:
            raise self.refuse(f"{path} gives a list of types with other keywords, which the grammar would ignore; "
                              "use anyOf with one schema per type")
        if {"minItems", "maxItems", "uniqueItems"} & constraints and ("items" not in schema
                                                                      or kind not in (None, "array")):
            raise self.refuse(f"{path}: minItems/maxItems/uniqueItems need \"items\" (one schema for every item)")
        if "items" in schema and not isinstance(schema["items"], dict):
            raise self.refuse(f"{path}/items must be one schema; give a tuple as prefixItems")
        if "items" in schema and "prefixItems" in schema:
            raise self.refuse(f"{path} has both items and prefixItems; give one of them")
        missing = sorted(set(schema.get("required", ())) - set(schema.get("properties", {})))
        if missing:
            raise self.refuse(f"{path} requires {', '.join(missing)[:200]}, not among its properties")

    def _check_value_keywords(self, schema: dict[str, Any], path: str, constraints: set[str]) -> None:
        """Lengths, ``pattern``, ``format`` and number keywords: each on its type, and enforceable together."""
        kind = schema.get("type")
        literal = {"enum", "const"} & constraints
        if {"minLength", "maxLength"} & constraints and not literal and (
                kind != "string" or {"format", "pattern"} & constraints):
            raise self.refuse(f"{path}: minLength/maxLength need \"type\": \"string\" and no format or pattern")
        if "pattern" in schema and not literal:
            if kind not in (None, "string") or "format" in schema:
                raise self.refuse(f"{path}: pattern needs \"type\": \"string\" and no format")
            try:
                self.total_count += parse_pattern(schema["pattern"], self.limits.max_count).repeat_total
            except PatternError as err:
                raise self.refuse(f"{path}: {err}") from None
        if has_number_keywords(schema) and not literal:
            if kind not in ("number", "integer"):
                numbers = ", ".join(sorted(set(NUMBER_KEYWORDS) & constraints))
                raise self.refuse(f"{path}: {numbers} need \"type\": \"number\" or \"integer\"")
            try:
                number_gbnf(number_rule(schema))
            except ValueError as err:
                raise self.refuse(f"{path}: {err}") from None

    def _check_enum(self, schema: dict[str, Any], path: str) -> None:
        """Every ``enum``/``const`` value must satisfy the schema's other keywords: the grammar writes only the
        listed values, so one that breaks them would be an invalid answer."""
        values = schema.get("enum", []) + ([schema["const"]] if "const" in schema else [])
        if not values or len(schema) == 1:
            return
        if self._validator is None:
            self._validator = validator_for(self.root)
        validator = self._validator.evolve(schema={key: value for key, value in schema.items()
                                                   if key not in _DEFINITIONS})
        for value in values:
            if not validator.is_valid(value):
                raise self.refuse(f"{path}: the value {json.dumps(value)[:80]} breaks the schema's other keywords, "
                                  "so the answer could not be valid; remove it")

    def _check_counts(self, schema: dict[str, Any], path: str) -> None:
        for keyword in _COUNTS:
            if keyword in schema:
                count = schema[keyword]
                if count > self.limits.max_count:
                    raise self.refuse(f"{path}/{keyword} is {count:,}, over the limit of {self.limits.max_count:,}")
                self.total_count += count
        for low, high in (("minItems", "maxItems"), ("minLength", "maxLength")):
            if schema.get(low, 0) > schema.get(high, self.limits.max_count):
                raise self.refuse(f"{path}: {low} is more than {high}")
        if self.total_count > self.limits.max_total_count:
            raise self.refuse(f"its minItems/maxItems/minLength/maxLength add up to more than "
                              f"{self.limits.max_total_count:,}")

    def _check_ref(self, ref: object, path: str) -> None:
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise self.refuse(f"{path}/$ref must point inside the schema (\"#/$defs/...\"); remote schemas are not "
                              "fetched")
        target: Any = self.root
        for part in ref[2:].split("/"):
            if not isinstance(target, dict) or part not in target:
                raise self.refuse(f"{path}/$ref {json.dumps(ref[:80])} points at nothing")
            target = target[part]
        self.refs[self._owner].add(ref)


def _check_refs(refs: dict[str, set[str]], max_depth: int, refuse: _Refusal) -> None:
    """The longest chain of ``$ref`` hops from the root, each definition entered once per path; memoised, so a
    definition reached along many paths is measured once."""
    depth: dict[str, int] = {}

    def hops(owner: str, path: tuple[str, ...]) -> int:
        if owner in depth:
            return depth[owner]
        if len(path) > max_depth:
            raise refuse(f"its $ref chains are more than {max_depth} deep")
        targets = [_owner_of(target, refs) for target in refs.get(owner, ())]
        found = max((1 + hops(target, (*path, target)) for target in targets if target not in path), default=0)
        depth[owner] = found
        return found

    hops("#", ("#",))


def _owner_of(target: str, refs: dict[str, set[str]]) -> str:
    """The ``$defs`` entry (a key of ``refs``) that holds a ``$ref`` target such as ``#/$defs/a/properties/b``."""
    while target not in refs and "/" in target:
        target = target.rsplit("/", 1)[0]
    return target if target in refs else "#"
