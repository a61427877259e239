"""XMP sidecars: names, merging into an existing sidecar without losing its fields, if_exists, damaged
sidecars, and HEIC/AVIF, whose metadata goes to a sidecar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.photos import CAPTION, MARKER, PhotoFactory
from support.tools import exiftool

from llava_edge.errors import CorruptMetadataError, ReadOnlyImageError
from llava_edge.photos.sidecar import sidecar_path
from llava_edge.photos.targets import Targets
from llava_edge.photos.writer import already_described, caption_packet, write_caption
from llava_edge.photos.xmp_packet import Marker

SIDECAR = Targets(xmp_sidecar=True)
DARKTABLE = Targets(xmp_sidecar=True, xmp_style="darktable")
EXISTING = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
    xmlns:darktable="http://darktable.sf.net/"
    xmlns:acme="http://example.com/acme/1.0/"
    xmp:Rating="3"
    xmpMM:DerivedFrom="kite.jpg"
    darktable:xmp_version="5"
    darktable:history_end="2"
    acme:Reviewed="yes">
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">Kite day</rdf:li></rdf:Alt></dc:title>
   <dc:creator><rdf:Seq><rdf:li>Ada</rdf:li><rdf:li>Grace</rdf:li></rdf:Seq></dc:creator>
   <dc:subject><rdf:Bag><rdf:li>holiday</rdf:li></rdf:Bag></dc:subject>
   <lr:hierarchicalSubject><rdf:Bag><rdf:li>places|field</rdf:li></rdf:Bag></lr:hierarchicalSubject>
   <darktable:history>
    <rdf:Seq>
     <rdf:li darktable:operation="exposure" darktable:enabled="1" darktable:modversion="6" darktable:params="00ff"/>
     <rdf:li darktable:operation="colorin" darktable:enabled="0" darktable:modversion="7" darktable:params="gz48"/>
    </rdf:Seq>
   </darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def _fields(path: Path) -> dict[str, Any]:
    """exiftool's tags of a file, without those that describe the file itself."""
    return {key: value for key, value in exiftool(path)[0].items()
            if not key.startswith(("System:", "File:", "ExifTool:")) and key != "SourceFile"}


def test_sidecar_names_follow_the_style() -> None:
    assert sidecar_path(Path("a/kite.jpg"), "adobe") == Path("a/kite.xmp")
    assert sidecar_path(Path("a/kite.jpg"), "darktable") == Path("a/kite.jpg.xmp")
    assert sidecar_path(Path("a/kite"), "adobe") == Path("a/kite.xmp")


@pytest.mark.parametrize(("targets", "name"), [(SIDECAR, "kite.xmp"), (DARKTABLE, "kite.jpg.xmp")])
def test_a_new_sidecar_holds_every_field_and_the_image_is_untouched(
    photo: PhotoFactory, targets: Targets, name: str
) -> None:
    image = photo("JPEG")
    before = image.read_bytes()

    record = write_caption(image, CAPTION, ["kite"], targets=targets, marker=MARKER)

    sidecar = image.parent / name
    assert [(r.target, r.path, r.action) for r in record.results] == [("xmp_sidecar", sidecar, "written")]
    assert image.read_bytes() == before
    tags = _fields(sidecar)
    assert tags["XMP-dc:Description"] == CAPTION and tags["XMP-dc:Subject"] == ["kite"]
    assert tags["XMP-iptcCore:AltTextAccessibility"] == CAPTION
    assert tags["XMP-llavaedge:ContentHash"] == record.content_hash
    assert already_described(image, MARKER, targets=targets, if_exists="overwrite")


def test_the_download_packet_is_the_new_sidecar(photo: PhotoFactory) -> None:
    image = photo("JPEG")
    record = write_caption(image, CAPTION, ["kite"], targets=SIDECAR, marker=MARKER)
    stamped = Marker(MARKER.model, MARKER.prompt, record.content_hash)
    assert caption_packet(CAPTION, ["kite"], marker=stamped) == image.with_suffix(".xmp").read_bytes()


def test_merging_keeps_every_field_of_an_existing_sidecar(photo: PhotoFactory) -> None:
    image = photo("JPEG")
    sidecar = image.with_suffix(".xmp")
    sidecar.write_text(EXISTING)
    before = _fields(sidecar)
    assert before["XMP-darktable:History"][1]["Operation"] == "colorin"

    record = write_caption(image, CAPTION, ["kite"], targets=SIDECAR, marker=MARKER)

    assert record.results[0].action == "written"
    after = _fields(sidecar)
    changed = {"XMP-dc:Subject", "XMP-x:XMPToolkit"}
    assert {key: after.get(key) for key in before if key not in changed} == {
        key: value for key, value in before.items() if key not in changed
    }
    assert after["XMP-dc:Subject"] == ["holiday", "kite"]
    assert after["XMP-dc:Description"] == CAPTION and after["XMP-llavaedge:Model"] == "Q4_K_M"


def test_skip_leaves_a_described_sidecar_byte_identical_and_overwrite_replaces_ours(photo: PhotoFactory) -> None:
    image = photo("PNG")
    sidecar = image.with_suffix(".xmp")
    sidecar.write_text(EXISTING.replace("<dc:title>", '<dc:description><rdf:Alt><rdf:li xml:lang="x-default">'
                                                      "Hand-written.</rdf:li></rdf:Alt></dc:description><dc:title>"))
    before = sidecar.read_bytes()

    assert write_caption(image, CAPTION, targets=SIDECAR).results[0].action == "skipped"
    assert sidecar.read_bytes() == before
    assert already_described(image, MARKER, targets=SIDECAR)

    assert write_caption(image, CAPTION, targets=SIDECAR, if_exists="overwrite").results[0].action == "overwritten"
    after = _fields(sidecar)
    assert after["XMP-dc:Description"] == CAPTION and after["XMP-dc:Title"] == "Kite day"


@pytest.mark.parametrize("content", ["<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF", "just some notes\n"])
def test_a_damaged_sidecar_gives_a_typed_error_and_stays_byte_identical(photo: PhotoFactory, content: str) -> None:
    image = photo("JPEG")
    sidecar = image.with_suffix(".xmp")
    sidecar.write_text(content)

    with pytest.raises(CorruptMetadataError, match="move it aside"):
        write_caption(image, CAPTION, targets=SIDECAR)

    assert sidecar.read_text() == content


def test_an_empty_sidecar_is_replaced_and_a_read_only_one_refused(photo: PhotoFactory) -> None:
    image = photo("JPEG")
    sidecar = image.with_suffix(".xmp")
    sidecar.write_bytes(b"")
    assert write_caption(image, CAPTION, targets=SIDECAR).results[0].action == "written"

    sidecar.write_text(EXISTING)
    sidecar.chmod(0o444)
    with pytest.raises(ReadOnlyImageError):
        write_caption(image, CAPTION, targets=SIDECAR)
    assert sidecar.read_text() == EXISTING


@pytest.mark.parametrize(
    ("fmt", "style", "name"), [("HEIF", "adobe", "kite.xmp"), ("AVIF", "darktable", "kite.avif.xmp")]
)
def test_heic_and_avif_metadata_goes_to_a_sidecar_and_the_record_says_so(
    photo: PhotoFactory, fmt: str, style: str, name: str
) -> None:
    image = photo(fmt)
    before = image.read_bytes()
    targets = Targets(metadata=True, xmp_style=style)  # type: ignore[arg-type]

    record = write_caption(image, CAPTION, ["kite"], targets=targets, marker=MARKER)

    (result,) = record.results
    assert (result.target, result.path, result.action) == ("metadata", image.parent / name, "written")
    assert "sidecar" in result.detail and fmt in result.detail
    assert image.read_bytes() == before
    tags = _fields(image.parent / name)
    assert tags["XMP-dc:Description"] == CAPTION and tags["XMP-llavaedge:ContentHash"].startswith("sha256-pixels:")
    assert already_described(image, MARKER, targets=targets, if_exists="overwrite")
    other_style = Targets(metadata=True, xmp_style="darktable" if style == "adobe" else "adobe")
    assert not already_described(image, MARKER, targets=other_style, if_exists="overwrite")
