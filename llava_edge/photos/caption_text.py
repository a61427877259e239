"""Caption text before it is stored: stock openers dropped, trigger words around it, alt text cut from it, and
what ``if_exists`` makes of a caption that is already there. Pure functions, shared by every target."""

from __future__ import annotations

import re
from typing import Literal

IfExists = Literal["skip", "overwrite", "append"]
"""What to do where a caption (description) is already stored: keep it, replace it, or add ours after it."""
Action = Literal["written", "overwritten", "appended", "skipped", "unchanged"]
"""What happened at one target: ``written`` where nothing was stored, ``overwritten``/``appended`` per
``if_exists``, ``skipped`` (an existing caption kept), ``unchanged`` (it already holds exactly this)."""
IF_EXISTS: tuple[IfExists, ...] = ("skip", "overwrite", "append")

ALT_TEXT_LIMIT = 250
"""IPTC's recommended maximum length of ``AltTextAccessibility``, in characters."""

_SUBJECT = r"(?:image|picture|photo|photograph|scene|illustration|painting|drawing|artwork|shot|frame|snapshot)"
_VERB = (
    r"(?:shows|depicts|features|displays|captures|presents|portrays|illustrates|contains|showcases|is\s+of"
    r"|appears\s+to\s+(?:show|depict|be\s+of))"
)
_PREAMBLES = [
    re.compile(rf"^(?:in\s+)?(?:this|the)\s+{_SUBJECT}\s+(?:we\s+(?:can\s+)?see|you\s+can\s+see|there\s+(?:is|are))"
               r"\s*:?\s*", re.IGNORECASE),
    re.compile(rf"^(?:this|the)\s+(?:is\s+an?\s+|(?:close-up|black[- ]and[- ]white|color(?:ful)?)\s+)?{_SUBJECT}"
               rf"\s+(?:that\s+)?{_VERB}\s*(?:that\s+)?:?\s*", re.IGNORECASE),
    re.compile(rf"^(?:this|it)\s+is\s+an?\s+{_SUBJECT}\s+(?:of|showing|depicting)\s+", re.IGNORECASE),
    re.compile(rf"^in\s+(?:this|the)\s+{_SUBJECT}\s*,\s*", re.IGNORECASE),
]
"""Openers captioning models put before the content: "The image shows", "This image depicts", "In this picture,
we can see", "This is a photo of". Only the start of the caption is looked at."""

_PLACEHOLDERS = frozenset({
    "", "olympus digital camera", "sony dsc", "digital camera", "kodak digital still camera",
    "minolta digital camera", "exif_jpeg_picture", "default", "dcim", "camera", "image", "picture", "photo",
    "untitled", "no description",
})
"""Text cameras and apps put into description fields that describes nothing; treated as no description."""


def strip_preamble(text: str) -> str:
    """``text`` without a stock opener ("The image shows a dog" -> "A dog"), capitalised; unchanged when
    no opener matches or nothing would be left."""
    stripped = text.strip()
    for pattern in _PREAMBLES:
        match = pattern.match(stripped)
        if match and match.end() < len(stripped):
            rest = stripped[match.end():].lstrip(" ,:")
            return rest[:1].upper() + rest[1:] if rest else stripped
    return stripped


def alt_text_from(caption: str, limit: int = ALT_TEXT_LIMIT) -> str:
    """Alt text from a caption: its whole sentences that fit in ``limit`` characters, or the first sentence
    cut at a word boundary with an ellipsis when that alone is longer."""
    caption = " ".join(caption.split())
    if len(caption) <= limit:
        return caption
    sentences = re.split(r"(?<=[.!?])\s+", caption)
    kept = ""
    for sentence in sentences:
        candidate = f"{kept} {sentence}".strip()
        if len(candidate) > limit:
            break
        kept = candidate
    if kept:
        return kept
    cut = caption[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:")
    return cut + "…"


def parse_keywords(answer: str, limit: int = 25) -> list[str]:
    """Keywords from a model's answer to "list keywords": split on commas, semicolons and lines, list markers
    ("1.", "-", "*") and a leading "Keywords:" dropped, quotes and end punctuation trimmed, repeats (ignoring
    case) dropped, at most ``limit``."""
    text = re.sub(r"^\s*(?:here\s+are\s+(?:some\s+)?)?(?:the\s+)?keywords?\s*[:\-]\s*", "", answer.strip(),
                  flags=re.IGNORECASE)
    keywords: list[str] = []
    seen: set[str] = set()
    for piece in re.split(r"[,;\n]", text):
        word = re.sub(r"^\s*(?:\d+[.)]|[-*\u2022#])\s*", "", piece).strip().strip("\"'`").rstrip(".!").strip()
        if word and len(word) <= 64 and word.casefold() not in seen:
            seen.add(word.casefold())
            keywords.append(word)
    return keywords[:limit]


def is_placeholder(text: str | None) -> bool:
    """No real description: missing, blank, NUL padding, or camera boilerplate ("OLYMPUS DIGITAL CAMERA")."""
    return text is None or text.replace("\x00", "").strip().lower() in _PLACEHOLDERS


def wrap(body: str, prefix: str = "", suffix: str = "") -> str:
    """``prefix body suffix``: a space is put between them unless the prefix ends (or the suffix starts) with
    whitespace already, so ``"ohwx, "`` and ``"ohwx"`` both read naturally."""
    if prefix:
        body = prefix + body if prefix[-1].isspace() else f"{prefix} {body}"
    if suffix:
        body = body + suffix if suffix[0].isspace() else f"{body} {suffix}"
    return body


def unwrap(text: str, prefix: str = "", suffix: str = "") -> str:
    """``text`` without ``prefix`` at its start and ``suffix`` at its end, where they are there."""
    if prefix and text.startswith(prefix.strip()):
        text = text[len(prefix.strip()):].lstrip()
    if suffix and text.endswith(suffix.strip()):
        text = text[: len(text) - len(suffix.strip())].rstrip()
    return text


def compose(
    existing: str | None, caption: str, if_exists: IfExists, *, prefix: str = "", suffix: str = ""
) -> tuple[str | None, Action]:
    """The text to store where ``existing`` is stored now (``None`` or blank: nothing is), and what that is;
    ``None``: leave it as it is.

    ``append`` adds the caption after the existing text with one space (captions stay one paragraph, and
    trainers that read only a file's first line still see all of it); appending a caption that the text
    already ends with changes nothing, so a repeated run does not stack copies.
    """
    new = wrap(caption, prefix, suffix)
    current = (existing or "").strip()
    if not current:
        return new, "written"
    if if_exists == "skip":
        return None, "skipped"
    if if_exists == "overwrite":
        return (None, "unchanged") if current == new else (new, "overwritten")
    body = unwrap(current, prefix, suffix)
    if body.endswith(caption):
        return None, "unchanged"
    return wrap(f"{body} {caption}" if body else caption, prefix, suffix), "appended"


def check_if_exists(value: str) -> IfExists:
    """``value`` as an ``IfExists``.

    Raises:
        ValueError: it is not one of ``IF_EXISTS``.
    """
    for choice in IF_EXISTS:
        if value == choice:
            return choice
    raise ValueError(f"if_exists must be one of {', '.join(IF_EXISTS)}, not {value!r}.")
