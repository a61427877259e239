"""The harness on the synthetic quantization ladder: one f16 base and its types, each in its own process.

Random weights give the structure of quantization loss, not caption quality: KL against the f16 reference
must grow strictly as precision drops; top-1 agreement is noisier on near-uniform distributions, so it
must not rise by more than ``TOP1_TOLERANCE`` from one type to the next, and must fall over the ladder.
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest

from llava_edge.evaluation.eval_set import load_eval_set
from llava_edge.evaluation.report import write_outputs
from llava_edge.evaluation.runner import EvalReport, EvalSettings, VariantResult, run_eval
from llava_edge.evaluation.variants import resolve_variant, resolve_variants
from llava_edge.models.synthetic_ladder import BASE_NAME, build_ladder_variant

pytestmark = pytest.mark.slow

ORDER = ["synthetic-ladder-q8_0", "synthetic-ladder-q6_k", "synthetic-ladder-q5_k_m", "synthetic-ladder-q4_k_m",
         "synthetic-ladder-q3_k_m"]
TOP1_TOLERANCE = 0.05
"""Top-1 agreement may rise by at most this much from one type to the next lower one (about 200 positions)."""
SETTINGS = EvalSettings(details=("low",), max_tokens=4, warmup=0)


@pytest.fixture(scope="module")
def report() -> EvalReport:
    base = build_ladder_variant(BASE_NAME)
    reference = resolve_variant(str(base.model_path), mmproj=str(base.mmproj_path))  # the same file, by path
    variants = resolve_variants([BASE_NAME, *ORDER])
    return run_eval(variants, reference, load_eval_set(limit=4), SETTINGS)


def _by_name(report: EvalReport) -> dict[str, VariantResult]:
    return {variant.name: variant for variant in report.variants}


def test_the_reference_against_itself_loses_exactly_nothing(report: EvalReport) -> None:
    results = _by_name(report)
    assert report.reference == "model.gguf" and results["model.gguf"].reference
    again = results[BASE_NAME].quality["low"]  # the same weights, measured in another process
    assert again["kl_mean"] == 0.0 and again["kl_p99"] == 0.0
    assert again["top1_agreement"] == 1.0 and again["delta_nll"] == 0.0


def test_kl_grows_strictly_as_precision_drops(report: EvalReport) -> None:
    results = _by_name(report)
    kl = [results[name].quality["low"]["kl_mean"] for name in ORDER]
    assert kl[0] > 0
    assert all(lower < higher for lower, higher in pairwise(kl)), kl
    p99 = [results[name].quality["low"]["kl_p99"] for name in ORDER]
    assert all(p99[i] >= results[ORDER[i]].quality["low"]["kl_mean"] for i in range(len(ORDER)))


def test_top1_agreement_falls_down_the_ladder(report: EvalReport) -> None:
    results = _by_name(report)
    agreement = [results[name].quality["low"]["top1_agreement"] for name in ORDER]
    assert all(after <= before + TOP1_TOLERANCE for before, after in pairwise(agreement)), \
        agreement
    assert agreement[-1] < agreement[0] <= 1.0


def test_every_variant_has_size_memory_and_speed_per_stage(report: EvalReport) -> None:
    results = _by_name(report)
    sizes = [results[name].file_bytes for name in ORDER]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    for variant in report.variants:
        speed = variant.speed["low"]
        assert variant.peak_rss_bytes > 0 and variant.load_s > 0
        assert speed["image_tokens"] == 576 and speed["generated_tokens"] == 4
        for key in ("image_encode_s", "prefill_tok_s", "decode_tok_s", "first_token_s", "total_s"):
            assert speed[key] > 0, (variant.name, key)
        assert variant.quality["low"]["positions"] == sum(row["positions"] for row in variant.captions)


def test_json_markdown_and_chart_hold_the_numbers(report: EvalReport, tmp_path: Path) -> None:
    paths = write_outputs(report, tmp_path, "ladder")
    document = json.loads(paths["json"].read_text())
    assert document == json.loads(json.dumps(report.to_dict(), default=str))
    text = paths["md"].read_text()
    for variant in report.variants:
        row = next(line for line in text.splitlines() if line.startswith(f"| {variant.name} ")
                   or line.startswith(f"| **{variant.name}**"))
        assert f"{variant.quality['low']['kl_mean']:.3g}" in row
        assert f"{100 * variant.quality['low']['top1_agreement']:.1f} %" in row
    assert "random weights" in text and "![quality loss against time per caption](ladder.png)" in text
    image = paths["png"].read_bytes()
    assert image.startswith(b"\x89PNG") and len(image) > 20_000
