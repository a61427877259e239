"""GBNF for numbers with bounds and ``multipleOf``: which JSON number texts a schema's ``minimum``, ``maximum``,
``exclusiveMinimum``, ``exclusiveMaximum`` and ``multipleOf`` allow. Pure: strings in, grammar text out.

Integers use llama.cpp's range construction (``build_min_max_int`` in ``common/json-schema-to-grammar.cpp``,
``_build_min_max_int`` in ``examples/json_schema_to_grammar.py``; MIT, (c) the ggml authors), ported below:
a range is split by digit count, and each count into a common prefix and uniform digit ranges, so the grammar
admits exactly the integers in range, without leading zeros. Decimals follow our own rule: no exponent, at
most ``DECIMAL_PLACES`` fraction digits, and a bound holds for the float each text parses to (the validator
compares ``float(text)``), so every text the grammar allows passes ``jsonschema``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

DECIMAL_PLACES = 6
"""Fraction digits a bounded (or ``multipleOf``) decimal may have."""
MAX_DIGITS = 16
"""Integer digits any number may have (as the tight ``number`` rule): keeps values exact and answers finite."""
_CAP = 10 ** MAX_DIGITS - 1


@dataclass(frozen=True)
class NumberRule:
    """What a number schema allows, read from its keywords (``number_rule``)."""

    integer: bool
    """Only integers (``"type": "integer"``, or ``multipleOf`` 1 or more)."""
    low: Decimal | None
    high: Decimal | None
    low_exclusive: bool = False
    high_exclusive: bool = False
    places: int = DECIMAL_PLACES
    """Fraction digits allowed (fewer with ``multipleOf`` 0.1, 0.01, ...)."""
    trailing_zeros: int = 0
    """Integers end in this many zeros (``multipleOf`` 10, 100, ...)."""


def number_gbnf(rule: NumberRule) -> str:
    """The GBNF expression (no trailing ``space``) for the JSON number texts ``rule`` allows.

    Raises:
        ValueError: no number satisfies the bounds (the message says which).
    """
    if rule.integer:
        low, high = _integer_bounds(rule)
        if rule.trailing_zeros:
            return _tens(rule.trailing_zeros)
        return _integer_range(low, high)
    scale = 10 ** rule.places
    low_n = None if rule.low is None else _scaled_limit(rule.low, rule.low_exclusive, scale, up=True)
    high_n = None if rule.high is None else _scaled_limit(rule.high, rule.high_exclusive, scale, up=False)
    if low_n is not None and high_n is not None and low_n > high_n:
        raise ValueError(f"no number with at most {rule.places} fraction digits lies within its bounds")
    return _decimal_range(low_n, high_n, rule.places)


def _integer_bounds(rule: NumberRule) -> tuple[int | None, int | None]:
    low = None if rule.low is None else (math.floor(rule.low) + 1 if rule.low_exclusive else math.ceil(rule.low))
    high = None if rule.high is None else (math.ceil(rule.high) - 1 if rule.high_exclusive else math.floor(rule.high))
    if low is not None and high is not None and low > high:
        raise ValueError("no integer lies within its bounds")
    return low, high


def _scaled_limit(bound: Decimal, exclusive: bool, scale: int, *, up: bool) -> int:
    """The first (``up``: lowest; else highest) ``N`` such that the text of ``N / scale`` parses to a float the
    validator finds within ``bound``. Texts round to floats monotonically, so it is found from the inside float
    nearest the bound and the midpoint to its outside neighbour, in at most two steps."""
    direction = math.inf if up else -math.inf
    inside = float(bound)
    while (Decimal(inside) < bound if up else Decimal(inside) > bound) or (exclusive and Decimal(inside) == bound):
        inside = math.nextafter(inside, direction)
    outside = math.nextafter(inside, -direction)
    middle = (Decimal(inside) + Decimal(outside)) / 2 * scale
    step = 1 if up else -1
    count = math.floor(middle) if up else math.ceil(middle)
    while not (float(Decimal(count) / scale) >= inside if up else float(Decimal(count) / scale) <= inside):
        count += step
    return count


def _tens(zeros: int) -> str:
    """Integers that are multiples of ``10 ** zeros``."""
    return f'"0" | "-"? [1-9] [0-9]{{0,{max(MAX_DIGITS - 1 - zeros, 0)}}} "{"0" * zeros}"'


# -- integers: llama.cpp's construction ------------------------------------------------------------------------


def _integer_range(low: int | None, high: int | None) -> str:
    """The integers in ``[low, high]`` (``None``: open), at most ``MAX_DIGITS`` digits on an open side."""
    if low is None and high is None:
        return f'"-"? ([0] | [1-9] [0-9]{{0,{MAX_DIGITS - 1}}})'
    if any(bound is not None and abs(bound) > _CAP for bound in (low, high)):
        raise ValueError(f"bounds beyond {MAX_DIGITS} digits are not supported")
    if (low is not None and abs(low) > _CAP // 10) or (high is not None and abs(high) > _CAP // 10):
        low = -_CAP if low is None else low  # close an open side at the digit cap: llama.cpp's open-sided
        high = _CAP if high is None else high  # construction assumes bounds shorter than the cap
    out: list[str] = []
    _min_max_int(low, high, out, MAX_DIGITS, top_level=True)
    return "".join(out)


def _digit_range(out: list[str], low: str, high: str) -> None:
    out.append(f"[{low}]" if low == high else f"[{low}-{high}]")


def _more_digits(out: list[str], low: int, high: int | None) -> None:
    out.append("[0-9]")
    if low == high == 1:
        return
    out.append("{" + str(low) + ("" if high == low else "," + ("" if high is None else str(high))) + "}")


def _uniform_range(out: list[str], low: str, high: str) -> None:
    """Numbers of ``len(low)`` digits from ``low`` to ``high`` (same length)."""
    i = 0
    while i < len(low) and i < len(high) and low[i] == high[i]:
        i += 1
    if i > 0:
        out.append(f'"{low[:i]}"')
    if i >= len(low) or i >= len(high):
        return
    if i > 0:
        out.append(" ")
    rest = len(low) - i - 1
    if rest == 0:
        out.append(f"[{low[i]}-{high[i]}]")
        return
    low_rest, high_rest, zeros, nines = low[i + 1:], high[i + 1:], "0" * rest, "9" * rest
    reached = False
    out.append("(")
    if low_rest == zeros:
        _digit_range(out, low[i], chr(ord(high[i]) - 1))
        out.append(" ")
        _more_digits(out, rest, rest)
    else:
        out.append(f"[{low[i]}] (")
        _uniform_range(out, low_rest, nines)
        out.append(")")
        if ord(low[i]) < ord(high[i]) - 1:
            out.append(" | ")
            if high_rest == nines:
                _digit_range(out, chr(ord(low[i]) + 1), high[i])
                reached = True
            else:
                _digit_range(out, chr(ord(low[i]) + 1), chr(ord(high[i]) - 1))
            out.append(" ")
            _more_digits(out, rest, rest)
    if not reached:
        out.append(" | ")
        _digit_range(out, high[i], high[i])
        out.append(" ")
        _uniform_range(out, zeros, high_rest)
    out.append(")")


def _min_max_int(low: int | None, high: int | None, out: list[str], decimals: int, top_level: bool) -> None:
    """llama.cpp's ``build_min_max_int``: ``low``/``high`` ``None`` are its int64 min/max (no bound)."""
    fewer = max(decimals - 1, 1)
    if low is not None and high is not None:
        if low < 0 and high < 0:
            out.append('"-" (')
            _min_max_int(-high, -low, out, decimals, top_level=True)
            out.append(")")
            return
        if low < 0:
            out.append('"-" (')
            _min_max_int(0, -low, out, decimals, top_level=True)
            out.append(") | ")
            low = 0
        low_s, high_s = str(low), str(high)
        for digits in range(len(low_s), len(high_s)):
            _uniform_range(out, low_s, "9" * digits)
            low_s = "1" + "0" * digits
            out.append(" | ")
        _uniform_range(out, low_s, high_s)
    elif low is not None:
        _at_least(low, out, decimals, fewer, top_level)
    elif high is not None:
        if high >= 0:
            if top_level:
                out.append('"-" [1-9] ')
                _more_digits(out, 0, fewer)
                out.append(" | ")
            _min_max_int(0, high, out, decimals, top_level=True)
        else:
            out.append('"-" (')
            _min_max_int(-high, None, out, decimals, top_level=False)
            out.append(")")


def _at_least(low: int, out: list[str], decimals: int, fewer: int, top_level: bool) -> None:
    """The open-above half of ``build_min_max_int``."""
    if low < 0:
        out.append('"-" (')
        _min_max_int(None, -low, out, decimals, top_level=False)
        out.append(") | [0] | [1-9] ")
        _more_digits(out, 0, decimals - 1)
    elif low == 0:
        if top_level:
            out.append("[0] | [1-9] ")
            _more_digits(out, 0, fewer)
        else:
            _more_digits(out, 1, decimals)
    elif low <= 9:
        start = "1" if top_level else "0"
        digit = str(low)
        if digit > start:
            _digit_range(out, start, chr(ord(digit) - 1))
            out.append(" ")
            _more_digits(out, 1, fewer)
            out.append(" | ")
        _digit_range(out, digit, "9")
        out.append(" ")
        _more_digits(out, 0, fewer)
    else:
        low_s = str(low)
        first = low_s[0]
        if first > "1":
            _digit_range(out, "1" if top_level else "0", chr(ord(first) - 1))
            out.append(" ")
            _more_digits(out, len(low_s), fewer)
            out.append(" | ")
        _digit_range(out, first, first)
        out.append(" (")
        _min_max_int(int(low_s[1:]), None, out, fewer, top_level=False)
        out.append(")")
        if first < "9":
            out.append(" | ")
            _digit_range(out, chr(ord(first) + 1), "9")
            out.append(" ")
            _more_digits(out, len(low_s) - 1, fewer)


# -- decimals: our rule ----------------------------------------------------------------------------------------


def _decimal_range(low: int | None, high: int | None, places: int) -> str:
    """Decimal texts whose value times ``10 ** places`` is an integer in ``[low, high]`` (``None``: open); no
    ``-0``: zero is written unsigned."""
    parts = []
    if low is None or low < 0:
        magnitude_low = -high if high is not None and high < 0 else 1
        parts.append(f'"-" ({_unsigned_decimals(magnitude_low, None if low is None else -low, places)})')
    if high is None or high >= 0:
        parts.append(_unsigned_decimals(max(low or 0, 0), high, places))
    return " | ".join(f"({part})" for part in parts)


def _unsigned_decimals(low: int, high: int | None, places: int) -> str:
    scale = 10 ** places
    low_int, low_fraction = divmod(low, scale)
    if high is not None and high // scale == low_int:
        return f'"{low_int}" {_fraction(low_fraction, high % scale, places)}'
    parts = [f'"{low_int}" {_fraction(low_fraction, scale - 1, places)}']
    high_int = None if high is None else high // scale
    if high_int is None or low_int + 1 <= high_int - 1:
        middle = _integer_range(low_int + 1, None if high_int is None else high_int - 1)
        parts.append(f"({middle}) {_fraction(0, scale - 1, places)}")
    if high is not None and high_int is not None:
        parts.append(f'"{high_int}" {_fraction(0, high % scale, places)}')
    return " | ".join(parts)


def _fraction(low: int, high: int, places: int) -> str:
    """The optional ``.digits`` part whose value, padded to ``places`` digits, is in ``[low, high]``."""
    low_s, high_s = f"{low:0{places}d}", f"{high:0{places}d}"
    digits = _padded_digits(low_s, high_s)
    return f'("." {digits})?' if low == 0 else f'"." {digits}'


def _padded_digits(low: str, high: str) -> str:
    """Non-empty digit strings of at most ``len(low)`` digits whose zero-padded value is in ``[low, high]``."""
    first_low, first_high, rest = low[0], high[0], len(low) - 1
    if low == "0" * len(low) and high == "9" * len(high):
        return "[0-9]" + _any_digits(rest)
    if rest == 0:
        return f"[{first_low}-{first_high}]"
    if first_low == first_high:
        return f'"{first_low}"' + _rest_digits(low[1:], high[1:])
    parts = [f'"{first_low}"' + _rest_digits(low[1:], "9" * rest)]
    if ord(first_low) + 1 <= ord(first_high) - 1:
        parts.append(f"[{chr(ord(first_low) + 1)}-{chr(ord(first_high) - 1)}]" + _any_digits(rest))
    parts.append(f'"{first_high}"' + _rest_digits("0" * rest, high[1:]))
    return "(" + " | ".join(parts) + ")"


def _rest_digits(low: str, high: str) -> str:
    """What may follow a first digit: up to ``len(low)`` more digits, padded value in ``[low, high]``."""
    if not low:
        return ""
    if low == "0" * len(low) and high == "9" * len(high):
        return _any_digits(len(low))
    digits = _padded_digits(low, high)
    return f" ({digits})?" if low == "0" * len(low) else f" {digits}"


def _any_digits(count: int) -> str:
    return f" [0-9]{{0,{count}}}" if count > 0 else ""
