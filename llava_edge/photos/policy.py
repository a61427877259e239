"""``if_exists`` for image metadata: from what an image (or its sidecar) holds and a new caption, the properties
to set. Pure, so the embedded writer and the sidecar writer decide the same way.

The description fields are kept in sync (the Metadata Working Group rule): XMP ``dc:description``, IPTC
``Caption-Abstract`` and EXIF ``ImageDescription`` either all stay as they are or all get the new text.

- ``skip`` (default): a target that holds a description is left untouched, keywords and alt text included.
- ``overwrite``: description, alt text and keywords are replaced by ours (other languages of the
  description are dropped: they would no longer say the same thing).
- ``append``: our caption is added after the existing description (its ``x-default`` text); keywords are
  merged; an existing alt text is kept.

Where no description is stored, ours is written, keywords are merged with any already there, and an existing
alt text is kept. Camera boilerplate ("OLYMPUS DIGITAL CAMERA") counts as no description. The marker is written
whenever the description is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from llava_edge.photos.caption_text import Action, IfExists, compose, is_placeholder
from llava_edge.photos.xmp_packet import Marker, XmpFields, as_lang_alt


@dataclass(frozen=True)
class Existing:
    """The caption-related metadata a file holds now."""

    description: dict[str, str] = field(default_factory=dict)
    """XMP ``dc:description`` alternatives (language -> text)."""
    mirrors: tuple[str, ...] = ()
    """IPTC ``Caption-Abstract`` and EXIF ``ImageDescription``, those that are present."""
    alt_text: dict[str, str] = field(default_factory=dict)
    keywords: tuple[str, ...] = ()
    """XMP ``dc:subject`` and IPTC ``Keywords`` together, in order, without repeats."""
    marker: Marker | None = None

    def caption(self) -> str | None:
        """The description a reader shows: XMP ``x-default`` (or its only language), else IPTC, else EXIF;
        ``None`` when there is none that describes anything."""
        candidates = [self.description.get("x-default"), *self.description.values(), *self.mirrors]
        return next((text for text in candidates if not is_placeholder(text)), None)


@dataclass(frozen=True)
class Update:
    """What to write into one target."""

    action: Action
    fields: XmpFields = field(default_factory=XmpFields)
    """The XMP properties to set (final values); empty when nothing changes."""
    caption: str | None = None
    """The description to mirror into IPTC and EXIF; ``None`` leaves them."""
    keywords: tuple[str, ...] | None = None
    """The keywords to store in IPTC as well; ``None`` leaves them."""


def plan_update(
    existing: Existing,
    caption: str,
    *,
    keywords: Sequence[str] | None,
    alt_text: str,
    marker: Marker | None,
    if_exists: IfExists,
) -> Update:
    """Decide what to write, following the rules in this module's docstring."""
    current = existing.caption()
    text, action = compose(current, caption, if_exists)
    if text is None:
        return Update(action)
    if action == "appended":
        description = as_lang_alt(existing.description) | {"x-default": text}
    else:
        description = {"x-default": text}
    if action == "overwritten" or not existing.alt_text:
        new_alt: str | dict[str, str] | None = alt_text
    else:
        new_alt = None
    new_keywords = None
    if keywords is not None:
        ours = _unique(keywords)
        new_keywords = ours if action == "overwritten" else _unique([*existing.keywords, *ours])
    fields = XmpFields(description=as_lang_alt(description), keywords=new_keywords, alt_text=new_alt, marker=marker)
    return Update(action, fields, text, new_keywords)


def _unique(keywords: Sequence[str]) -> tuple[str, ...]:
    """Keywords stripped, blanks dropped, repeats (ignoring case) dropped, first spelling kept."""
    seen: set[str] = set()
    kept = []
    for keyword in keywords:
        cleaned = " ".join(keyword.split())
        if cleaned and cleaned.casefold() not in seen:
            seen.add(cleaned.casefold())
            kept.append(cleaned)
    return tuple(kept)
