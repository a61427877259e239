"""A symbolic link planted in a dataset folder never redirects what ``llava-edge caption`` writes: each output
file (``--metadata-jsonl``, ``--kohya-json``, text and XMP sidecars, ``--out``) that is a link to a file outside
is refused, the outside file keeps its bytes and modification time, and the run says what to do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from support.images import ImageFactory

from llava_edge.cli import main

TINY = ("--model", "synthetic-tiny", "--max-tokens", "4", "--seed", "5", "--threads", "1")
OUTSIDE_BYTES = b'{"file_name": "keep.png", "text": "the outside file"}\n{"partial'
"""An outside file that looks like a metadata.jsonl cut by a kill: an unguarded writer would truncate it."""


@pytest.fixture
def dataset(tmp_path: Path, make_image: ImageFactory) -> Path:
    root = tmp_path / "dataset"
    root.mkdir()
    (root / "cat.png").write_bytes(make_image(40, 32))
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside the dataset, with an old modification time, that the link points to."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = elsewhere / "precious"
    path.write_bytes(OUTSIDE_BYTES)
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["caption", *args, *TINY])


def assert_refused(result: Result, outside: Path) -> None:
    assert result.exit_code == 1, result.output
    assert "symbolic link" in result.output and "Replace the link" in result.output, result.output
    assert outside.read_bytes() == OUTSIDE_BYTES
    assert outside.stat().st_mtime_ns == 1_000_000_000_000_000_000


# (flags, the link's name in the dataset): each output file that a run writes there
CASES = {
    "metadata-jsonl": (("--metadata-jsonl", "{link}"), "metadata.jsonl"),
    "kohya-json": (("--kohya-json", "{link}"), "meta.json"),
    "sidecar-ext": (("--sidecar-ext", ".caption"), "cat.caption"),
    "sidecar": (("--sidecar",), "cat.txt"),
    "out-jsonl": (("--out", "{link}"), "captions.jsonl"),
    "out-csv": (("--out", "{link}"), "captions.csv"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_link_to_a_file_outside_is_refused_and_that_file_untouched(
    case: str, dataset: Path, outside: Path
) -> None:
    flags, name = CASES[case]
    link = dataset / name
    link.symlink_to(outside)
    result = run(str(dataset / "cat.png"), *(flag.format(link=link) for flag in flags))
    assert_refused(result, outside)
    assert link.is_symlink()


def test_a_dangling_link_creates_no_file_outside(dataset: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "created.jsonl"
    target.parent.mkdir()
    link = dataset / "metadata.jsonl"
    link.symlink_to(target)
    result = run(str(dataset / "cat.png"), "--metadata-jsonl", str(link), "--if-exists", "overwrite")
    assert result.exit_code == 1 and "symbolic link" in result.output, result.output
    assert not target.exists()


def test_an_xmp_sidecar_that_is_a_link_is_refused(dataset: Path, outside: Path) -> None:
    pytest.importorskip("exiv2", reason="the photos extra (pip install 'llava-edge[photos]')")
    (dataset / "cat.xmp").symlink_to(outside)
    assert_refused(run(str(dataset / "cat.png"), "--xmp-sidecar"), outside)


def test_real_files_in_a_linked_dataset_folder_are_still_written(dataset: Path, tmp_path: Path) -> None:
    """Only the last component is refused as a link: a dataset reached through a linked folder works."""
    linked = tmp_path / "linked"
    linked.symlink_to(dataset)
    result = run(str(linked / "cat.png"), "--metadata-jsonl", str(linked / "metadata.jsonl"))
    assert result.exit_code == 0, result.output
    assert '"file_name": "cat.png"' in (dataset / "metadata.jsonl").read_text()


def test_a_glob_does_not_follow_a_linked_folder_out_of_the_dataset(
    dataset: Path, tmp_path: Path, make_image: ImageFactory
) -> None:
    """``**`` would walk into ``dataset/escape -> elsewhere`` and write sidecars beside the images there."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "dog.png").write_bytes(make_image(36, 30))
    (elsewhere / "dog.txt").write_bytes(b"notes kept outside")
    (dataset / "escape").symlink_to(elsewhere, target_is_directory=True)
    (dataset / "inner").symlink_to(dataset, target_is_directory=True)  # a link within the dataset is followed
    result = run(f"{dataset}/**/*.png", "--recursive", "--sidecar-ext", ".txt")
    assert result.exit_code == 0, result.output
    assert "1 captioned" in result.output, result.output
    assert (dataset / "cat.txt").read_text()
    assert sorted(path.name for path in elsewhere.iterdir()) == ["dog.png", "dog.txt"]
    assert (elsewhere / "dog.txt").read_bytes() == b"notes kept outside"
