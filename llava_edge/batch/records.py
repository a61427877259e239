"""What a batch is made of: an image to caption (``ImageItem``), the outcome for it (``BatchRecord``, a Runware
response or error item keyed by the image name and the sha256 of its bytes, so a rerun can skip what an output
already holds), what a run did (``BatchSummary``), and how names are written.

A file name that is not valid UTF-8 (``b"caf\\xe9.png"`` on Linux) is the ``str`` Python gives for it,
each undecodable byte a lone surrogate (``os.fsdecode``: ``"caf\\udce9.png"``). ``json_text`` writes it
as the JSON escape ``\\udce9``, so the text stays valid UTF-8 and ``json.loads`` gives the exact name
back (and ``os.fsencode`` the exact bytes). ``printable_name`` writes it ``caf\\xe9.png`` for people
(CSV cells, the console, messages).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import asdict, dataclass, fields
from typing import Any

from llava_edge.generation import Timings
from llava_edge.images import ImageInput

_SURROGATE = re.compile("[\ud800-\udfff]")
_TIMING_FIELDS = frozenset(field.name for field in fields(Timings))


@dataclass(frozen=True)
class ImageItem:
    """One image of a batch: ``name`` goes in the record and the resume key; ``source`` is what is read
    (a path, URL, data URI or the bytes themselves)."""

    name: str
    source: ImageInput


@dataclass(frozen=True)
class BatchRecord:
    """The outcome for one image: a Runware response item, or a Runware error item."""

    image: str
    """The image's name; a file name that is not UTF-8 keeps its bytes as lone surrogates."""
    sha256: str | None
    """Of the encoded image bytes; ``None`` when they could not be read."""
    model: str | None = None
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    finish_reason: str | None = None
    timings: Timings | None = None
    skipped: bool = False
    """Already in the output of an earlier run; nothing was computed or written."""
    photo: dict[str, Any] | None = None
    """Where the caption was written besides the output (``PhotoRecord.to_json``); with ``--write-metadata`` and
    friends only. ``sha256`` is then of the image as the run left it, so that a rerun finds it done."""
    data: Any = None
    """With a schema: the answer's parsed JSON value (``None`` when it was cut by max_tokens)."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str | None:
        return self.response["text"] if self.response is not None else None

    @property
    def key(self) -> tuple[str, str]:
        """The resume key: image name and content hash ("" when the image could not be read)."""
        return self.image, self.sha256 or ""

    def to_json(self) -> dict[str, Any]:
        """The output record: ``{image, sha256, model, response, finishReason, timings[, data]}`` or
        ``{image, sha256, error}`` (``data``: the parsed answer, in runs with a schema)."""
        record: dict[str, Any] = {"image": self.image, "sha256": self.sha256}
        if self.error is not None:
            return {**record, "error": self.error}
        timings = asdict(self.timings) if self.timings is not None else None
        photo = {"photo": self.photo} if self.photo is not None else {}
        data = {"data": self.data} if self.data is not None else {}
        return {**record, "model": self.model, "response": self.response, "finishReason": self.finish_reason,
                "timings": timings, **data, **photo}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> BatchRecord:
        """The inverse of ``to_json``; timing fields this version does not know are dropped."""
        timings = record.get("timings")
        return cls(
            image=record["image"], sha256=record.get("sha256"), model=record.get("model"),
            response=record.get("response"), error=record.get("error"), finish_reason=record.get("finishReason"),
            timings=Timings(**{k: v for k, v in timings.items() if k in _TIMING_FIELDS}) if timings else None,
            photo=record.get("photo"), data=record.get("data"),
        )


@dataclass
class BatchSummary:
    """What a batch run did."""

    captioned: int = 0
    failed: int = 0
    skipped: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    """Stopped by Ctrl-C or SIGTERM; what was written is complete, and a rerun resumes."""

    def count(self, record: BatchRecord) -> None:
        if record.skipped:
            self.skipped += 1
        elif record.ok:
            self.captioned += 1
        else:
            self.failed += 1

    @property
    def images_per_s(self) -> float:
        done = self.captioned + self.failed
        return done / self.elapsed_s if self.elapsed_s > 0 else 0.0


def task_uuid_for(name: str, sha256: str) -> str:
    """A UUID v4-format taskUUID derived from the image name and content (stable across runs)."""
    digest = hashlib.sha256(f"{name}\0{sha256}".encode("utf-8", "surrogatepass")).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def json_text(value: Any) -> str:
    """``value`` as one line of JSON, non-ASCII text as it is, and lone surrogates (the undecodable bytes
    of a file name) as ``\\udcXX`` escapes: valid UTF-8 that ``json.loads`` turns back into the same value."""
    text = json.dumps(value, ensure_ascii=False)  # a surrogate can only be inside a string here
    return _SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def printable_name(name: str) -> str:
    """``name`` as valid text, as ``ls -b`` shows it: each byte of a file name that is not UTF-8 (a lone
    surrogate ``\\udcNN``) as ``\\xNN``, any other lone surrogate as ``\\uNNNN``; other names unchanged."""
    return _SURROGATE.sub(_escape_surrogate, name)


def _escape_surrogate(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"
