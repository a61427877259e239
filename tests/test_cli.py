"""The command line, run as a user runs it: a real subprocess on the tiny synthetic model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.images import ImageFactory

pytestmark = pytest.mark.slow


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llava_edge", *args], check=False, capture_output=True, text=True,
                          timeout=300)


def test_caption_json(tmp_path: Path, make_image: ImageFactory) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(make_image(100, 80))
    done = run_cli("caption", str(image), "--model", "synthetic-tiny", "--prompt", "What is here?",
                   "--max-tokens", "6", "--seed", "3", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["image"] == str(image) and record["text"] and record["model"] == "synthetic-tiny"
    assert record["timings"]["image_tokens"] == 576 and record["timings"]["generated_tokens"] <= 6


def test_caption_plain_text_for_several_images_and_a_bad_one(tmp_path: Path, make_image: ImageFactory) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(make_image())
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    done = run_cli("caption", str(good), str(bad), "--model", "synthetic-tiny", "--max-tokens", "4")
    assert done.returncode == 1
    assert done.stdout.startswith(f"{good}: ")
    assert f"{bad}: error:" in done.stderr and "unsupportedImageFormat" in done.stderr


def test_unknown_model_is_a_one_line_error() -> None:
    done = run_cli("caption", "x.png", "--model", "no-such-model")
    assert done.returncode == 1
    assert "Unknown model 'no-such-model'" in done.stderr and "Traceback" not in done.stderr


def test_info_reports_the_backend() -> None:
    done = run_cli("info", "--json")
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["llama_cpp_python"].startswith("0.3.")
    assert isinstance(facts["gpu_offload"], bool) and facts["threads"] >= 1 and facts["ram_total_gib"] > 0
    assert "AVX" in facts["system_info"] or "NEON" in facts["system_info"]
