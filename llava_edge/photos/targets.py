"""Where a caption goes (``Targets``), how its text is shaped for datasets (``TextOptions``), and what happened
(``PhotoRecord``, one ``TargetResult`` per target). Plain values: no I/O."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llava_edge.photos.caption_text import Action

XmpStyle = Literal["adobe", "darktable"]
"""Sidecar names: ``adobe`` -> ``photo.xmp`` (Lightroom, Capture One, IMatch), ``darktable`` -> ``photo.jpg.xmp``
(darktable, digiKam; never shared by ``photo.jpg`` and ``photo.heic``)."""
KohyaKey = Literal["stem", "path"]
"""kohya metadata keys: the image's stem (``merge_captions_to_metadata.py``'s default) or its path as given
(its ``--full_path``)."""
Target = Literal["metadata", "xmp_sidecar", "text_sidecar", "metadata_jsonl", "kohya_json"]
XMP_STYLES: tuple[XmpStyle, ...] = ("adobe", "darktable")


@dataclass(frozen=True)
class Targets:
    """The places one caption is written to; several may be on at once."""

    metadata: bool = False
    """Into the image: XMP, IPTC IIM (JPEG, TIFF) and EXIF. HEIC/HEIF and AVIF go to an XMP sidecar instead."""
    xmp_sidecar: bool = False
    """An XMP sidecar named by ``xmp_style``, merged into one that exists."""
    xmp_style: XmpStyle = "adobe"
    text_sidecar: str | None = None
    """Extension of a plain-text caption file beside the image (``.txt``, ``.caption``); ``None``: none."""
    metadata_jsonl: Path | None = None
    """A Hugging Face ``imagefolder`` ``metadata.jsonl``; images must be in its folder or below."""
    jsonl_column: str = "text"
    kohya_json: Path | None = None
    """A kohya-style metadata JSON, ``{"<key>": {"caption": ...}}``."""
    kohya_key: KohyaKey = "stem"

    def __post_init__(self) -> None:
        if self.xmp_style not in XMP_STYLES:
            raise ValueError(f"xmp_style must be one of {', '.join(XMP_STYLES)}, not {self.xmp_style!r}.")
        if self.text_sidecar is not None and not _is_extension(self.text_sidecar):
            raise ValueError(f"text_sidecar must be an extension such as .txt or .caption, not {self.text_sidecar!r}.")
        if self.text_sidecar is not None and self.text_sidecar.lower() == ".xmp":
            raise ValueError("text_sidecar cannot be .xmp: that name belongs to XMP sidecars; use .txt or .caption.")
        if self.kohya_key not in ("stem", "path"):
            raise ValueError(f"kohya_key must be stem or path, not {self.kohya_key!r}.")
        if not self.jsonl_column or self.jsonl_column == "file_name":
            raise ValueError("jsonl_column must name a column other than file_name (text, prompt, caption, ...).")

    @property
    def xmp(self) -> bool:
        """Whether any target writes XMP (and so needs exiv2 and a marker)."""
        return self.metadata or self.xmp_sidecar

    @property
    def datasets(self) -> bool:
        return self.text_sidecar is not None or self.metadata_jsonl is not None or self.kohya_json is not None

    def any(self) -> bool:
        return self.xmp or self.datasets


@dataclass(frozen=True)
class TextOptions:
    """How caption text is shaped. ``strip_preamble`` applies to every target; ``prefix`` and ``suffix``
    (trigger words) only to the dataset targets (text sidecar, ``metadata.jsonl``, kohya JSON)."""

    prefix: str = ""
    suffix: str = ""
    strip_preamble: bool = False


@dataclass(frozen=True)
class TargetResult:
    """What happened at one target."""

    target: Target
    path: Path
    """The file written, or that would have been."""
    action: Action
    detail: str = ""
    """Why, where it is not obvious (e.g. HEIC metadata written to a sidecar)."""


@dataclass(frozen=True)
class PhotoRecord:
    """The outcome of ``write_caption`` for one image."""

    image: Path
    results: tuple[TargetResult, ...]
    content_hash: str = ""
    """The pixels' hash recorded in the marker (``pixels.pixel_hash``); empty when no XMP was written."""

    @property
    def changed(self) -> bool:
        """Whether any file was written."""
        return any(result.action in ("written", "overwritten", "appended") for result in self.results)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings; names that are not UTF-8 keep ``\\udcNN`` escapes)."""
        return {
            "image": os.fspath(self.image),
            "contentHash": self.content_hash,
            "targets": [
                {"target": result.target, "path": os.fspath(result.path), "action": result.action,
                 **({"detail": result.detail} if result.detail else {})}
                for result in self.results
            ],
        }


def _is_extension(value: str) -> bool:
    return value.startswith(".") and len(value) > 1 and "/" not in value and os.sep not in value and value != ".."
