"""Image token budgets through ``llava-edge caption`` (a real subprocess on the tiny synthetic model),
``caption_many`` and the Ray actor class: the budget changes what is fed, the answer is the Python API's, the
default is unchanged, and bad values are refused before any model loads."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from llava_edge import Captioner, GenerationOptions, RuntimeOptions, caption_many
from llava_edge.batch.ray_data import RayCaptioner
from llava_edge.errors import InvalidRequestError
from llava_edge.models.catalog import ModelFiles

PROMPT = "Describe this image."
GREEDY = GenerationOptions(max_tokens=8, temperature=0.0)
ONE_THREAD = RuntimeOptions(threads=1, threads_batch=1, prefix_cache_bytes=0)
"""As ``--threads 1``: the same arithmetic as the command line's."""
FLAGS = ("--model", "synthetic-tiny", "--prompt", PROMPT, "--max-tokens", "8", "--temperature", "0", "--threads", "1",
         "--detail", "high")


@pytest.fixture(scope="module")
def local(tiny_files: ModelFiles) -> Iterator[Captioner]:
    with Captioner(model_path=tiny_files.model_path, mmproj_path=tiny_files.mmproj_path, runtime=ONE_THREAD,
                   generation=GREEDY) as loaded:
        yield loaded


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A 672x672 photo of noise: 2,880 image tokens at full detail, and answers that depend on them."""
    pixels = np.random.default_rng(5).integers(0, 256, (672, 672, 3), dtype=np.uint8)
    path = tmp_path / "noise.png"
    Image.fromarray(pixels, "RGB").save(path)
    return path


def run_caption(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llava_edge", "caption", *args, *FLAGS], check=False,
                          capture_output=True, text=True, timeout=300)


def caption_json(*args: str) -> dict[str, Any]:
    done = run_caption(*args, "--json")
    assert done.returncode == 0, done.stderr
    record: dict[str, Any] = json.loads(done.stdout)
    return record


def test_image_tokens_on_the_command_line_feed_that_many_and_answer_as_the_api(local: Captioner, photo: Path) -> None:
    reduced = caption_json(str(photo), "--image-tokens", "640", "--token-selection", "pooled")
    full = caption_json(str(photo))

    assert reduced["timings"]["image_tokens"] == 640 and full["timings"]["image_tokens"] == 2880
    assert reduced["timings"]["prompt_tokens"] == full["timings"]["prompt_tokens"] - 2880 + 640
    expected = local.describe(photo, PROMPT, detail="high", image_tokens=640, token_selection="pooled")
    assert reduced["text"] == expected.text != full["text"]
    assert full["text"] == local.describe(photo, PROMPT, detail="high").text


def test_the_default_selection_is_diverse(local: Captioner, photo: Path) -> None:
    record = caption_json(str(photo), "--image-tokens", "320")
    assert record["timings"]["image_tokens"] == 320
    assert record["text"] == local.describe(photo, PROMPT, detail="high", image_tokens=320,
                                            token_selection="diverse").text


def test_jsonl_and_csv_records_report_the_image_tokens_fed(local: Captioner, photo: Path, tmp_path: Path) -> None:
    jsonl, table = tmp_path / "out.jsonl", tmp_path / "out.csv"
    for out in (jsonl, table):
        done = run_caption(str(photo), "--image-tokens", "160", "--token-selection", "uniform", "--out", str(out))
        assert done.returncode == 0, done.stderr

    [record] = [json.loads(line) for line in jsonl.read_text().splitlines()]
    [row] = list(csv.DictReader(table.open(newline="", encoding="utf-8")))
    expected = local.describe(photo, PROMPT, detail="high", image_tokens=160, token_selection="uniform")
    assert record["timings"]["image_tokens"] == 160 and record["timings"]["image_select_s"] > 0
    assert row["image_tokens"] == "160"
    assert record["response"]["text"] == row["text"] == expected.text


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--image-tokens", "0"), "--image-tokens"),
        (("--image-tokens", "many"), "--image-tokens"),
        (("--image-tokens", "64", "--token-selection", "random"), "--token-selection"),
        (("--token-selection", "pooled"), "give --image-tokens too"),
    ],
)
def test_bad_budgets_are_usage_errors(photo: Path, flags: tuple[str, ...], message: str) -> None:
    done = run_caption(str(photo), *flags)
    assert done.returncode == 2 and message in done.stderr and done.stdout == ""


def test_caption_many_passes_the_budget_and_checks_it_before_any_image(local: Captioner, photo: Path) -> None:
    [record] = caption_many([photo], PROMPT, captioner=local, detail="high", image_tokens=640,
                            token_selection="uniform")
    assert record.timings is not None and record.timings.image_tokens == 640
    assert record.text == local.describe(photo, PROMPT, detail="high", image_tokens=640,
                                         token_selection="uniform").text

    for tokens, selection, parameter in ((0, None, "image_tokens"), (64, "random", "token_selection")):
        with pytest.raises(InvalidRequestError) as refused:
            next(caption_many([photo], PROMPT, captioner=local, image_tokens=tokens, token_selection=selection))
        assert refused.value.parameter == parameter


def test_the_ray_actor_class_captions_under_the_budget(tiny_files: ModelFiles, local: Captioner, photo: Path) -> None:
    actor = RayCaptioner(model_path=tiny_files.model_path, mmproj_path=tiny_files.mmproj_path, runtime=ONE_THREAD,
                         generation=GREEDY, prompt=PROMPT, detail="high", image_tokens=320, token_selection="pooled")
    rows = actor({"path": [str(photo)]})
    record = json.loads(rows["record"][0])
    assert rows["ok"] == [True] and record["timings"]["image_tokens"] == 320
    assert rows["text"] == [local.describe(photo, PROMPT, detail="high", image_tokens=320,
                                           token_selection="pooled").text]
    with pytest.raises(InvalidRequestError):
        RayCaptioner(model_path=tiny_files.model_path, mmproj_path=tiny_files.mmproj_path, image_tokens=0)
