"""Structured captions: which JSON Schemas are accepted, the built-in ``photo`` schema, and the check of an answer.

A schema is a program the client sends, turned into a grammar that constrains every sampled token. So it is
checked before anything is built: its size, nesting, ``$ref`` chains, ``enum`` sizes and the counts that become
repeated grammar rules (``minItems``/``maxItems``/``minLength``/``maxLength``) have limits (``SchemaLimits``),
and only keywords the grammar enforces are accepted; any other is named in the ``SchemaError``. Annotations
(``title``, ``description``, ``default``, ...) are dropped before conversion. Pure: no llama.cpp here
(``runtime.grammar`` builds the grammar); ``jsonschema`` (the ``structured`` extra) validates the answers.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from llava_edge.errors import MissingExtraError, SchemaError, StructuredOutputError

INSTALL_HINT = 'Install it with: pip install "llava-edge[structured]"'
ANNOTATIONS = frozenset({
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly",
    "writeOnly", "discriminator",
})
"""Keywords that do not constrain a value: accepted and left out of the grammar."""
SUPPORTED = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
    "minLength", "maxLength", "enum", "const", "anyOf", "oneOf", "$ref", "$defs", "definitions", "format",
})
"""Keywords the grammar enforces."""
TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"})
"""String formats the grammar enforces."""
_COUNTS = ("minItems", "maxItems", "minLength", "maxLength")
_SCHEMA_MAPS = ("properties", "$defs", "definitions")
"""Keywords whose value maps names to subschemas."""
_SCHEMA_LISTS = ("anyOf", "oneOf", "prefixItems")

_KEYWORDS_TEXT = ", ".join(sorted(SUPPORTED))
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
    max_count: int = 1_000
    """Any one ``minItems``/``maxItems``/``minLength``/``maxLength``: each unit is a repeated grammar rule."""
    max_total_count: int = 4_000
    """All those counts of the schema added up."""
    max_grammar_bytes: int = 262_144
    """The generated (or given) GBNF grammar."""


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

    def parse(self, text: str, finish_reason: str) -> Any:
        """The answer's JSON value, checked against the schema; ``None`` when the answer is incomplete: cut by
        ``max_tokens`` (``finish_reason`` ``"length"``) or by a stop string, or made from a raw grammar.

        Raises:
            StructuredOutputError: a complete JSON document that does not validate.
            MissingExtraError: ``jsonschema`` is not installed.
        """
        if self.schema is None or finish_reason != "stop":
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None  # a stop string cut the document
        problem = validation_error(value, self.schema)
        if problem is not None:
            raise StructuredOutputError(f"The answer does not follow the {self.name} schema: {problem}. "
                                        "Report this with the schema; the grammar should have prevented it.")
        return value


def schema_named(value: object, *, parameter: str = "schema") -> tuple[str, dict[str, Any]]:
    """(name, schema) for a schema given as a dict or as the name of a built-in one (``photo``, ``json``).

    Raises:
        SchemaError: an unknown name, or neither a name nor an object.
    """
    if isinstance(value, str):
        if value not in BUILT_IN:
            raise SchemaError(f"Unknown built-in schema {value[:40]!r}; use one of {', '.join(BUILT_IN)}, or give "
                              "a JSON Schema object.", parameter=parameter)
        return value, BUILT_IN[value]
    if not isinstance(value, dict):
        raise SchemaError("A schema must be a JSON Schema object or a built-in name (photo, json).",
                          parameter=parameter)
    return "schema", value


def check_schema(schema: dict[str, Any], limits: SchemaLimits | None = None, *, parameter: str = "schema"
                 ) -> dict[str, Any]:
    """Check a JSON Schema against ``limits`` and the supported keywords; return a copy without annotations,
    ready for the grammar converter.

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
    _check_meta_schema(schema, refuse)
    walker = _Walker(schema, limits, refuse)
    cleaned = walker.clean(schema, "#")
    _check_refs(walker.refs, limits.max_ref_depth, refuse)
    return cleaned


def validation_error(value: Any, schema: dict[str, Any]) -> str | None:
    """The first reason ``value`` does not validate against ``schema`` (``jsonschema``), or ``None``."""
    jsonschema = _jsonschema()
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path) or "the document"
    return f"at {where}: {error.message[:300]}"


def _jsonschema() -> Any:
    try:
        import jsonschema
    except ImportError as err:
        raise MissingExtraError(f"Structured output checks answers with jsonschema, which is missing. {INSTALL_HINT}"
                                ) from err
    return jsonschema


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
    jsonschema = _jsonschema()
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as err:
        where = "/".join(str(part) for part in err.absolute_path) or "the root"
        raise refuse(f"it is not a valid JSON Schema (at {where}: {err.message[:200]})") from None


class _Walker:
    """One pass over a schema: checks every subschema, collects its ``$ref`` graph, and copies it without
    annotations."""

    def __init__(self, root: dict[str, Any], limits: SchemaLimits, refuse: _Refusal):
        self.root, self.limits, self.refuse = root, limits, refuse
        self.total_count = 0
        self.refs: dict[str, set[str]] = {"#": set()}
        """Each subschema that has ``$ref``s below it (the root ``#`` and every ``$defs`` entry) -> their targets."""
        self._owner = "#"

    def clean(self, schema: object, path: str) -> dict[str, Any]:
        if not isinstance(schema, dict):
            raise self.refuse(f"{path} is {json.dumps(schema)[:20]}, not a schema object; only additionalProperties "
                              "may be true or false")
        unknown = sorted(set(schema) - SUPPORTED - ANNOTATIONS)
        if unknown:
            raise self.refuse(f"{path} uses {', '.join(unknown)}, which {'is' if len(unknown) == 1 else 'are'} not "
                              f"supported (supported: {_KEYWORDS_TEXT})")
        self._check_keywords(schema, path)
        cleaned: dict[str, Any] = {}
        for key, value in schema.items():
            if key in ANNOTATIONS:
                continue
            if key in _SCHEMA_MAPS:
                cleaned[key] = {name: self._sub(key, sub, f"{path}/{key}/{name}") for name, sub in value.items()}
            elif key in _SCHEMA_LISTS:
                cleaned[key] = [self.clean(sub, f"{path}/{key}/{index}") for index, sub in enumerate(value)]
            elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
                cleaned[key] = self.clean(value, f"{path}/{key}")
            else:
                cleaned[key] = copy.deepcopy(value)
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
        constraints = set(schema) - ANNOTATIONS - {"$defs", "definitions"}
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
        self._check_counts(schema, path)

    def _check_type(self, schema: dict[str, Any], path: str, constraints: set[str]) -> None:
        kind = schema.get("type")
        if isinstance(kind, list) and constraints - {"type"}:
            raise self.refuse(f"{path} gives a list of types with other keywords, which the grammar would ignore; "
                              "use anyOf with one schema per type")
        if "format" in schema and schema["format"] not in FORMATS:
            raise self.refuse(f"{path} asks for format {str(schema['format'])[:40]!r}; supported formats: "
                              f"{', '.join(sorted(FORMATS))}")
        if {"minLength", "maxLength"} & constraints and (kind != "string" or {"format", "enum", "const"} & constraints):
            raise self.refuse(f"{path}: minLength/maxLength need \"type\": \"string\" and no format, enum or const")
        if {"minItems", "maxItems"} & constraints and ("items" not in schema or kind not in (None, "array")):
            raise self.refuse(f"{path}: minItems/maxItems need \"items\" (one schema for every item)")
        if "items" in schema and not isinstance(schema["items"], dict):
            raise self.refuse(f"{path}/items must be one schema; give a tuple as prefixItems")
        if "items" in schema and "prefixItems" in schema:
            raise self.refuse(f"{path} has both items and prefixItems; give one of them")
        missing = sorted(set(schema.get("required", ())) - set(schema.get("properties", {})))
        if missing:
            raise self.refuse(f"{path} requires {', '.join(missing)[:200]}, not among its properties")

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
                raise self.refuse(f"{path}/$ref {ref[:80]!r} points at nothing")
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
