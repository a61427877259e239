"""The XMP packet, built in memory: the one place that decides what a caption looks like in XMP.

The sidecar writer stores it as a new ``.xmp`` file, the embedded writer and the sidecar merge decode it
(through exiv2) and copy its properties over the ones they replace, and a web page can offer it as a
download (``writer.caption_packet``). It holds only the properties being set:

- ``dc:description``: language alternative, ``x-default`` first (the caption);
- ``dc:subject``: unordered bag (keywords);
- ``Iptc4xmpCore:AltTextAccessibility``: language alternative (IPTC Core 1.3, short alt text);
- the llava-edge marker, simple properties in its own namespace: ``llavaedge:model``, ``llavaedge:prompt``,
  ``llavaedge:contentHash`` (of the decoded pixels, see ``pixels``) and ``llavaedge:version``. A rerun that
  finds the same model, prompt and pixels skips the image.

Pure: no I/O and no exiv2, so building a packet needs no extra.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from llava_edge._version import __version__

DC = "http://purl.org/dc/elements/1.1/"
IPTC_CORE = "http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/"
LLAVA_EDGE = "http://ns.llava-edge.org/caption/1.0/"
"""The marker's namespace (a name, not a web address that has to resolve)."""
LLAVA_EDGE_PREFIX = "llavaedge"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
MARKER_PROPERTIES = ("model", "prompt", "contentHash", "version")
"""The marker's property names, in the order they are written."""

LangAlt = Mapping[str, str]
"""A language alternative: language tag (``x-default``, ``en-US``) to text."""

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""Characters XML 1.0 cannot carry (control characters, lone surrogates, U+FFFE/U+FFFF)."""
_LANGUAGE = re.compile(r"^(x-default|[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*)$")
_XPACKET_ID = "W5M0MpCehiHzreSzNTczkc9d"
_NAMESPACES = (("dc", DC), ("Iptc4xmpCore", IPTC_CORE), (LLAVA_EDGE_PREFIX, LLAVA_EDGE))


@dataclass(frozen=True)
class Marker:
    """What made a caption: written beside it in XMP, so a rerun with the same model and prompt on the same
    pixels can skip the image. ``content_hash`` is filled in by the writer; ``version`` is not compared."""

    model: str
    prompt: str
    content_hash: str = ""
    version: str = __version__

    def matches(self, other: Marker) -> bool:
        """Same model, prompt and content hash (a caption made by another llava-edge version still counts)."""
        return (self.model, self.prompt, self.content_hash) == (other.model, other.prompt, other.content_hash)

    def properties(self) -> dict[str, str]:
        """The marker as XMP property name -> value (``MARKER_PROPERTIES``)."""
        return {"model": self.model, "prompt": self.prompt, "contentHash": self.content_hash, "version": self.version}


@dataclass(frozen=True)
class XmpFields:
    """The properties a packet sets; ``None`` leaves a property out (a writer then keeps what the file has).

    A plain string for ``description`` or ``alt_text`` means ``{"x-default": text}``.
    """

    description: str | LangAlt | None = None
    keywords: tuple[str, ...] | None = None
    alt_text: str | LangAlt | None = None
    marker: Marker | None = None

    def is_empty(self) -> bool:
        return self.description is None and self.keywords is None and self.alt_text is None and self.marker is None


def build_packet(fields: XmpFields, *, wrapper: bool = True) -> bytes:
    """Serialize ``fields`` as a UTF-8 XMP packet (a standalone ``.xmp`` sidecar when ``wrapper`` is on).

    Characters XML cannot carry are dropped from every value.

    Raises:
        ValueError: a language tag is malformed.
    """
    body = []
    if fields.description is not None:
        body.append(_lang_alt("dc:description", fields.description))
    if fields.keywords is not None:
        items = "".join(f"     <rdf:li>{_text(keyword)}</rdf:li>\n" for keyword in fields.keywords)
        body.append(f"   <dc:subject>\n    <rdf:Bag>\n{items}    </rdf:Bag>\n   </dc:subject>\n")
    if fields.alt_text is not None:
        body.append(_lang_alt("Iptc4xmpCore:AltTextAccessibility", fields.alt_text))
    if fields.marker is not None:
        for name, value in fields.marker.properties().items():
            body.append(f"   <{LLAVA_EDGE_PREFIX}:{name}>{_text(value)}</{LLAVA_EDGE_PREFIX}:{name}>\n")
    namespaces = "".join(f'\n    xmlns:{prefix}="{uri}"' for prefix, uri in _NAMESPACES)
    packet = (
        f'<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk={quoteattr("llava-edge " + __version__)}>\n'
        f' <rdf:RDF xmlns:rdf="{RDF}">\n'
        f'  <rdf:Description rdf:about=""{namespaces}>\n'
        f"{''.join(body)}"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
    )
    if wrapper:
        packet = f'<?xpacket begin="\ufeff" id="{_XPACKET_ID}"?>\n{packet}<?xpacket end="w"?>\n'
    return packet.encode("utf-8")


def as_lang_alt(value: str | LangAlt) -> dict[str, str]:
    """A language alternative with ``x-default`` first (a string becomes the ``x-default`` text)."""
    alternatives = {"x-default": value} if isinstance(value, str) else dict(value)
    default = alternatives.pop("x-default", None)
    return ({"x-default": default} if default is not None else {}) | alternatives


def xml_safe(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot carry."""
    return _NOT_XML.sub("", text)


def _lang_alt(element: str, value: str | LangAlt) -> str:
    items = []
    for language, text in as_lang_alt(value).items():
        if not _LANGUAGE.match(language):
            raise ValueError(f"{language!r} is not a language tag (use x-default, en, en-US, ...).")
        items.append(f'     <rdf:li xml:lang="{language}">{_text(text)}</rdf:li>\n')
    return f"   <{element}>\n    <rdf:Alt>\n{''.join(items)}    </rdf:Alt>\n   </{element}>\n"


def _text(value: str) -> str:
    return escape(xml_safe(value))
