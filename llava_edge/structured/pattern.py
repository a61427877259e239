"""JSON Schema ``pattern``: checked by our own parser, then turned into GBNF for the JSON string's content.

A pattern is enforced anchored (the whole string matches it), which also satisfies its unanchored meaning
(``jsonschema`` searches for a match). The subset: literals and escapes (``\\d \\w \\s \\D \\W \\S``, ``\\n``,
``\\xhh``, ``\\uhhhh``, escaped punctuation), ``.``, character classes, groups (``(...)``, ``(?:...)``, named),
alternation and the quantifiers ``* + ? {n} {n,} {n,m}`` (lazy ones match the same strings). Refused by name:
backreferences, lookarounds, other assertions (``\\b``, inner ``^``/``$``), inline flags, and quantified groups
that hold a quantifier or an alternation (their grammar explodes into ambiguous parses).

Each character is written as JSON writes it: ``"``, ``\\`` and control characters as escapes, any other
non-ASCII one raw or as a ``\\u`` escape (so a vocabulary without it can still write it). ``.`` and negated
classes leave out ``"``, ``\\`` and control characters: the answer matches a narrower pattern, never a wider.
Pure: no llama.cpp here.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass

_SAFE_EXCLUDED = '"\\\\\\x7F\\x00-\\x1F'
"""GBNF class items left out of ``.`` and negated classes: quote, backslash, control characters."""
_SHORTHANDS = {"d": [(0x30, 0x39)], "w": [(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A), (0x5F, 0x5F)],
               "s": [(0x20, 0x20), (0x09, 0x0D)]}
_CHAR_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a"}
_META = set("|.()[]{}*+?^$\\")


class PatternError(ValueError):
    """A pattern outside the supported subset; the message names what."""


@dataclass(frozen=True)
class Pattern:
    """A checked pattern: its GBNF (the string's content, between the quotes), its largest ``{n,m}`` counts
    added up, and the product of alternatives along its deepest path (for the ambiguity bound)."""

    gbnf: str
    repeat_total: int
    alternatives: int


def parse_pattern(pattern: str, max_count: int) -> Pattern:
    """Check ``pattern`` and build its GBNF.

    Raises:
        PatternError: the pattern does not compile, or uses what is not supported (named in the message).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            re.compile(pattern)
        except re.error as err:
            raise PatternError(f"pattern {json.dumps(pattern)[:80]} is not a valid regular expression ({err})"
                               ) from None
    body = pattern[1:] if pattern.startswith("^") else pattern
    if body.endswith("$") and not _escaped_at(body, len(body) - 1):
        body = body[:-1]
    parser = _Parser(body, max_count)
    gbnf, alternatives = parser.alternation()
    if parser.pos != len(body):  # pragma: no cover - re.compile refused unbalanced parentheses already
        raise PatternError(f"pattern {json.dumps(pattern)[:80]} has an unmatched ')'")
    return Pattern(gbnf or '""', parser.repeat_total, alternatives)


def _escaped_at(text: str, index: int) -> bool:
    backslashes = len(text[:index]) - len(text[:index].rstrip("\\"))
    return backslashes % 2 == 1


class _Parser:
    """Recursive descent over the pattern; each method returns (GBNF, alternatives along its deepest path)."""

    def __init__(self, text: str, max_count: int):
        self.text, self.pos, self.max_count = text, 0, max_count
        self.repeat_total = 0
        self.compounds = 0
        """Quantifiers and alternations seen so far (a group that adds to it holds one)."""

    def refuse(self, what: str) -> PatternError:
        return PatternError(f"pattern {json.dumps(self.text)[:80]}: {what} not supported")

    def alternation(self) -> tuple[str, int]:
        branches = [self.sequence()]
        while self.pos < len(self.text) and self.text[self.pos] == "|":
            self.pos += 1
            branches.append(self.sequence())
        if len(branches) == 1:
            return branches[0]
        self.compounds += 1
        text = " | ".join(gbnf or '""' for gbnf, _ in branches)
        return f"({text})", len(branches) * max(count for _, count in branches)

    def sequence(self) -> tuple[str, int]:
        items: list[str] = []
        widest = 1
        while self.pos < len(self.text) and self.text[self.pos] not in "|)":
            start = self.pos
            atom, count, compound = self.atom()
            atom = self.quantified(atom, compound, start)
            if items and _PLAIN_LITERAL.fullmatch(items[-1]) and _PLAIN_LITERAL.fullmatch(atom):
                atom = items.pop()[:-1] + atom[1:]
            items.append(atom)
            widest = max(widest, count)
        return " ".join(items), widest

    def atom(self) -> tuple[str, int, bool]:
        """(GBNF, alternatives, holds a quantifier or alternation)."""
        char = self.text[self.pos]
        if char == "(":
            return self.group()
        if char == "[":
            return self.char_class(), 1, False
        if char == ".":
            self.pos += 1
            return f"[^{_SAFE_EXCLUDED}]", 1, False
        if char in "^$":
            raise self.refuse(f"an anchor ({char}) inside the pattern is")
        if char in "*+?{" and not self._literal_brace():
            raise self.refuse(f"a quantifier ({char}) with nothing before it is")
        if char == "\\":
            return self.escape(), 1, False
        self.pos += 1
        return _literal(char), 1, False

    def _literal_brace(self) -> bool:
        match = _QUANTIFIER.match(self.text, self.pos)
        return self.text[self.pos] == "{" and (match is None or match.group(0) in ("{}", "{,}"))

    def group(self) -> tuple[str, int, bool]:
        self.pos += 1
        if self.text.startswith("?", self.pos):
            self._group_prefix()
        before = self.compounds
        gbnf, count = self.alternation()
        self.pos += 1  # ")"
        return f"({gbnf or chr(34) * 2})", count, self.compounds > before

    def _group_prefix(self) -> None:
        rest = self.text[self.pos:]
        if rest.startswith("?:"):
            self.pos += 2
        elif rest.startswith(("?=", "?!", "?<=", "?<!")):
            raise self.refuse("a lookaround is")
        elif rest.startswith("?P="):
            raise self.refuse("a backreference is")
        elif match := re.match(r"\?P?<[A-Za-z_][A-Za-z0-9_]*>", rest):
            self.pos += match.end()
        else:
            raise self.refuse(f"the group syntax ({rest[:3]}) is")

    def quantified(self, atom: str, compound: bool, start: int) -> str:
        if self.pos >= len(self.text):
            return atom
        match = _QUANTIFIER.match(self.text, self.pos)
        if match is None or match.group(0) in ("{}", "{,}"):
            return atom
        if compound:
            raise self.refuse("a quantified group that holds a quantifier or an alternation "
                              f"({self.text[start:match.end()][:40]}) is")
        self.pos = match.end()
        self.compounds += 1
        if self.text.startswith("+", self.pos):
            raise self.refuse("a possessive quantifier is")
        if self.text.startswith("?", self.pos):
            self.pos += 1  # lazy: the same strings match the whole pattern
        symbol, low, high = match.group(1), match.group(2), match.group(3)
        if symbol:
            return f"{atom}{symbol}"
        low_n = int(low or 0)
        high_n = low_n if match.group(0).count(",") == 0 else (int(high) if high else None)
        for count in (low_n, high_n):
            if count is not None and count > self.max_count:
                raise PatternError(f"pattern {json.dumps(self.text)[:80]}: a repetition of {count:,} is over the "
                                   f"limit of {self.max_count:,}")
        self.repeat_total += high_n if high_n is not None else low_n
        return f"{atom}{{{low_n}{'' if high_n == low_n else ',' + ('' if high_n is None else str(high_n))}}}"

    def escape(self) -> str:
        char = self.text[self.pos + 1]
        self.pos += 2
        if char in _SHORTHANDS:
            return _positive_class(_SHORTHANDS[char])
        if char.lower() in _SHORTHANDS:
            return _negated_class(_SHORTHANDS[char.lower()])
        return _literal(self._escaped_char(char))

    def _escaped_char(self, char: str) -> str:
        if char in _CHAR_ESCAPES:
            return _CHAR_ESCAPES[char]
        if char in "xuU":
            digits = {"x": 2, "u": 4, "U": 8}[char]
            code = self.text[self.pos:self.pos + digits]
            self.pos += digits
            return chr(int(code, 16))
        if char == "0":
            raise self.refuse("an octal escape is")
        if char.isdigit() or char == "k":
            raise self.refuse("a backreference is")
        if char in "bBAZzG":
            raise self.refuse(f"the assertion \\{char} is")
        if char.isalnum():
            raise self.refuse(f"the escape \\{char} is")
        return char

    def char_class(self) -> str:
        self.pos += 1
        negated = self.text.startswith("^", self.pos)
        self.pos += negated
        ranges: list[tuple[int, int]] = []
        first = True
        while first or self.text[self.pos] != "]":
            first = False
            ranges.extend(self._class_item())
        self.pos += 1
        return _negated_class(ranges) if negated else _positive_class(ranges)

    def _class_item(self) -> list[tuple[int, int]]:
        low = self._class_char()
        if isinstance(low, list):
            return low
        if self.text.startswith("-", self.pos) and not self.text.startswith("-]", self.pos):
            self.pos += 1
            high = self._class_char()
            if isinstance(high, list):  # pragma: no cover - re.compile refuses a range to a shorthand
                raise self.refuse("a range to a shorthand class is")
            return [(ord(low), ord(high))]
        return [(ord(low), ord(low))]

    def _class_char(self) -> str | list[tuple[int, int]]:
        char = self.text[self.pos]
        if char != "\\":
            self.pos += 1
            return char
        escaped = self.text[self.pos + 1]
        self.pos += 2
        if escaped in _SHORTHANDS:
            return _SHORTHANDS[escaped]
        if escaped.lower() in _SHORTHANDS:
            raise self.refuse(f"a negated shorthand (\\{escaped}) inside a class is")
        if escaped == "b":
            return "\b"
        return self._escaped_char(escaped)


_PLAIN_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"')
_QUANTIFIER = re.compile(r"([*+?])|\{(\d*)(?:,(\d*))?\}")


def _literal(char: str) -> str:
    """A character as JSON writes it inside a string, as a GBNF expression."""
    if 0xD800 <= ord(char) <= 0xDFFF:
        raise PatternError("a pattern with a lone surrogate character is not supported")
    written = json.dumps(char, ensure_ascii=False)[1:-1]
    if ord(char) < 0x80 or written != char:
        return _gbnf_string(written)
    escaped = json.dumps(char)[1:-1]
    return f"({_gbnf_string(written)} | {_gbnf_string(escaped)})"


def _gbnf_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _class_text(ranges: list[tuple[int, int]]) -> str:
    return "".join(_class_code(low) if low == high else f"{_class_code(low)}-{_class_code(high)}"
                   for low, high in ranges)


def _class_code(code: int) -> str:
    if chr(code).isascii() and chr(code).isalnum():
        return chr(code)
    return f"\\x{code:02X}" if code < 0x80 else f"\\u{code:04X}" if code < 0x10000 else f"\\U{code:08X}"


def _positive_class(ranges: list[tuple[int, int]]) -> str:
    """The class's characters: plain ones in one GBNF class, each one JSON escapes as its own literal."""
    special = {0x22, 0x5C, 0x7F, *range(0x20)}
    plain: list[tuple[int, int]] = []
    escaped: list[int] = []
    for low, high in ranges:
        escaped.extend(code for code in special if low <= code <= high)
        start = low
        for code in [*sorted(code for code in special if low <= code <= high), high + 1]:
            if start <= code - 1:
                plain.append((start, code - 1))
            start = code + 1
    parts = ([f"[{_class_text(plain)}]"] if plain else []) + [_literal(chr(code)) for code in sorted(set(escaped))]
    return parts[0] if len(parts) == 1 else "(" + " | ".join(parts) + ")"


def _negated_class(ranges: list[tuple[int, int]]) -> str:
    return f"[^{_class_text(ranges)}{_SAFE_EXCLUDED}]"
