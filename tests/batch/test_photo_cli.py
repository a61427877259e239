"""``llava-edge caption --write-metadata`` and the other photo flags as a user runs them: the tiny synthetic model,
real files, and exiftool reading back what was written."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from support.photos import encode
from support.tools import PHOTOS_INSTALL, exiftool, require_module

from llava_edge.batch.photo_step import KEYWORDS_PROMPT
from llava_edge.cli import main
from llava_edge.photos import exiv2_io

TINY = ("--model", "synthetic-tiny", "--max-tokens", "8", "--seed", "5", "--threads", "1")


@pytest.fixture
def kite(tmp_path: Path) -> Path:
    require_module("exiv2", PHOTOS_INSTALL)
    path = tmp_path / "kite.jpg"
    path.write_bytes(encode("JPEG"))
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["caption", *args, *TINY])


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_write_metadata_is_read_back_and_a_rerun_skips_without_the_model(kite: Path, tmp_path: Path) -> None:
    out = tmp_path / "captions.jsonl"
    first = run(str(kite), "--write-metadata", "--out", str(out))
    assert first.exit_code == 0, first.output
    assert "1 captioned, 0 failed" in first.output
    [record] = records(out)
    text = record["response"]["text"]  # type: ignore[index]
    assert record["photo"]["targets"] == [{"target": "metadata", "path": str(kite), "action": "written"}]  # type: ignore[index]
    [tags] = exiftool(kite)
    assert tags["XMP-dc:Description"] == tags["IPTC:Caption-Abstract"] == tags["IFD0:ImageDescription"] == text
    described = kite.read_bytes()

    again = run(str(kite), "--write-metadata", "--out", str(out))
    assert again.exit_code == 0, again.output
    assert "0 captioned, 0 failed, 1 already done" in again.output
    assert kite.read_bytes() == described and len(records(out)) == 1

    without_out = run(str(kite), "--write-metadata")  # no --out: the marker alone is enough
    assert without_out.exit_code == 0 and "1 already done" in without_out.output


def test_keywords_are_a_second_question_written_as_dc_subject(kite: Path) -> None:
    result = run(str(kite), "--write-metadata", "--keywords")
    assert result.exit_code == 0, result.output
    [tags] = exiftool(kite)
    subject = tags["XMP-dc:Subject"]
    assert subject and tags["IPTC:Keywords"]
    assert tags["XMP-llavaedge:Model"] == "synthetic-tiny" and KEYWORDS_PROMPT in tags["XMP-llavaedge:Prompt"]

    other_prompt = run(str(kite), "--write-metadata", "--keywords", "--if-exists", "overwrite")
    assert "1 already done" in other_prompt.output  # same model, prompts and pixels: the marker matches
    without_keywords = run(str(kite), "--write-metadata", "--if-exists", "overwrite")
    assert "1 captioned" in without_keywords.output  # the marker's prompts differ: captioned again


def test_if_exists_overwrite_replaces_and_overwrite_is_its_short_form(kite: Path) -> None:
    [before] = exiftool(kite)
    assert run(str(kite), "--write-metadata").exit_code == 0
    first = exiftool(kite)[0]["XMP-dc:Description"]

    changed = run(str(kite), "--write-metadata", "--overwrite", "--prompt", "Say something else.")
    assert changed.exit_code == 0, changed.output
    assert "1 captioned" in changed.output
    [after] = exiftool(kite)
    assert after["XMP-dc:Description"] == after["IPTC:Caption-Abstract"] != ""
    assert after["IFD0:Make"] == before["IFD0:Make"] == "TestCam"
    assert first  # replaced by the second prompt's caption (the synthetic model may say the same words)

    clash = run(str(kite), "--write-metadata", "--overwrite", "--if-exists", "append")
    assert clash.exit_code != 0 and "--overwrite" in clash.output and "Traceback" not in clash.output


def test_metadata_jsonl_has_file_name_and_text_with_prefix_and_suffix(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    for index in range(2):
        (folder / f"img{index}.png").write_bytes(encode("PNG", seed=index))
    jsonl = folder / "metadata.jsonl"
    result = run(str(folder), "--metadata-jsonl", str(jsonl), "--prefix", "ohwx,", "--suffix", "| style")
    assert result.exit_code == 0, result.output
    lines = records(jsonl)
    assert sorted(line["file_name"] for line in lines) == ["img0.png", "img1.png"]  # type: ignore[type-var]
    assert all(str(line["text"]).startswith("ohwx, ") and str(line["text"]).endswith(" | style") for line in lines)

    again = run(str(folder), "--metadata-jsonl", str(jsonl), "--prefix", "ohwx,", "--suffix", "| style")
    assert "2 already done" in again.output and records(jsonl) == lines


def test_a_read_only_image_is_an_error_record_and_is_left_byte_identical(kite: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(encode("PNG"))
    kite.chmod(0o444)
    before = kite.read_bytes()
    out = tmp_path / "captions.jsonl"

    result = run(str(kite), str(good), "--write-metadata", "--out", str(out))

    assert result.exit_code == 1, result.output
    assert "1 captioned, 1 failed" in result.output and "Traceback" not in result.output
    by_image = {Path(str(record["image"])).name: record for record in records(out)}
    assert by_image["kite.jpg"]["error"]["code"]  # type: ignore[index]
    assert "photo" in by_image["good.png"]
    assert kite.read_bytes() == before


def test_the_flags_without_the_photos_extra_give_the_install_hint(kite: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    exiv2_io.module.cache_clear()
    monkeypatch.setitem(sys.modules, "exiv2", None)  # import exiv2 now raises ImportError
    before = kite.read_bytes()
    try:
        result = run(str(kite), "--xmp-sidecar")
    finally:
        exiv2_io.module.cache_clear()
    assert result.exit_code == 1
    assert "pip install 'llava-edge[photos]'" in result.output and "Traceback" not in result.output
    assert kite.read_bytes() == before and not kite.with_suffix(".xmp").exists()


def test_kohya_json_gets_each_image_by_stem_and_keeps_other_keys(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    for index in range(2):
        (folder / f"img{index}.png").write_bytes(encode("PNG", seed=index))
    kohya = tmp_path / "meta.json"
    kohya.write_text(json.dumps({"img0": {"tags": "sky, kite"}, "other": {"caption": "kept"}}))

    result = run(str(folder), "--kohya-json", str(kohya), "--prefix", "ohwx,")

    assert result.exit_code == 0, result.output
    written = json.loads(kohya.read_text())
    assert written["img0"]["tags"] == "sky, kite" and written["other"] == {"caption": "kept"}
    assert all(str(written[stem]["caption"]).startswith("ohwx, ") for stem in ("img0", "img1"))


def test_if_exists_append_adds_the_caption_after_the_existing_description(kite: Path) -> None:
    first = run(str(kite), "--write-metadata", "--prompt", "One.")
    assert first.exit_code == 0, first.output
    existing = exiftool(kite)[0]["XMP-dc:Description"]

    appended = run(str(kite), "--write-metadata", "--if-exists", "append", "--prompt", "Two.")

    assert appended.exit_code == 0 and "1 captioned" in appended.output, appended.output
    [tags] = exiftool(kite)
    assert str(tags["XMP-dc:Description"]).startswith(f"{existing} ")
    assert tags["IPTC:Caption-Abstract"] == tags["XMP-dc:Description"]


@pytest.mark.parametrize("keep", [True, False])
def test_keep_times_keeps_the_rewritten_image_s_modification_time(kite: Path, keep: bool) -> None:
    old = 1_600_000_000
    os.utime(kite, (old, old))

    result = run(str(kite), "--write-metadata", *(["--keep-times"] if keep else []))

    assert result.exit_code == 0, result.output
    assert exiftool(kite)[0]["XMP-dc:Description"]
    assert (int(kite.stat().st_mtime) == old) is keep
