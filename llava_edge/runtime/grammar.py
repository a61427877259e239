"""JSON Schema -> GBNF with llama-cpp-python's converter, made tight, and llama.cpp's grammar sampler.

The converter (``llama_cpp.llama_grammar.SchemaConverter``) is used with some of its rules replaced, so that
what a grammar allows is always valid, compact JSON, however unlikely the tokens a model (or random weights)
prefers: at most one space wherever JSON allows whitespace (``space``); no raw control characters and no lone
surrogate escapes inside strings (``char``: ``json.loads`` refuses the one, UTF-8 cannot encode the other);
exponents of at most two digits (``number``: ``1e9999`` would be infinity); and rule names of bounded length
(a long property name would otherwise be repeated in every repetition of its rule). Numbers with bounds or
``multipleOf`` and strings with a ``pattern`` get our own rules (``structured.numbers``, ``structured.pattern``):
the converter ignores the one and turns the other into text that is not always JSON.

``structured_output`` is a plain synchronous function (it checks the schema and builds the grammar, milliseconds
to about a second for the largest schemas allowed): a server runs it in a worker thread, off its event loop.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import llama_cpp
from llama_cpp.llama_grammar import RESERVED_NAMES, SchemaConverter

from llava_edge.errors import SchemaError
from llava_edge.structured import (
    PHOTO_PROMPT,
    SchemaLimits,
    StructuredOutput,
    check_schema,
    schema_named,
)
from llava_edge.structured.keywords import has_number_keywords, number_rule
from llava_edge.structured.numbers import number_gbnf
from llava_edge.structured.pattern import parse_pattern
from llava_edge.structured.unique import has_unique_items

SPACE_RULE = '" "?'
"""At most one space wherever JSON allows whitespace."""
TIGHT_RULES = {
    "space": SPACE_RULE,
    "char": r'[^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" ([0-9a-cA-Ce-fE-F] {hex} {hex} | [dD] [0-7] {hex}) {hex})',
    "number": '("-"? integral-part) ("." decimal-part)? ([eE] [-+]? [0-9] [0-9]?)? space',
}
"""Rules of the converter replaced by these (``{hex}`` is the name of a hex-digit rule)."""
_MAX_RULE_NAME = 48
_CHECKED = 10 ** 9
"""Repetition limit for patterns already checked against ``SchemaLimits``."""


class _TightConverter(SchemaConverter):
    """The converter with short rule names; ``TIGHT_RULES`` replace its own once it is done."""

    def __init__(self) -> None:
        super().__init__(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)  # type: ignore[no-untyped-call]

    def _add_rule(self, name: str, rule: str) -> str:
        if len(name) > _MAX_RULE_NAME:
            name = f"{name[:_MAX_RULE_NAME - 13]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
        return str(super()._add_rule(name, rule))  # type: ignore[no-untyped-call]

    def visit(self, schema: dict[str, Any], name: str) -> str:
        """Our rules for bounded numbers and patterns; the converter's for everything else."""
        if not {"$ref", "anyOf", "oneOf", "enum", "const"} & set(schema):
            rule_name = f"{name}-" if name in RESERVED_NAMES else name or "root"
            if schema.get("type") in ("number", "integer") and has_number_keywords(schema):
                return self._add_rule(rule_name, f"({number_gbnf(number_rule(schema))}) space")
            if schema.get("type") in (None, "string") and "pattern" in schema:
                content = parse_pattern(schema["pattern"], _CHECKED).gbnf
                return self._add_rule(rule_name, f'"\\"" {content} "\\"" space')
        return str(super().visit(schema, name))  # type: ignore[no-untyped-call]

    def grammar(self, schema: dict[str, Any]) -> str:
        self.visit(self.resolve_refs(schema, ""), "")
        hex_digit = self._add_rule("hex", "[0-9a-fA-F]") if "char" in self._rules else ""
        for name, rule in TIGHT_RULES.items():
            if name in self._rules:
                self._rules[name] = rule.replace("{hex}", hex_digit)
        return str(self.format_grammar())  # type: ignore[no-untyped-call]


def structured_output(
    schema: dict[str, Any] | str | StructuredOutput | None = None,
    grammar: str | None = None,
    *,
    limits: SchemaLimits | None = None,
    parameter: str = "schema",
) -> StructuredOutput | None:
    """What constrains a caption: a JSON Schema (a dict, or ``"photo"`` / ``"json"``) or a GBNF grammar, checked
    and turned into a grammar once (a ``StructuredOutput`` given is returned as it is). ``None`` for neither.

    Args:
        schema: the JSON Schema the answer must follow.
        grammar: a GBNF grammar (root rule ``root``) instead; the answer is not parsed.
        limits: the bounds on the schema and the grammar.
        parameter: the request field named in errors (``response_format``, ``format``).

    Raises:
        SchemaError: both given, a schema or grammar over a limit, an unsupported keyword, a grammar that does
            not parse.
        MissingExtraError: a schema without ``jsonschema`` (the ``structured`` extra).
    """
    if isinstance(schema, StructuredOutput):
        return schema
    if schema is not None and grammar is not None:
        raise SchemaError("Give a schema or a grammar, not both.", parameter=parameter)
    limits = limits or SchemaLimits()
    if grammar is not None:
        return StructuredOutput(checked_grammar(grammar, limits, parameter), None, "grammar")
    if schema is None:
        return None
    name, chosen = schema_named(schema, parameter=parameter)
    cleaned = check_schema(chosen, limits, parameter=parameter)
    try:
        text = _TightConverter().grammar(cleaned)
    except (AssertionError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
        raise SchemaError(f"The JSON Schema could not be turned into a grammar ({type(err).__name__}: "
                          f"{str(err)[:200]}); simplify it.", parameter=parameter) from None
    prompt = PHOTO_PROMPT if name == "photo" else None
    return StructuredOutput(checked_grammar(text, limits, parameter), chosen, name, prompt,
                            deduplicates=has_unique_items(cleaned), max_depth=limits.max_answer_depth)


def checked_grammar(grammar: str, limits: SchemaLimits, parameter: str = "grammar") -> str:
    """``grammar`` once it is within the size limit and llama.cpp parses it (without a model: token
    references such as ``<|end|>`` cannot be checked, so they are refused; ``<[2]>`` ids work).

    Raises:
        SchemaError: too large, empty, or it does not parse (llama.cpp logs why).
    """
    if not isinstance(grammar, str) or not grammar.strip():
        raise SchemaError("The grammar is empty; give GBNF text with a root rule.", parameter=parameter)
    size = len(grammar.encode())
    if size > limits.max_grammar_bytes:
        raise SchemaError(f"The grammar is {size:,} bytes, over the limit of {limits.max_grammar_bytes:,}: lower "
                          "maxItems/maxLength or split the schema.", parameter=parameter)
    sampler = llama_cpp.llama_sampler_init_grammar(None, grammar.encode(), b"root")
    if not sampler:
        raise SchemaError("The grammar does not parse (llama.cpp printed why); it needs a rule named root.",
                          parameter=parameter)
    llama_cpp.llama_sampler_free(sampler)
    return grammar


def grammar_sampler(vocab: Any, grammar: str) -> Any:
    """llama.cpp's grammar sampler for ``grammar`` (root rule ``root``) on ``vocab``. The caller frees it.

    Raises:
        SchemaError: the grammar does not parse.
    """
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    if not sampler:
        raise SchemaError("The grammar does not parse (llama.cpp printed why).", parameter="grammar")
    return sampler


def schema_grammar(schema: dict[str, Any]) -> str:
    """The tight GBNF grammar of a JSON Schema already checked (for tests and benchmarks)."""
    return _TightConverter().grammar(json.loads(json.dumps(schema)))
