"""``llava-edge eval`` as a user runs it, its choice of variants and reference, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from llava_edge.cli import main
from llava_edge.errors import EvaluationError, UnknownModelError
from llava_edge.evaluation.eval_set import builtin_set_dir, load_eval_set
from llava_edge.evaluation.variants import choose_reference, resolve_variants
from llava_edge.models.synthetic_ladder import BASE_NAME, RUNGS, build_ladder_variant, ladder_names


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llava_edge", *args], check=False, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_eval_runs_end_to_end_on_the_ladder(tmp_path: Path) -> None:
    done = run_cli("eval", BASE_NAME, "synthetic-ladder-q4_k_m", "--images", "1", "--detail", "low", "--max-tokens",
                   "2", "--score-tokens", "8", "--warmup", "0", "--out", str(tmp_path), "--name", "run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["json:", str(tmp_path / "run.json"), "md:", str(tmp_path / "run.md"),
                                   "png:", str(tmp_path / "run.png")]
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["reference"] == BASE_NAME and report["images"] == ["astronaut.jpg"]
    reference, variant = report["variants"]
    assert reference["reference"] and reference["quality"]["low"]["kl_mean"] == 0.0
    assert variant["name"] == "synthetic-ladder-q4_k_m" and variant["quality"]["low"]["kl_mean"] > 0
    assert variant["quality"]["low"]["positions"] == 8 and variant["speed"]["low"]["generated_tokens"] == 2
    assert "synthetic-ladder-q4_k_m" in (tmp_path / "run.md").read_text()
    assert "synthetic-ladder-q4_k_m (Q4_K_M): 1 image(s) x low" in done.stderr


def test_an_unknown_variant_lists_the_known_ones() -> None:
    result = CliRunner().invoke(main, ["eval", "Q9_X"])
    assert result.exit_code == 1
    assert "Q9_X" in result.output and "Q4_K_M" in result.output and "[invalidModel]" in result.output


def test_a_reference_that_is_not_downloaded_says_what_to_do() -> None:
    result = CliRunner().invoke(main, ["eval", BASE_NAME, "--reference", "Q8_0"])
    assert result.exit_code == 1
    assert "The reference 'Q8_0' is not available" in result.output and "[evaluationFailed]" in result.output
    assert "Pull it" in result.output and "--reference" in result.output


def test_no_variant_downloaded_and_none_named_says_what_to_do() -> None:
    with pytest.raises(EvaluationError, match=r"llava-edge pull Q4_K_M.*--ladder"):
        resolve_variants([])


def test_a_model_path_needs_its_mmproj(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="--mmproj"):
        resolve_variants([str(tmp_path / "llava-v1.6-mistral-7b.Q4_K_M.gguf")])


def test_a_path_variant_takes_its_type_from_the_file_name(tmp_path: Path) -> None:
    base = build_ladder_variant(BASE_NAME)
    named = tmp_path / "llava-v1.6-mistral-7b.Q5_K_S.gguf"
    named.symlink_to(base.model_path)
    variant = resolve_variants([str(named)], mmproj=str(base.mmproj_path))[0]
    assert variant.quant == "Q5_K_S" and variant.name == named.name


def test_unknown_ladder_type_lists_the_ladder() -> None:
    with pytest.raises(UnknownModelError, match="synthetic-ladder-q8_0"):
        build_ladder_variant("synthetic-ladder-q2_k")


def test_the_default_reference_is_the_highest_precision_and_stand_ins_are_labelled() -> None:
    ladder = resolve_variants([], ladder=True)
    assert [variant.name for variant in ladder] == ladder_names()
    assert choose_reference(list(reversed(ladder))).name == BASE_NAME
    assert choose_reference(ladder[3:]).name == "synthetic-ladder-q5_k_m"
    stand_in = next(variant for variant in ladder if variant.name == "synthetic-ladder-q3_k_xs")
    assert stand_in.quant == "Q3_K_S" and stand_in.label == "Q3_K_XS (stand-in: built as Q3_K_S)"
    assert [rung.variant for rung in RUNGS] == ["Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q3_K_M", "Q3_K_XS"]


def test_the_builtin_set_has_twenty_captioned_images_with_licences() -> None:
    items = load_eval_set()
    assert len(items) == 20 and all(item.caption.endswith(".") for item in items)
    licences = (builtin_set_dir() / "LICENSES.md").read_text()
    assert all(f"{item.name}" in licences for item in items)
    assert sum(path.stat().st_size for path in builtin_set_dir().iterdir()) < 3_000_000


def test_a_set_without_captions_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match=r"No captions\.toml"):
        load_eval_set(tmp_path)
    (tmp_path / "captions.toml").write_text('[images."gone.jpg"]\ncaption = "A picture."\n')
    with pytest.raises(EvaluationError, match=r"gone\.jpg, which is not in"):
        load_eval_set(tmp_path)
