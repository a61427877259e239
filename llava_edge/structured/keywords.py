"""The keywords that constrain one value beyond its type: number bounds and ``multipleOf``, ``pattern``,
``format``, and what each needs beside it. Pure: used by the schema check and by the grammar converter."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from llava_edge.structured.numbers import DECIMAL_PLACES, NumberRule
from llava_edge.structured.validation import decimal

NUMBER_KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
ENFORCED_FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"})
"""String formats the grammar enforces (llama-cpp-python's converter has rules for them); any other ``format``
(``email``, ``uri``, Home Assistant's ``entity_id``, ...) is an annotation, as the JSON Schema spec allows."""


def has_number_keywords(schema: dict[str, Any]) -> bool:
    return any(keyword in schema for keyword in NUMBER_KEYWORDS)


def enforced_format(schema: dict[str, Any]) -> bool:
    """Whether the grammar enforces this schema's ``format`` (a known one, on a string)."""
    return schema.get("format") in ENFORCED_FORMATS and schema.get("type") in (None, "string")


def number_rule(schema: dict[str, Any]) -> NumberRule:
    """What a ``number``/``integer`` schema's bounds and ``multipleOf`` allow.

    Raises:
        ValueError: a ``multipleOf`` that is not a power of ten, or one of 10 or more beside bounds (the
            message names it).
    """
    integer = schema.get("type") == "integer"
    low, low_exclusive = _bound(schema, "minimum", "exclusiveMinimum", lower=True)
    high, high_exclusive = _bound(schema, "maximum", "exclusiveMaximum", lower=False)
    places, zeros = DECIMAL_PLACES, 0
    if "multipleOf" in schema:
        exponent = _power_of_ten(schema["multipleOf"])
        if exponent is None:
            raise ValueError(f"multipleOf {schema['multipleOf']} is not a power of ten (0.01, 0.1, 1, 10, ...), the "
                             "only kind the grammar can enforce")
        if exponent >= 0:
            integer, zeros = True, exponent
        else:
            places = min(-exponent, DECIMAL_PLACES)
        if zeros and (low is not None or high is not None):
            raise ValueError(f"multipleOf {schema['multipleOf']} beside minimum/maximum is not supported; give the "
                             "bounds alone, or the multiple alone")
    return NumberRule(integer, low, high, low_exclusive, high_exclusive, places, zeros)


def _bound(schema: dict[str, Any], inclusive: str, exclusive: str, *, lower: bool) -> tuple[Decimal | None, bool]:
    """The stricter of a schema's inclusive and exclusive bound on one side (draft 4's boolean
    ``exclusiveMinimum``/``exclusiveMaximum`` make the inclusive one exclusive)."""
    given = schema.get(inclusive)
    flag = schema.get(exclusive)
    if isinstance(flag, bool):
        return (None, False) if given is None else (Decimal(given), flag)
    candidates = [(Decimal(value), strict) for value, strict in ((given, False), (flag, True)) if value is not None]
    if not candidates:
        return None, False
    key = (lambda item: (item[0], item[1])) if lower else (lambda item: (-item[0], item[1]))
    return max(candidates, key=key)


def _power_of_ten(value: Any) -> int | None:
    """``k`` when ``value`` is ``10 ** k`` (as its shortest decimal), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    _sign, digits, exponent = decimal(value).normalize().as_tuple()
    return exponent if digits == (1,) and isinstance(exponent, int) else None
