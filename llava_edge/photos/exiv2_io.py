"""The only importer of exiv2 (python-exiv2, the ``photos`` extra): open an image or sidecar held in memory,
read the caption fields it has, set ours, and serialize it again.

Images are opened from bytes, never by path: exiv2 then never touches the file (the caller writes the result
atomically), file names that are not UTF-8 need no care, and no path can be taken for a URL (this libexiv2
can fetch http). exiv2 is not thread-safe (its XMP toolkit keeps global state), so every call holds ``LOCK``.

exiv2 reports damage it skips as log messages (python-exiv2 forwards them to the ``exiv2`` logger) and would
then write the file without the part it skipped. Reading therefore collects those messages: an error, or a
warning that XMP could not be decoded, makes the metadata corrupt and nothing is written.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from llava_edge.errors import CorruptMetadataError, MissingExtraError, PhotoMetadataError
from llava_edge.photos.policy import Existing, Update
from llava_edge.photos.xmp_packet import LLAVA_EDGE, LLAVA_EDGE_PREFIX, MARKER_PROPERTIES, Marker

LOCK = threading.RLock()
IIM_CAPTION_BYTES = 2000
"""IPTC IIM's limit for Caption-Abstract (2:120); longer captions are cut there, at a character boundary."""
IIM_KEYWORD_BYTES = 64
"""IPTC IIM's limit for one Keywords (2:25) entry."""
IIM_UTF8 = "\x1b%G"
"""CodedCharacterSet (1:90) value that declares the IIM strings UTF-8."""

_DESCRIPTION = "Xmp.dc.description"
_SUBJECT = "Xmp.dc.subject"
_ALT_TEXT = "Xmp.iptc.AltTextAccessibility"
_IIM_CAPTION = "Iptc.Application2.Caption"
_IIM_KEYWORDS = "Iptc.Application2.Keywords"
_IIM_CHARSET = "Iptc.Envelope.CharacterSet"
_EXIF_DESCRIPTION = "Exif.Image.ImageDescription"
_MARKER_KEY = f"Xmp.{LLAVA_EDGE_PREFIX}."


@dataclass
class Opened:
    """An image or sidecar opened by exiv2 from ``data`` (kept here: exiv2 reads from that buffer)."""

    image: Any
    data: bytes
    kind: str
    """``JPEG``, ``PNG``, ``WEBP``, ``TIFF``, ``HEIF``, ``AVIF``, ``XMP`` or another upper-case name."""


@functools.cache
def module() -> Any:
    """python-exiv2, with the llava-edge XMP namespace registered.

    Raises:
        MissingExtraError: python-exiv2 is not installed.
    """
    try:
        exiv2 = import_module("exiv2")
    except ImportError as err:
        raise MissingExtraError(
            "Writing image metadata and XMP sidecars needs python-exiv2: pip install 'llava-edge[photos]'."
        ) from err
    with LOCK:
        exiv2.XmpProperties.registerNs(LLAVA_EDGE, LLAVA_EDGE_PREFIX)
    return exiv2


def open_bytes(data: bytes, name: str, *, advice: str = "") -> Opened:
    """Open and read the metadata of an image or XMP sidecar held in ``data``. ``advice`` ends the message of
    a ``CorruptMetadataError`` (by default: how to repair an image's metadata, or write a sidecar).

    Raises:
        CorruptMetadataError: exiv2 cannot parse the metadata, or skipped a damaged part of it.
        UnsupportedMetadataFormatError is left to the caller: ``kind`` says what the file is.
    """
    exiv2 = module()
    with LOCK, _exiv2_messages() as messages:
        try:
            image = exiv2.ImageFactory.open(data)
            image.readMetadata()
        except exiv2.Exiv2Error as err:
            raise CorruptMetadataError(_corrupt(name, _message(err), advice)) from err
    problems = [record.getMessage() for record in messages if _is_damage(record)]
    if problems:
        raise CorruptMetadataError(_corrupt(name, "; ".join(problems[:3]), advice))
    return Opened(image, data, _kind(exiv2, image))


def read_existing(opened: Opened, *, iim: bool, exif: bool) -> Existing:
    """The caption fields ``opened`` holds: XMP always, IPTC IIM and EXIF where asked."""
    with LOCK:
        xmp = opened.image.xmpData()
        description = _lang_alt(xmp, _DESCRIPTION)
        alt_text = _lang_alt(xmp, _ALT_TEXT)
        keywords = _array(xmp, _SUBJECT)
        mirrors: list[str] = []
        if iim:
            iptc = opened.image.iptcData()
            mirrors += [datum.toString() for datum in iptc if datum.key() == _IIM_CAPTION]
            keywords += [datum.toString() for datum in iptc if datum.key() == _IIM_KEYWORDS]
        if exif:
            exif_data = opened.image.exifData()
            mirrors += [datum.toString() for datum in exif_data if datum.key() == _EXIF_DESCRIPTION]
        return Existing(description, tuple(mirrors), alt_text, tuple(dict.fromkeys(keywords)), _marker(xmp))


def apply(opened: Opened, update: Update, packet: bytes, *, iim: bool, exif: bool) -> None:
    """Set the properties of ``packet`` (from ``xmp_packet.build_packet``) in ``opened``'s XMP, replacing
    those already there, and mirror the description and keywords into IPTC IIM and EXIF where asked."""
    exiv2 = module()
    source = open_bytes(packet, "the built XMP packet")
    with LOCK:
        xmp = opened.image.xmpData()
        new = list(source.image.xmpData())
        replaced = {datum.key() for datum in new}
        if update.fields.marker is not None:
            _erase(xmp, lambda key: key.startswith(_MARKER_KEY))
        _erase(xmp, replaced.__contains__)
        for datum in new:
            xmp.add(datum)
        if iim:
            _mirror_iim(exiv2, opened.image.iptcData(), update)
        if exif and update.caption is not None:
            opened.image.exifData()[_EXIF_DESCRIPTION] = update.caption.replace("\x00", "")


def serialize(opened: Opened, name: str) -> bytes:
    """Write the metadata into the in-memory copy and return the whole file.

    Raises:
        PhotoMetadataError: exiv2 could not write it.
    """
    exiv2 = module()
    with LOCK:
        try:
            opened.image.writeMetadata()
            io = opened.image.io()
            io.open()
            try:
                return bytes(io.mmap())
            finally:
                io.munmap()
                io.close()
        except exiv2.Exiv2Error as err:
            raise PhotoMetadataError(f"exiv2 could not write the metadata of {name}: {_message(err)}. It is left as "
                                     "it was; write an XMP sidecar instead (--xmp-sidecar).") from err


def _mirror_iim(exiv2: Any, iptc: Any, update: Update) -> None:
    if update.caption is None and update.keywords is None:
        return
    iptc[_IIM_CHARSET] = IIM_UTF8
    if update.caption is not None:
        iptc[_IIM_CAPTION] = _cut_utf8(update.caption, IIM_CAPTION_BYTES)
    if update.keywords is not None:
        _erase(iptc, lambda key: key == _IIM_KEYWORDS)
        key = exiv2.IptcKey(_IIM_KEYWORDS)
        for keyword in update.keywords:
            iptc.add(key, exiv2.StringValue(_cut_utf8(keyword, IIM_KEYWORD_BYTES)))


def _erase(data: Any, doomed: Callable[[str], bool]) -> None:
    """Remove every datum of ``data`` (XmpData or IptcData) whose key ``doomed`` accepts."""
    for key in {datum.key() for datum in data if doomed(datum.key())}:
        while key in data:
            del data[key]


def _lang_alt(xmp: Any, key: str) -> dict[str, str]:
    for datum in xmp:
        if datum.key() == key:
            value = datum.value()
            if datum.typeName() == "LangAlt":
                return {str(language): str(text) for language, text in value.items()}
            return {"x-default": datum.toString()}
    return {}


def _array(xmp: Any, key: str) -> list[str]:
    for datum in xmp:
        if datum.key() == key:
            value = datum.value()
            return [value.toString(index) for index in range(value.count())]
    return []


def _marker(xmp: Any) -> Marker | None:
    found = {datum.key()[len(_MARKER_KEY):]: datum.toString() for datum in xmp if datum.key().startswith(_MARKER_KEY)}
    if not {"model", "prompt", "contentHash"} <= found.keys():
        return None
    values = {name: found.get(name, "") for name in MARKER_PROPERTIES}
    return Marker(values["model"], values["prompt"], values["contentHash"], values["version"])


def _kind(exiv2: Any, image: Any) -> str:
    kinds = {exiv2.ImageType.jpeg: "JPEG", exiv2.ImageType.png: "PNG", exiv2.ImageType.webp: "WEBP",
             exiv2.ImageType.tiff: "TIFF", exiv2.ImageType.xmp: "XMP"}
    kind = kinds.get(image.imageType())
    if kind is not None:
        return kind
    mime = str(image.mimeType()).lower()
    if mime in ("image/heic", "image/heif"):
        return "HEIF"
    return mime.rsplit("/", 1)[-1].removeprefix("x-").upper() or "UNKNOWN"


def _message(err: Exception) -> str:
    return str(getattr(err, "message", "") or err)


def _cut_utf8(text: str, limit: int) -> str:
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def _is_damage(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or "decode XMP" in record.getMessage()


def _corrupt(name: str, detail: str, advice: str) -> str:
    advice = advice or ("Repair it (exiftool -all= -tagsfromfile @ -all:all -unsafe -icc_profile FILE) or write an "
                        "XMP sidecar instead (--xmp-sidecar).")
    return (f"The metadata of {name} is corrupt ({detail}); nothing was written, since exiv2 would drop what it "
            f"cannot read. {advice}")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def _exiv2_messages() -> Iterator[list[logging.LogRecord]]:
    """The warnings and errors exiv2 logs while the block runs."""
    handler = _Collect()
    logger = logging.getLogger("exiv2")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
