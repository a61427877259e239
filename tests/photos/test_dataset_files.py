"""Dataset layouts: .txt/.caption sidecars with trigger words, Hugging Face metadata.jsonl (loaded back by
``datasets``), and kohya metadata JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.photos import decoded, encode
from support.tools import require_module

from llava_edge.errors import OutputFileError
from llava_edge.photos.targets import Targets, TextOptions
from llava_edge.photos.writer import already_described, write_caption

RAW = "The image shows a red kite over a field."
TRIGGER = TextOptions(prefix="ohwx,", suffix="", strip_preamble=True)


def _images(root: Path, *names: str) -> list[Path]:
    paths = []
    for seed, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode("JPEG" if name.endswith(".jpg") else "PNG", seed=seed))
        paths.append(path)
    return paths


@pytest.mark.parametrize("extension", [".txt", ".caption"])
def test_text_sidecar_with_trigger_words_and_stripped_preamble(tmp_path: Path, extension: str) -> None:
    (image,) = _images(tmp_path, "kite.jpg")
    targets = Targets(text_sidecar=extension)

    record = write_caption(image, RAW, targets=targets, text=TRIGGER)

    sidecar = tmp_path / f"kite{extension}"
    assert [(r.target, r.path, r.action) for r in record.results] == [("text_sidecar", sidecar, "written")]
    assert sidecar.read_text(encoding="utf-8") == "ohwx, A red kite over a field."
    assert already_described(image, None, targets=targets)
    assert not already_described(image, None, targets=targets, if_exists="overwrite")


def test_text_sidecar_if_exists(tmp_path: Path) -> None:
    (image,) = _images(tmp_path, "kite.png")
    sidecar = tmp_path / "kite.txt"
    sidecar.write_text("ohwx, hand-written.")
    targets = Targets(text_sidecar=".txt")

    assert write_caption(image, RAW, targets=targets, text=TRIGGER).results[0].action == "skipped"
    assert sidecar.read_text() == "ohwx, hand-written."
    write_caption(image, RAW, targets=targets, text=TRIGGER, if_exists="append")
    assert sidecar.read_text() == "ohwx, hand-written. A red kite over a field."
    write_caption(image, "A blue kite.", targets=targets, text=TRIGGER, if_exists="overwrite")
    assert sidecar.read_text() == "ohwx, A blue kite."


def test_a_text_sidecar_never_replaces_the_image(tmp_path: Path) -> None:
    image = tmp_path / "scan.txt"
    image.write_bytes(encode("PNG"))
    with pytest.raises(OutputFileError, match="the image itself"):
        write_caption(image, RAW, targets=Targets(text_sidecar=".txt"), if_exists="overwrite")
    assert image.read_bytes() == encode("PNG")


def test_metadata_jsonl_loads_with_datasets_imagefolder(tmp_path: Path) -> None:
    require_module("datasets", "pip install datasets")
    import datasets

    root = tmp_path / "dataset"
    kite, boat = _images(root, "kite.jpg", "harbour/boat.png")
    targets = Targets(metadata_jsonl=root / "metadata.jsonl")
    write_caption(kite, RAW, targets=targets, text=TRIGGER)
    write_caption(boat, "Ein Boot im Hafen.", targets=targets, text=TRIGGER)

    lines = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    assert lines == [{"file_name": "kite.jpg", "text": "ohwx, A red kite over a field."},
                     {"file_name": "harbour/boat.png", "text": "ohwx, Ein Boot im Hafen."}]
    loaded = datasets.load_dataset("imagefolder", data_dir=str(root), split="train", cache_dir=str(tmp_path / "hf"))
    assert len(loaded) == 2
    for row in loaded:  # each caption came with its own image
        source = kite if row["text"].endswith("field.") else boat
        np.testing.assert_array_equal(np.asarray(row["image"].convert("RGB")), decoded(source))
    assert sorted(loaded["text"]) == ["ohwx, A red kite over a field.", "ohwx, Ein Boot im Hafen."]


def test_metadata_jsonl_if_exists_keeps_other_columns_and_repairs_a_killed_append(tmp_path: Path) -> None:
    kite, boat = _images(tmp_path, "kite.jpg", "boat.png")
    jsonl = tmp_path / "metadata.jsonl"
    jsonl.write_text('{"file_name": "kite.jpg", "text": "old", "split": "train"}\n{"file_name": "bo')
    targets = Targets(metadata_jsonl=jsonl)

    assert write_caption(kite, "A kite.", targets=targets).results[0].action == "skipped"
    assert write_caption(boat, "A boat.", targets=targets).results[0].action == "written"
    assert write_caption(kite, "A kite.", targets=targets, if_exists="append").results[0].action == "appended"
    assert [json.loads(line) for line in jsonl.read_text().splitlines()] == [
        {"file_name": "kite.jpg", "text": "old A kite.", "split": "train"},
        {"file_name": "boat.png", "text": "A boat."},
    ]
    assert already_described(kite, None, targets=targets) and already_described(boat, None, targets=targets)


def test_metadata_jsonl_refuses_a_corrupt_file_and_images_outside_its_folder(tmp_path: Path) -> None:
    (kite,) = _images(tmp_path / "inside", "kite.jpg")
    (stray,) = _images(tmp_path, "stray.png")
    jsonl = tmp_path / "inside" / "metadata.jsonl"
    targets = Targets(metadata_jsonl=jsonl)

    with pytest.raises(OutputFileError, match="outside"):
        write_caption(stray, "A stray.", targets=targets)
    jsonl.write_text('{"file_name": "a.jpg"\n{"file_name": "b.jpg", "text": "b"}\n')
    with pytest.raises(OutputFileError, match="not a JSON object"):
        write_caption(kite, "A kite.", targets=targets)
    assert jsonl.read_text() == '{"file_name": "a.jpg"\n{"file_name": "b.jpg", "text": "b"}\n'


@pytest.mark.parametrize(("style", "key"), [("stem", "kite"), ("path", None)])
def test_kohya_json_keeps_other_keys(tmp_path: Path, style: str, key: str | None) -> None:
    (image,) = _images(tmp_path, "kite.jpg")
    key = key or str(image)
    metadata = tmp_path / "meta_cap.json"
    metadata.write_text(json.dumps({key: {"tags": "kite, sky", "train_resolution": [512, 512]}, "other": {}}))
    targets = Targets(kohya_json=metadata, kohya_key=style)  # type: ignore[arg-type]

    record = write_caption(image, RAW, targets=targets, text=TRIGGER)

    assert record.results[0].action == "written"
    assert json.loads(metadata.read_text()) == {
        key: {"tags": "kite, sky", "train_resolution": [512, 512], "caption": "ohwx, A red kite over a field."},
        "other": {},
    }
    assert metadata.read_text().startswith('{\n  "')  # indent=2, as kohya writes it
    assert write_caption(image, "Other.", targets=targets).results[0].action == "skipped"


def test_kohya_json_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    (image,) = _images(tmp_path, "kite.jpg")
    metadata = tmp_path / "meta.json"
    metadata.write_text("[1, 2]")
    with pytest.raises(OutputFileError, match="not a kohya metadata file"):
        write_caption(image, RAW, targets=Targets(kohya_json=metadata))
    assert metadata.read_text() == "[1, 2]"
