"""The in-memory XMP packet: well-formed RDF with exactly the properties set, readable by exiftool."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from support.tools import exiftool

from llava_edge.photos.xmp_packet import DC, IPTC_CORE, LLAVA_EDGE, RDF, Marker, XmpFields, build_packet

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def _description(packet: bytes) -> ET.Element:
    root = ET.fromstring(packet.decode().split("?>", 1)[1].rsplit("<?xpacket", 1)[0])
    found = root.find(f"{{{RDF}}}RDF/{{{RDF}}}Description")
    assert found is not None
    return found


def test_packet_holds_the_caption_keywords_alt_text_and_marker() -> None:
    marker = Marker("Q4_K_M", "Describe <this> & that.", "sha256-pixels:ab")
    packet = build_packet(XmpFields("A dog & a <cat>", ("dog", "cat"), {"de": "Ein Hund", "x-default": "Dog"}, marker))
    assert packet.startswith(b'<?xpacket begin="\xef\xbb\xbf"') and packet.rstrip().endswith(b'<?xpacket end="w"?>')
    description = _description(packet)
    items = description.findall(f"{{{DC}}}description/{{{RDF}}}Alt/{{{RDF}}}li")
    assert [(li.get(XML_LANG), li.text) for li in items] == [("x-default", "A dog & a <cat>")]
    subjects = description.findall(f"{{{DC}}}subject/{{{RDF}}}Bag/{{{RDF}}}li")
    assert [li.text for li in subjects] == ["dog", "cat"]
    alt = description.findall(f"{{{IPTC_CORE}}}AltTextAccessibility/{{{RDF}}}Alt/{{{RDF}}}li")
    assert [(li.get(XML_LANG), li.text) for li in alt] == [("x-default", "Dog"), ("de", "Ein Hund")]
    assert description.findtext(f"{{{LLAVA_EDGE}}}prompt") == "Describe <this> & that."
    assert description.findtext(f"{{{LLAVA_EDGE}}}contentHash") == "sha256-pixels:ab"


def test_packet_leaves_out_what_is_not_set_and_drops_characters_xml_cannot_carry() -> None:
    packet = build_packet(XmpFields(description="bell\x07 and \ud800 surrogate"), wrapper=False)
    assert not packet.startswith(b"<?xpacket")
    description = _description(b"?>" + packet + b"<?xpacket")
    assert description.findtext(f"{{{DC}}}description/{{{RDF}}}Alt/{{{RDF}}}li") == "bell and  surrogate"
    assert description.find(f"{{{DC}}}subject") is None and description.find(f"{{{LLAVA_EDGE}}}model") is None


def test_language_tags_are_checked() -> None:
    with pytest.raises(ValueError, match="language tag"):
        build_packet(XmpFields(description={'en" evil="1': "x"}))


def test_exiftool_reads_a_packet_as_a_sidecar(tmp_path: Path) -> None:
    sidecar = tmp_path / "kite.xmp"
    sidecar.write_bytes(build_packet(XmpFields("Ein Drache über dem Feld.", ("kite", "field"), "A kite.",
                                               Marker("Q4_K_M", "Describe.", "sha256-pixels:00"))))
    tags = exiftool(sidecar)[0]
    assert tags["XMP-dc:Description"] == "Ein Drache über dem Feld."
    assert tags["XMP-dc:Subject"] == ["kite", "field"]
    assert tags["XMP-iptcCore:AltTextAccessibility"] == "A kite."
    assert tags["XMP-llavaedge:Model"] == "Q4_K_M"
    assert tags["XMP-llavaedge:ContentHash"] == "sha256-pixels:00"
    assert "Warning" not in tags and "Error" not in tags
