"""The per-image API: already_described (marker, pixels, if_exists), checks before anything is written, the
record, and the missing extra."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin
from support.photos import CAPTION, MARKER, METADATA, PhotoFactory, encode

from llava_edge.errors import (
    CorruptMetadataError,
    InvalidRequestError,
    MissingExtraError,
    ReadOnlyImageError,
    UnsupportedMetadataFormatError,
)
from llava_edge.photos import exiv2_io
from llava_edge.photos.targets import Targets
from llava_edge.photos.writer import already_described, write_caption
from llava_edge.photos.xmp_packet import Marker

EVERYTHING = Targets(metadata=True, xmp_sidecar=True, text_sidecar=".txt")


def test_a_rerun_skips_by_marker_model_prompt_and_pixels(photo: PhotoFactory, tmp_path: Path) -> None:
    image = photo("PNG")
    assert not already_described(image, MARKER, targets=METADATA, if_exists="overwrite")
    write_caption(image, CAPTION, targets=METADATA, if_exists="overwrite", marker=MARKER)

    assert already_described(image, MARKER, targets=METADATA, if_exists="overwrite")
    assert not already_described(image, Marker("Q8_0", MARKER.prompt), targets=METADATA, if_exists="overwrite")
    assert not already_described(image, Marker(MARKER.model, "Other."), targets=METADATA, if_exists="append")

    with Image.open(image) as described:  # the same metadata on other pixels is not described
        packet = described.info["XML:com.adobe.xmp"]
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", packet)
    other = tmp_path / "other.png"
    buffer = io.BytesIO()
    Image.open(io.BytesIO(encode("PNG", seed=9))).save(buffer, "PNG", pnginfo=info)
    other.write_bytes(buffer.getvalue())
    assert not already_described(other, MARKER, targets=METADATA, if_exists="overwrite")
    assert already_described(other, MARKER, targets=METADATA)  # skip: it holds a description


def test_already_described_needs_every_target(photo: PhotoFactory) -> None:
    image = photo("JPEG")
    write_caption(image, CAPTION, targets=Targets(metadata=True), marker=MARKER)

    assert already_described(image, MARKER, targets=METADATA)
    assert not already_described(image, MARKER, targets=EVERYTHING)
    write_caption(image, CAPTION, targets=EVERYTHING, marker=MARKER)
    assert already_described(image, MARKER, targets=EVERYTHING)
    assert not already_described(image, MARKER, targets=Targets())


def test_an_image_that_cannot_be_written_fails_before_anything_is_written(photo: PhotoFactory) -> None:
    image = photo("JPEG")
    image.chmod(0o444)

    with pytest.raises(ReadOnlyImageError):
        write_caption(image, CAPTION, targets=EVERYTHING, marker=MARKER)

    assert sorted(path.name for path in image.parent.iterdir()) == [image.name]


def test_corrupt_metadata_is_reported_before_captioning(photo: PhotoFactory) -> None:
    image = photo("JPEG")
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF"
    data = image.read_bytes()
    image.write_bytes(data[:2] + b"\xff\xe1" + (len(xmp) + 2).to_bytes(2, "big") + xmp + data[2:])

    with pytest.raises(CorruptMetadataError):
        already_described(image, MARKER, targets=EVERYTHING)
    with pytest.raises(UnsupportedMetadataFormatError):
        already_described(photo("GIF"), MARKER, targets=METADATA)
    assert not already_described(image.parent / "missing.jpg", MARKER, targets=METADATA)


def test_keywords_none_leaves_existing_keywords(photo: PhotoFactory) -> None:
    image = photo("JPEG")
    write_caption(image, "First.", ["kite"], targets=METADATA)
    write_caption(image, CAPTION, None, targets=METADATA, if_exists="overwrite")
    existing = exiv2_io.read_existing(exiv2_io.open_bytes(image.read_bytes(), "kite"), iim=True, exif=True)
    assert existing.keywords == ("kite",) and existing.caption() == CAPTION


def test_the_record_lists_every_target(photo: PhotoFactory) -> None:
    image = photo("JPEG")

    record = write_caption(image, "The image shows a kite.", ["kite"], targets=EVERYTHING, marker=MARKER)

    assert record.to_json() == {
        "image": str(image),
        "contentHash": record.content_hash,
        "targets": [
            {"target": "text_sidecar", "path": str(image.with_suffix(".txt")), "action": "written"},
            {"target": "xmp_sidecar", "path": str(image.with_suffix(".xmp")), "action": "written"},
            {"target": "metadata", "path": str(image), "action": "written"},
        ],
    }
    assert record.changed


def test_an_empty_caption_writes_nothing(photo: PhotoFactory) -> None:
    image = photo("JPEG")
    with pytest.raises(InvalidRequestError, match="empty"):
        write_caption(image, " \x00 ", targets=EVERYTHING)
    assert sorted(path.name for path in image.parent.iterdir()) == [image.name]


def test_targets_are_checked() -> None:
    with pytest.raises(ValueError, match="xmp_style"):
        Targets(xmp_sidecar=True, xmp_style="lightroom")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="extension"):
        Targets(text_sidecar="txt")
    with pytest.raises(ValueError, match="file_name"):
        Targets(jsonl_column="file_name")


@pytest.fixture
def without_exiv2(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    exiv2_io.module.cache_clear()
    monkeypatch.setitem(sys.modules, "exiv2", None)
    yield
    exiv2_io.module.cache_clear()


def test_xmp_targets_without_the_extra_say_what_to_install(without_exiv2: None, tmp_path: Path) -> None:
    image = tmp_path / "kite.png"
    image.write_bytes(encode("PNG"))
    with pytest.raises(MissingExtraError, match=r"llava-edge\[photos\]"):
        write_caption(image, CAPTION, targets=METADATA)
    with pytest.raises(MissingExtraError):
        already_described(image, MARKER, targets=Targets(xmp_sidecar=True))
    assert write_caption(image, CAPTION, targets=Targets(text_sidecar=".txt")).changed  # datasets need no extra
