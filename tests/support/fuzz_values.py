"""Hypothesis strategies for hostile request bodies: any JSON value, and JSON Schemas built from the keywords
the structured-output check accepts and those it refuses, with valid and wrong-typed values."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

_free_text = st.text(st.characters(blacklist_characters="'"), max_size=30)
"""Client text without ``'``: a message quoting it can then never look like a Python repr (``{'``)."""
_long_strings = st.builds(lambda piece, count: piece * count, st.text("ab \u00e9\U0001f600", min_size=1, max_size=3),
                          st.integers(1000, 40_000))
_url_like = st.builds(
    lambda scheme, rest: scheme + rest,
    st.sampled_from(["http://", "HTTPS://", "http://[", "https://127.0.0.1:", "file://", "ftp://", "data:",
                     "data:image/png;base64,", "data:text/html,", "../", "/etc/"]),
    st.text(st.characters(blacklist_characters="'"), max_size=20),
)
_huge_numbers = st.sampled_from([10**4000, -(10**4000), 2**63, -(2**63) - 1, 1e308, -1e308, 5e-324,
                                 float("inf"), float("-inf"), float("nan")])
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**600), max_value=10**600)
    | st.floats()
    | _huge_numbers
    | _free_text
    | st.text(st.characters(codec=None, categories=["Cs", "Cc", "Zs", "So"]), max_size=8)  # lone surrogates too
    | _url_like
    | _long_strings
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_free_text, children, max_size=4),
    max_leaves=8,
)
"""Any JSON value (Python's ``json`` writes and reads NaN, Infinity and integers of any size below 4,300 digits)."""

# --- JSON Schemas ---------------------------------------------------------------------------------------

_names = st.sampled_from(["a", "b", "label", "count", "tags", ""]) | st.text(st.characters(
    blacklist_characters="'"), max_size=6)
_sizes = st.integers(0, 6) | st.sampled_from([-1, 1000, 1001, 10**9, 2**64, 1.5, "3", None, True])
_bounds = st.integers(-100, 100) | st.floats(-1e3, 1e3) | st.sampled_from([10**30, -(10**30), 1e308, "1", None, True])
_patterns = st.sampled_from([
    "^[a-z]{1,4}$", "[0-9]+", "(a|b)c", "a{2,3}", "^$", "[A-Z][a-z]*", "\\d{3}-\\d{4}",
    "(a)\\1", "(?=a)a", "(?!a)b", "(a+)+", "(a|b)*", "[", "(", "a{5000}", "\\p{L}", "a{2,1}", "(a|b|c|d){4}",
]) | _free_text
_formats = st.sampled_from(["date", "time", "date-time", "uuid", "uuid4", "email", "uri", "entity_id", "", "regex"])
_multiples = st.sampled_from([0.01, 0.1, 1, 10, 100, 3, 0, -1, 1e-9, 0.5, 10**20, "1"])


def _maybe_junk(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``valid``, sometimes any JSON value in its place."""
    return st.one_of(valid, valid, valid, json_values)


def _typed(kind: str, optional: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"type": st.just(kind)}, optional={key: _maybe_junk(value)
                                                                     for key, value in optional.items()})


_leaves = st.one_of(
    _typed("string", {"minLength": _sizes, "maxLength": _sizes, "pattern": _patterns, "format": _formats}),
    _typed("integer", {"minimum": _bounds, "maximum": _bounds, "exclusiveMinimum": _bounds,
                       "exclusiveMaximum": _bounds | st.booleans(), "multipleOf": _multiples}),
    _typed("number", {"minimum": _bounds, "maximum": _bounds, "multipleOf": _multiples}),
    st.sampled_from([{"type": "boolean"}, {"type": "null"}, {}, {"type": ["string", "null"]}, {"type": "nonsense"},
                     {"not": {"type": "string"}}, {"allOf": [{"type": "string"}]}, {"if": {}, "then": {}},
                     {"patternProperties": {"^a": {}}}, {"$ref": "http://127.0.0.1:9/schema.json"},
                     {"$ref": "#/$defs/missing"}, {"$ref": "#"}, {"enum": list(range(300))},
                     {"dependentRequired": {"a": ["b"]}}, {"contains": {}}]),
    st.builds(lambda values: {"enum": values}, st.lists(scalars, max_size=5)),
    st.builds(lambda value: {"const": value}, scalars),
    st.booleans(),
    json_values,
)


def _compound(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.fixed_dictionaries(
            {"type": st.just("object"), "properties": _maybe_junk(st.dictionaries(_names, children, max_size=4))},
            optional={"required": _maybe_junk(st.lists(_names, max_size=4)),
                      "additionalProperties": _maybe_junk(st.booleans() | children),
                      "minProperties": _sizes, "maxProperties": _sizes}),
        st.fixed_dictionaries(
            {"type": st.just("array"), "items": _maybe_junk(children)},
            optional={"minItems": _sizes, "maxItems": _sizes, "uniqueItems": _maybe_junk(st.booleans()),
                      "prefixItems": st.lists(children, max_size=3)}),
        st.builds(lambda alternatives: {"anyOf": alternatives}, st.lists(children, min_size=1, max_size=4)),
        st.builds(lambda alternatives: {"oneOf": alternatives}, st.lists(children, min_size=0, max_size=4)),
        st.builds(lambda alternative, count: {"anyOf": [alternative] * count}, children, st.integers(2, 40)),
        st.builds(lambda body: {"$defs": {"x": body}, "$ref": "#/$defs/x"}, children),
        st.builds(lambda body: {"type": "object", "properties": {"self": {"$ref": "#"}, "v": body}}, children),
    )


schemas = st.recursive(_leaves, _compound, max_leaves=10)
"""A JSON Schema (or something in its place): accepted ones are enforced, refused ones must be refused by name."""
