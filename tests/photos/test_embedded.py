"""Captions written into JPEG, PNG, WebP and TIFF: every field read back by exiftool, pixels and other metadata
kept, if_exists, file times, and files that cannot be written left byte-identical with a typed error."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.photos import CAPTION, IN_PLACE, MARKER, METADATA, PhotoFactory, decoded
from support.tools import EXIFTOOL_INSTALL, exiftool, require_tool

from llava_edge.errors import CorruptMetadataError, ReadOnlyImageError, UnsupportedMetadataFormatError
from llava_edge.photos.files import TEMP_SUFFIX
from llava_edge.photos.writer import write_caption

UNICODE = "Ein Drache über dem Feld — 凧が飛ぶ."


def _exiftool_set(path: Path, *assignments: str) -> None:
    command = require_tool("exiftool", EXIFTOOL_INSTALL)
    subprocess.run([command, "-q", "-overwrite_original", *assignments, str(path)], check=True, timeout=60)


@pytest.mark.parametrize("fmt", IN_PLACE)
def test_every_field_reads_back_with_exiftool_and_other_metadata_is_kept(photo: PhotoFactory, fmt: str) -> None:
    path = photo(fmt)
    kept = ["-XMP-xmp:Rating=4", "-XMP-photoshop:City=Lyon", "-EXIF:GPSLatitude=45.76", "-EXIF:GPSLatitudeRef=N"]
    _exiftool_set(path, *kept, *(["-IPTC:City=Lyon"] if fmt in ("JPEG", "TIFF") else []))

    record = write_caption(path, UNICODE, ["kite", "field", "凧"], targets=METADATA, marker=MARKER,
                           alt_text="A kite.")

    assert [(r.target, r.action) for r in record.results] == [("metadata", "written")]
    tags = exiftool(path)[0]
    assert tags["XMP-dc:Description"] == UNICODE
    assert tags["XMP-dc:Subject"] == ["kite", "field", "凧"]
    assert tags["XMP-iptcCore:AltTextAccessibility"] == "A kite."
    assert tags["IFD0:ImageDescription"] == UNICODE
    assert tags["XMP-llavaedge:Model"] == "Q4_K_M"
    assert tags["XMP-llavaedge:Prompt"] == "Describe this image."
    assert tags["XMP-llavaedge:ContentHash"] == record.content_hash != ""
    if fmt in ("JPEG", "TIFF"):
        assert tags["IPTC:Caption-Abstract"] == UNICODE
        assert tags["IPTC:Keywords"] == ["kite", "field", "凧"]
        assert tags["IPTC:CodedCharacterSet"] == "UTF8"
        assert tags["IPTC:City"] == "Lyon"
    else:
        assert not any(key.startswith("IPTC:") for key in tags)
    assert (tags["IFD0:Make"], tags["IFD0:Model"]) == ("TestCam", "Model 7")
    assert tags["XMP-xmp:Rating"] == 4 and tags["XMP-photoshop:City"] == "Lyon"
    assert str(tags["GPS:GPSLatitude"]).startswith("45 deg 45")
    assert any(key.startswith("ICC") for key in tags), "the ICC profile was dropped"
    assert "Warning" not in tags and "Error" not in tags


@pytest.mark.parametrize("fmt", IN_PLACE)
def test_decoded_pixels_are_identical_before_and_after(photo: PhotoFactory, fmt: str) -> None:
    path = photo(fmt)
    before_bytes, before_pixels = path.read_bytes(), decoded(path)
    with Image.open(path) as image:
        icc = image.info.get("icc_profile")

    write_caption(path, CAPTION, ["kite"], targets=METADATA, marker=MARKER)

    assert path.read_bytes() != before_bytes
    np.testing.assert_array_equal(decoded(path), before_pixels)
    with Image.open(path) as image:
        assert image.info.get("icc_profile") == icc and icc
        assert image.getexif()[0x010F] == "TestCam"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(TEMP_SUFFIX)]


def test_skip_keeps_an_existing_description_and_leaves_the_file_byte_identical(photo: PhotoFactory) -> None:
    path = photo("JPEG")
    write_caption(path, "The first caption.", ["one"], targets=METADATA, marker=MARKER)
    before = path.read_bytes()

    record = write_caption(path, "A second caption.", ["two"], targets=METADATA, marker=MARKER)

    assert record.results[0].action == "skipped" and not record.changed
    assert path.read_bytes() == before


def test_camera_boilerplate_is_no_description(photo: PhotoFactory) -> None:
    path = photo("JPEG")
    _exiftool_set(path, "-EXIF:ImageDescription=OLYMPUS DIGITAL CAMERA         ")

    assert write_caption(path, CAPTION, targets=METADATA).results[0].action == "written"
    assert exiftool(path)[0]["IFD0:ImageDescription"] == CAPTION


def test_an_iptc_only_caption_counts_as_existing(photo: PhotoFactory) -> None:
    path = photo("TIFF")
    _exiftool_set(path, "-IPTC:Caption-Abstract=Written by Photos.app")
    before = path.read_bytes()

    assert write_caption(path, CAPTION, targets=METADATA).results[0].action == "skipped"
    assert path.read_bytes() == before


def test_overwrite_replaces_all_three_descriptions_and_the_keywords(photo: PhotoFactory) -> None:
    path = photo("JPEG")
    _exiftool_set(path, "-XMP-dc:Description=Old XMP", "-IPTC:Caption-Abstract=Old IIM",
                  "-EXIF:ImageDescription=Old EXIF", "-XMP-dc:Subject=old", "-IPTC:Keywords=old",
                  "-XMP-dc:Description-de=Alt")

    record = write_caption(path, CAPTION, ["kite"], targets=METADATA, if_exists="overwrite", marker=MARKER)

    assert record.results[0].action == "overwritten"
    tags = exiftool(path)[0]
    assert tags["XMP-dc:Description"] == tags["IPTC:Caption-Abstract"] == tags["IFD0:ImageDescription"] == CAPTION
    assert "XMP-dc:Description-de" not in tags
    assert _as_list(tags["XMP-dc:Subject"]) == _as_list(tags["IPTC:Keywords"]) == ["kite"]


def test_append_adds_ours_after_the_existing_text_once(photo: PhotoFactory) -> None:
    path = photo("JPEG")
    _exiftool_set(path, "-XMP-dc:Description=Grandma's garden, 1998.", "-XMP-dc:Subject=family",
                  "-XMP-iptcCore:AltTextAccessibility=Garden.")

    record = write_caption(path, CAPTION, ["kite"], targets=METADATA, if_exists="append", marker=MARKER)

    assert record.results[0].action == "appended"
    tags = exiftool(path)[0]
    assert tags["XMP-dc:Description"] == tags["IPTC:Caption-Abstract"] == f"Grandma's garden, 1998. {CAPTION}"
    assert tags["XMP-dc:Subject"] == ["family", "kite"] and tags["IPTC:Keywords"] == ["family", "kite"]
    assert tags["XMP-iptcCore:AltTextAccessibility"] == "Garden."
    before = path.read_bytes()
    again = write_caption(path, CAPTION, ["kite"], targets=METADATA, if_exists="append", marker=MARKER)
    assert again.results[0].action == "unchanged" and path.read_bytes() == before


@pytest.mark.parametrize("keep_times", [True, False])
def test_file_times_are_kept_on_request(photo: PhotoFactory, keep_times: bool) -> None:
    path = photo("PNG")
    old = 978_307_200_000_000_000  # 2001-01-01
    os.utime(path, ns=(old, old))

    write_caption(path, CAPTION, targets=METADATA, keep_times=keep_times)

    found = os.stat(path)
    assert (found.st_mtime_ns == old) is keep_times
    assert keep_times or found.st_mtime > time.time() - 60


def test_mode_is_kept_and_a_symlink_stays_a_symlink(photo: PhotoFactory, tmp_path: Path) -> None:
    target = photo("WEBP")
    target.chmod(0o640)
    link = tmp_path / "link.webp"
    link.symlink_to(target.name)

    write_caption(link, CAPTION, targets=METADATA)

    assert link.is_symlink() and stat.S_IMODE(target.stat().st_mode) == 0o640
    with Image.open(target) as image:
        assert b"A red kite" in image.info["xmp"]


def test_a_read_only_image_gives_a_typed_error_and_stays_byte_identical(photo: PhotoFactory) -> None:
    path = photo("JPEG")
    path.chmod(0o444)
    before = path.read_bytes()

    with pytest.raises(ReadOnlyImageError, match=r"read-only.*chmod u\+w") as caught:
        write_caption(path, CAPTION, targets=METADATA, marker=MARKER)

    assert isinstance(caught.value, PermissionError) and caught.value.code == "readOnlyImage"
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else [value]


def _with_app1(jpeg: bytes, payload: bytes) -> bytes:
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\x7f" + b"\x00" * 10, id="exif-ifd"),
        pytest.param(b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF", id="xmp"),
    ],
)
def test_corrupt_metadata_gives_a_typed_error_and_stays_byte_identical(
    photo: PhotoFactory, payload: bytes
) -> None:
    path = photo("JPEG")
    path.write_bytes(_with_app1(path.read_bytes(), payload))
    before = path.read_bytes()

    with pytest.raises(CorruptMetadataError, match=r"corrupt.*nothing was written") as caught:
        write_caption(path, CAPTION, targets=METADATA, marker=MARKER)

    assert caught.value.code == "invalidImageMetadata" and isinstance(caught.value, ValueError)
    assert path.read_bytes() == before


def test_a_truncated_metadata_segment_is_corrupt(photo: PhotoFactory) -> None:
    path = photo("JPEG")
    path.write_bytes(path.read_bytes()[:2] + b"\xff\xe1\xff\xffExif\x00\x00II")
    before = path.read_bytes()
    with pytest.raises(CorruptMetadataError):
        write_caption(path, CAPTION, targets=METADATA)
    assert path.read_bytes() == before


@pytest.mark.parametrize("fmt", ["GIF", "BMP"])
def test_formats_without_a_slot_give_a_typed_error(photo: PhotoFactory, fmt: str) -> None:
    path = photo(fmt)
    before = path.read_bytes()

    with pytest.raises(UnsupportedMetadataFormatError, match="--xmp-sidecar"):
        write_caption(path, CAPTION, targets=METADATA)

    assert path.read_bytes() == before


def test_a_multi_frame_tiff_keeps_every_page(photo: PhotoFactory, tmp_path: Path) -> None:
    path = tmp_path / "pages.tif"
    pages = [Image.fromarray(np.full((8, 8, 3), value, np.uint8)) for value in (10, 200)]
    buffer = io.BytesIO()
    pages[0].save(buffer, "TIFF", save_all=True, append_images=pages[1:])
    path.write_bytes(buffer.getvalue())

    write_caption(path, CAPTION, targets=METADATA)

    with Image.open(path) as image:
        assert getattr(image, "n_frames", 1) == 2
        image.seek(1)
        assert image.getpixel((0, 0)) == (200, 200, 200)
