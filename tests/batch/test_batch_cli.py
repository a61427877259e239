"""``llava-edge caption DIR --out ...`` as a user runs it: real subprocesses on the tiny synthetic model,
killed part-way with real signals and run again."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.images import ImageFactory

from llava_edge.cli import main

TINY = ("--model", "synthetic-tiny", "--max-tokens", "8", "--seed", "5", "--threads", "1")


@pytest.fixture
def folder(tmp_path: Path, make_image: ImageFactory) -> Path:
    """40 distinct PNGs and 2 bad files."""
    root = tmp_path / "photos"
    root.mkdir()
    for index in range(40):
        (root / f"img{index:02d}.png").write_bytes(make_image(48 + index, 40))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    (root / "zero.png").write_bytes(b"")
    return root


def caption_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "llava_edge", "caption", *args, *TINY]


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]  # every line must parse


@pytest.mark.slow
def test_folder_to_jsonl_then_a_rerun_does_nothing(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "captions.jsonl"
    first = subprocess.run(caption_command(str(folder), "--out", str(out)), check=False, capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == 1, first.stderr
    assert "Done: 40 captioned, 2 failed, 0 already done" in first.stderr
    records = read_jsonl(out)
    assert Counter(record["image"] for record in records) == Counter(str(path) for path in sorted(folder.iterdir()))
    errors = {Path(str(record["image"])).name: record["error"] for record in records if "error" in record}
    assert set(errors) == {"broken.jpg", "zero.png"} and all(error["code"] for error in errors.values())
    assert all(record["response"]["text"] and record["timings"]["image_tokens"] == 576  # type: ignore[index]
               for record in records if "response" in record)

    again = subprocess.run(caption_command(str(folder), "--out", str(out)), check=False, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0 and "Done: 0 captioned, 0 failed, 42 already done" in again.stderr
    assert read_jsonl(out) == records


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_run_killed_part_way_resumes_to_each_image_exactly_once(
    folder: Path, tmp_path: Path, stop: signal.Signals
) -> None:
    out = tmp_path / "captions.jsonl"
    command = caption_command(str(folder), "--out", str(out))
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_records(out, run, at_least=5)
    run.send_signal(stop)
    _, stderr = run.communicate(timeout=120)
    written = out.read_bytes()
    complete = written.count(b"\n")
    assert 5 <= complete < 42, "the run must be stopped part-way"
    if stop == signal.SIGKILL:
        assert run.returncode == -signal.SIGKILL
    else:  # a graceful stop: complete records only, a summary, exit 130
        assert run.returncode == 130 and "Interrupted:" in stderr and "to resume" in stderr
        assert written.endswith(b"\n")
        assert len(read_jsonl(out)) == complete

    resumed = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    assert resumed.returncode in (0, 1), resumed.stderr
    assert f"{complete} already done" in resumed.stderr
    records = read_jsonl(out)
    assert Counter(record["image"] for record in records) == Counter(str(path) for path in sorted(folder.iterdir()))
    assert sum("error" in record for record in records) == 2


def test_csv_and_sidecars_in_one_run(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "captions.txt"
    images = [str(folder / "img00.png"), str(folder / "img01.png"), str(folder / "broken.jpg")]
    result = CliRunner().invoke(main, ["caption", *images, "--out", str(out), "--format", "csv", "--sidecar", *TINY])
    assert result.exit_code == 1, result.output
    with open(out, newline="") as file:
        rows = {row["image"]: row for row in csv.DictReader(file)}
    assert set(rows) == set(images) and rows[images[2]]["errorCode"] == "invalidInputsImage"
    for image in images[:2]:
        assert (folder / Path(image).with_suffix(".txt").name).read_text() == rows[image]["text"] != ""
    assert not (folder / "broken.txt").exists()


def test_sidecars_only_resume_and_errors_go_to_stderr(folder: Path) -> None:
    images = [str(folder / "img02.png"), str(folder / "zero.png")]
    first = CliRunner().invoke(main, ["caption", *images, "--sidecar", *TINY])
    assert first.exit_code == 1 and "zero.png: error: The image is empty" in first.stderr
    assert "Done: 1 captioned, 1 failed, 0 already done" in first.stderr
    caption = (folder / "img02.txt").read_text()
    again = CliRunner().invoke(main, ["caption", *images, "--sidecar", *TINY])
    assert "Done: 0 captioned, 1 failed, 1 already done" in again.stderr
    assert (folder / "img02.txt").read_text() == caption


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="file names there are always Unicode")
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_file_name_that_is_not_utf8_is_captioned_and_a_rerun_resumes(
    tmp_path: Path, make_image: ImageFactory, suffix: str
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    latin1 = os.path.join(os.fsencode(root), b"caf\xe9.png")  # Latin-1 bytes, not UTF-8
    with open(latin1, "wb") as file:
        file.write(make_image(40, 40))
    (root / "ok.png").write_bytes(make_image(44, 40))
    out = tmp_path / f"captions{suffix}"
    command = ["caption", str(root), "--out", str(out), *TINY]

    first = CliRunner().invoke(main, command)
    assert first.exit_code == 0, first.output
    assert "Done: 2 captioned, 0 failed, 0 already done" in first.stderr
    text = out.read_bytes().decode("utf-8")  # strict: the output is valid UTF-8 text
    if suffix == ".jsonl":
        names = {json.loads(line)["image"] for line in text.splitlines()}
        assert names == {os.fsdecode(latin1), str(root / "ok.png")}  # lossless: os.fsencode gives the bytes back
    else:
        names = {row["image"] for row in csv.DictReader(text.splitlines())}
        assert names == {str(root / "caf\\xe9.png"), str(root / "ok.png")}  # the byte written as \xe9

    again = CliRunner().invoke(main, command)
    assert again.exit_code == 0, again.output
    assert "Done: 0 captioned, 0 failed, 2 already done" in again.stderr
    assert out.read_text(encoding="utf-8") == text


def test_sidecar_never_reports_an_image_done_that_it_would_overwrite(
    tmp_path: Path, make_image: ImageFactory
) -> None:
    scan = tmp_path / "scan.txt"  # a PNG with a .txt name: its sidecar would be the image itself
    scan.write_bytes(make_image(40, 40))
    result = CliRunner().invoke(main, ["caption", str(scan), "--sidecar", *TINY])
    assert result.exit_code == 1, result.output
    assert "already done" not in result.stderr and "over that image itself" in result.stderr
    assert "Rename" in result.stderr and scan.read_bytes() == make_image(40, 40)

    photo = tmp_path / "scan.png"
    photo.write_bytes(make_image(44, 40))
    result = CliRunner().invoke(main, ["caption", str(photo), str(scan), "--sidecar", *TINY])
    assert result.exit_code == 1 and "already done" not in result.stderr
    assert f"caption of {photo} over the input image {scan}" in result.stderr
    assert scan.read_bytes() == make_image(40, 40) and photo.read_bytes() == make_image(44, 40)


def test_ray_without_the_extra_says_how_to_install_it(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as without the extra
    result = CliRunner().invoke(main, ["caption", str(folder), "--out", str(tmp_path / "c.jsonl"), "--ray", "auto",
                                       *TINY])
    assert result.exit_code == 1 and 'pip install "llava-edge[ray]"' in result.stderr


def test_an_empty_folder_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["caption", str(tmp_path), "--out", str(tmp_path / "c.jsonl"), *TINY])
    assert result.exit_code == 2 and "No images found" in result.output


def _wait_for_records(out: Path, run: subprocess.Popen[str], *, at_least: int) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if out.exists() and out.read_bytes().count(b"\n") >= at_least:
            return
        if run.poll() is not None:
            pytest.fail(f"the run ended early: {run.stderr.read() if run.stderr else ''}")
        time.sleep(0.05)
    run.kill()
    pytest.fail("no records after 300 s")
