"""``llava-edge eval`` with image token budgets: a row per (variant, budget), each against the one reference at
all tokens, plus the comparison with the same variant at all tokens (real runs on the tiny synthetic model)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from llava_edge.cli import main
from llava_edge.evaluation.eval_set import load_eval_set
from llava_edge.evaluation.report import markdown
from llava_edge.evaluation.runner import EvalSettings, run_eval
from llava_edge.evaluation.variants import resolve_variants


def test_every_budget_is_a_row_scored_against_the_one_reference() -> None:
    variant = resolve_variants(["synthetic-tiny"])[0]
    settings = EvalSettings(details=("low", "high"), max_tokens=2, score_tokens=6, warmup=0,
                            image_tokens=(2880, 320), token_selections=("diverse", "uniform"),
                            runtime={"threads": 1, "threads_batch": 1})
    report = run_eval([variant], variant, load_eval_set(limit=1), settings)
    rows = {(row.image_tokens, row.token_selection): row for row in report.variants}
    assert list(rows) == [(None, None), (2880, "diverse"), (2880, "uniform"), (320, "diverse"), (320, "uniform")]
    full = rows[None, None]
    assert full.reference and full.quality["high"]["kl_mean"] == 0.0 and full.quality_own == {}
    assert full.speed["high"]["image_tokens"] == 2880 and full.speed["low"]["image_tokens"] == 576
    for tokens in (2880, 320):
        for selection in ("diverse", "uniform"):
            row = rows[tokens, selection]
            assert not row.reference and row.peak_rss_bytes == full.peak_rss_bytes
            assert row.speed["low"]["image_tokens"] == min(576, tokens)
            assert row.speed["high"]["image_tokens"] == tokens
            assert row.quality["low"]["positions"] == 6 == row.quality_own["high"]["positions"]
    assert rows[2880, "diverse"].quality["high"]["kl_mean"] == 0.0  # all of a 672x672 image: the same run
    assert rows[2880, "diverse"].quality["low"]["kl_mean"] == 0.0  # low detail: 576 tokens, under the budget
    for selection in ("diverse", "uniform"):
        reduced = rows[320, selection]
        assert reduced.quality["high"]["kl_mean"] > 0 and reduced.quality_own["high"]["kl_mean"] > 0
        assert reduced.quality["high"]["kl_mean"] == pytest.approx(reduced.quality_own["high"]["kl_mean"])
    text = markdown(report)
    assert "| synthetic-tiny @320 uniform |" in text and "KL vs own all tokens" in text


def test_eval_flags_are_checked() -> None:
    result = CliRunner().invoke(main, ["eval", "synthetic-tiny", "--image-tokens", "640,zero"])
    assert result.exit_code == 2 and "--image-tokens" in result.output
    result = CliRunner().invoke(main, ["eval", "synthetic-tiny", "--image-tokens", "640", "--token-selection", "x"])
    assert result.exit_code == 2 and "--token-selection" in result.output


def test_a_budgeted_eval_writes_its_report_from_the_command_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["eval", "synthetic-tiny", "--images", "1", "--detail", "high", "--max-tokens",
                                       "2", "--score-tokens", "4", "--warmup", "0", "--image-tokens", "160",
                                       "--token-selection", "pooled", "--threads", "1", "--out", str(tmp_path),
                                       "--name", "run", "--no-chart"])
    assert result.exit_code == 0, result.output
    assert "| synthetic-tiny @160 pooled |" in (tmp_path / "run.md").read_text()
