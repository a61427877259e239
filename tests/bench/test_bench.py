"""The benchmark library, its outputs, the targets and the llama-mtmd-cli parser, on the tiny model.

No timing asserts: only that every stage is measured and reported, and that the arithmetic is right.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from llava_edge.bench.anchor import mtmd_command, parse_mtmd_output, run_mtmd
from llava_edge.bench.machine_facts import measure_bandwidth, run_measured
from llava_edge.bench.report import load_report, markdown, write_outputs
from llava_edge.bench.runner import (
    COUNTS,
    ENGINE_MTMD,
    STAGES,
    BenchConfig,
    BenchReport,
    ConfigResult,
    add_decode_ceiling,
    bench_image,
    run_benchmark,
    scale_sample,
    summarize,
)
from llava_edge.bench.suites import ANCHOR, AS_ANCHOR, DEFAULTS, LOW, evaluate_targets, sweep_suite
from llava_edge.cli import main
from llava_edge.errors import BenchmarkError
from llava_edge.models.catalog import ModelFiles

# Captured from llama-mtmd-cli (llama-cpp-python 0.3.36's vendored llama.cpp 0c1e570) on the tiny synthetic
# model: 672x672 picture, -n 8, its defaults, -lv 4; (arrival seconds, text) chunks of its merged output.
# Only the lines the parser reads and the answer are kept; the machine was busy, hence the slow tokens.
MTMD_CHUNKS = [
    (0.1178, "0.00.027.818 I llama_context: n_ctx                 = 32768\n"),
    (0.1178, "0.00.027.819 I llama_context: n_batch               = 2048\n"),
    (0.1178, "0.00.027.819 I llama_context: n_ubatch              = 512\n"),
    (0.1178, "0.00.027.820 I llama_context: flash_attn            = auto\n"),
    (0.1272, "0.00.039.464 I cmn          init: llama threadpool init, n_threads = 2\n"),
    (0.3383, "0.00.250.584 W WARN: This is an experimental CLI for testing multimodal capability.\n"),
    (0.4508, "0.00.362.979 I mtmd batch encoding done in 7 ms\n"),
    (0.4508, "0.00.363.022 I decoding image batch 1/1, n_tokens_batch = 576\n"),
    (0.459, "0.00.371.154 I image decoded (batch 1/1) in 8 ms\n"),
    (0.4715, "0.00.379.373 I mtmd batch encoding done in 8 ms\n"),
    (0.4716, "0.00.379.414 I decoding image batch 1/1, n_tokens_batch = 576\n"),
    (0.4897, "0.00.393.425 I image decoded (batch 1/1) in 14 ms\n"),
    (0.8258, "0.00.737.969 I mtmd batch encoding done in 345 ms\n"),
    (0.8259, "0.00.738.145 I decoding image batch 1/1, n_tokens_batch = 576\n"),
    (1.0688, "0.00.980.900 I image decoded (batch 1/1) in 243 ms\n"),
    (1.0748, "0.00.987.058 I mtmd batch encoding done in 6 ms\n"),
    (1.0749, "0.00.987.210 I decoding image batch 1/1, n_tokens_batch = 576\n"),
    (1.1298, "0.01.037.418 I image decoded (batch 1/1) in 50 ms\n"),
    (1.1645, "0.01.076.394 I mtmd batch encoding done in 37 ms\n"),
    (1.1659, "0.01.078.001 I decoding image batch 1/1, n_tokens_batch = 576\n"),
    (2.0485, "0.01.955.657 I image decoded (batch 1/1) in 877 ms\n"),
    (2.0897, "\nah"),
    (2.3782, " person"),
    (2.6338, " [in"),
    (2.9232, " under"),
    (3.1558, " looks"),
    (3.1903, "\ufffd"),
    (3.1936, "\ufffd"),
    (3.3702, " mo"),
    (4.5, "\n\n"),  # flushed at exit: not part of the answer's timing
]


def test_mtmd_parser_reads_every_stage() -> None:
    parsed = parse_mtmd_output(MTMD_CHUNKS, 8)
    assert parsed.image_encode_s == pytest.approx(0.403)
    assert parsed.image_prefill_s == pytest.approx(1.192)
    assert parsed.first_token_s == pytest.approx(2.0897 - 0.3383)
    assert parsed.text_prefill_s == pytest.approx(2.0897 - 0.3383 - 0.403 - 1.192)
    assert parsed.decode_s == pytest.approx((3.3702 - 2.0897) * 8 / 7)  # 7 steps seen, 8 counted
    assert (parsed.image_tokens, parsed.generated_tokens) == (2880, 8)
    assert parsed.total_s == pytest.approx(parsed.first_token_s + parsed.decode_s)
    assert parsed.settings == {"n_ctx": "32768", "n_threads": "2", "flash_attn": "auto", "n_batch": "2048",
                               "n_ubatch": "512"}


def test_mtmd_parser_refuses_output_without_an_answer() -> None:
    with pytest.raises(BenchmarkError, match="Run the anchor binary by hand"):
        parse_mtmd_output([(0.1, "0.00.001.000 E error: failed to load model\n")], 8)


def _mtmd_binary() -> Path | None:
    explicit = os.environ.get("LLAVA_EDGE_MTMD_CLI")
    candidates = [Path(explicit)] if explicit else sorted(
        (Path.home() / ".cache/llava-edge/mtmd-cli").glob(
            "llama_cpp_python-*/vendor/llama.cpp/build-mtmd-cli/bin/llama-mtmd-cli"
        )
    )
    return next((path for path in candidates if path.is_file()), None)


@pytest.mark.slow
def test_mtmd_cli_runs_for_real_on_the_tiny_model(tiny_files: ModelFiles, tmp_path: Path) -> None:
    binary = _mtmd_binary()
    if binary is None:
        pytest.skip("no llama-mtmd-cli built (benchmarks/build_mtmd_cli.sh builds it)")
    image = bench_image((336, 336), 0, tmp_path)
    run, parsed = run_mtmd(mtmd_command(binary, tiny_files.model_path, tiny_files.mmproj_path, image, "Hi", 4), 4)
    assert run.peak_rss_bytes > 0
    assert parsed.image_tokens == 576
    assert parsed.generated_tokens == 4
    assert parsed.image_encode_s > 0 and parsed.image_prefill_s > 0


def test_run_measured_reports_the_child_alone() -> None:
    run = run_measured(["python3", "-c", "import sys; b = bytearray(64 << 20); print(sys.stdin.read())"], "hello")
    assert run.returncode == 0 and run.stdout.strip() == "hello"
    assert run.peak_rss_bytes >= 64 << 20
    assert run.wall_s > 0 and run.others_cores >= 0


def test_bandwidth_is_positive() -> None:
    assert measure_bandwidth(1, repeats=1, size=8 << 20) > 0


@pytest.fixture(scope="module")
def tiny_report() -> BenchReport:
    configs = [
        BenchConfig(DEFAULTS, image_size=(336, 336), runs=2, warmup=1, max_tokens=4, warmup_tokens=2,
                    followup=True),
        BenchConfig(LOW, image_size=(672, 336), detail="low", runs=1, warmup=0, max_tokens=4,
                    runtime={"flash_attn": True}),
    ]
    return run_benchmark(configs, measure_bandwidth=False, busy_cores=None)


@pytest.mark.slow
def test_every_stage_is_measured(tiny_report: BenchReport) -> None:
    default = tiny_report.result(DEFAULTS)
    assert default is not None
    assert len(default.samples) == 2
    for key in (*STAGES, *COUNTS, "followup_first_token_s", "followup_total_s"):
        assert key in default.summary, key
        assert {"median", "min", "max", "spread_pct", "n"} <= set(default.summary[key])
    assert default.summary["image_tokens"]["median"] == 576
    assert default.summary["generated_tokens"]["median"] == 4
    assert default.load_s > 0 and default.peak_rss_bytes > 0
    assert default.settings["repack"] is False  # the resolved RuntimeOptions
    assert {"loadavg_before", "loadavg_after", "others_cores"} <= set(default.environment["runs"][0])
    low = tiny_report.result(LOW)
    assert low is not None and low.settings["flash_attn"] is True
    assert "followup_first_token_s" not in low.summary


@pytest.mark.slow
def test_follow_up_reuses_the_image_prefix(tiny_report: BenchReport) -> None:
    default = tiny_report.result(DEFAULTS)
    assert default is not None
    for sample in default.samples:
        assert not sample.get("prefix_cache_hit")  # each timed picture is new to the cache
        assert sample["followup"]["prefix_cache_hit"]
        assert sample["followup"]["image_encode_s"] == 0


@pytest.mark.slow
def test_a_budget_configuration_feeds_its_tokens_and_reuses_the_reduced_prefix() -> None:
    config = BenchConfig("budget", image_size=(672, 672), runs=1, warmup=0, max_tokens=4, image_tokens=320,
                         token_selection="pooled", followup=True)
    [result] = run_benchmark([config], measure_bandwidth=False, busy_cores=None).results
    assert result.summary["image_tokens"]["median"] == 320 and result.summary["image_select_s"]["median"] > 0
    assert result.samples[0]["followup"]["prefix_cache_hit"]


@pytest.mark.slow
def test_outputs_are_written(tiny_report: BenchReport, tmp_path: Path) -> None:
    paths = write_outputs(tiny_report, tmp_path, "tiny")
    document = json.loads(paths["json"].read_text())
    assert {"created", "machine", "versions", "results", "targets"} <= set(document)
    assert document["results"][0]["config"]["name"] == DEFAULTS
    assert document["versions"]["llama_cpp_python"]
    text = paths["md"].read_text()
    assert "| configuration |" in text and DEFAULTS in text and "tiny.png" in text
    assert paths["png"].read_bytes().startswith(b"\x89PNG")
    again = load_report(paths["json"])
    assert again.results[0].config == tiny_report.results[0].config
    assert again.results[0].summary == tiny_report.results[0].summary


def _result(name: str, total: float, ttft: float, rss_gib: float = 1.0, followup: float | None = None) -> ConfigResult:
    sample = {"total_s": total, "first_token_s": ttft, "decode_s": 1.0, "generated_tokens": 4}
    if followup is not None:
        sample["followup"] = {"first_token_s": followup, "total_s": followup + 1}
    return ConfigResult(BenchConfig(name), [sample], summarize([sample]), 1.0, int(rss_gib * 2**30), {}, {})


def test_targets_are_ratios_with_verdicts() -> None:
    report = BenchReport("now", {}, {}, [
        _result(ANCHOR, total=230, ttft=200),
        _result(DEFAULTS, total=160, ttft=130, rss_gib=5.5, followup=5),
        _result(LOW, total=50, ttft=30),
        _result(AS_ANCHOR, total=233, ttft=201),
    ])
    rows = {row["target"].split(" ")[0] + row["unit"]: row for row in evaluate_targets(report)}
    assert rows["defaultx faster"]["value"] == pytest.approx(230 / 160, abs=0.01) and rows["defaultx faster"]["met"]
    assert rows["follow-upx shorter"]["value"] == 26 and rows["follow-upx shorter"]["met"]
    assert rows['detail="low"x faster']["value"] == 3.2 and rows['detail="low"x faster']["met"] is False
    assert rows["peakGiB"]["met"] is True
    assert rows["overhead%"]["value"] == pytest.approx(1.3, abs=0.01) and rows["overhead%"]["met"]
    assert "**no**" in markdown(report)


def test_scaling_multiplies_only_text_model_stages() -> None:
    sample = {"image_encode_s": 2.0, "image_prefill_s": 1.0, "text_prefill_s": 0.5, "first_token_s": 3.6,
              "decode_s": 1.0, "total_s": 4.6, "generated_tokens": 8, "followup": {"first_token_s": 0.1}}
    scaled = scale_sample(sample, 8)
    assert scaled["image_encode_s"] == 2.0
    assert (scaled["image_prefill_s"], scaled["text_prefill_s"], scaled["decode_s"]) == (8.0, 4.0, 8.0)
    assert scaled["first_token_s"] == pytest.approx(3.6 + 7 + 3.5)
    assert scaled["total_s"] == pytest.approx(4.6 + 7 + 3.5 + 7)
    assert scaled["decode_tok_s"] == 1.0 and "followup" not in scaled


def test_summary_reports_median_and_spread() -> None:
    summary = summarize([{"total_s": value} for value in (10.0, 12.0, 11.0)])
    assert summary["total_s"] == {"median": 11.0, "min": 10.0, "max": 12.0, "n": 3,
                                  "spread_pct": pytest.approx(100 * 2 / 11)}


def test_sweep_changes_one_setting_at_a_time() -> None:
    configs = sweep_suite("synthetic-real-shape-4l", names=["defaults", "repack=on"])
    assert [config.runtime for config in configs] == [{}, {"repack": True}]


@pytest.mark.slow
def test_bench_command_writes_table_json_and_chart(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [
        "bench", "--model", "synthetic-tiny", "--image-size", "336x336", "--runs", "1", "--warmup", "0",
        "--max-tokens", "2", "--no-bandwidth", "--busy-cores", "64", "--flash-attn", "--out", str(tmp_path),
        "--name", "cli",
    ])
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cli.json", "cli.md", "cli.png"]
    assert json.loads((tmp_path / "cli.json").read_text())["results"][0]["config"]["runtime"] == {"flash_attn": True}


def test_decode_ceiling_needs_only_image_tokens(tiny_files: ModelFiles) -> None:
    """The anchor reports no prompt token count; the ceiling then uses the image tokens."""
    sample = {"total_s": 2.0, "decode_s": 1.0, "decode_tok_s": 8.0, "generated_tokens": 8, "image_tokens": 576}
    result = ConfigResult(BenchConfig("anchor-like"), [sample], summarize([sample]), 1.0, 1, {},
                          {"model_path": str(tiny_files.model_path)})
    add_decode_ceiling(result, 20.0)
    assert result.decode_ceiling["measured_tok_s"] == 8.0
    assert 0 < result.decode_ceiling["fraction"] < 1
    assert result.decode_ceiling["bytes_per_token"] > tiny_files.model_path.stat().st_size / 2


BENCH_TINY = ["bench", "--model", "synthetic-tiny", "--image-size", "336x336", "--runs", "1", "--warmup", "0",
              "--no-bandwidth", "--busy-cores", "64"]


@pytest.mark.slow
def test_a_failing_worker_is_a_one_line_error_not_a_traceback(tmp_path: Path) -> None:
    """The child worker cannot fit max_tokens in n_ctx 512: the command says so and what to try, exit 1."""
    result = CliRunner().invoke(main, [*BENCH_TINY, "--max-tokens", "600", "--n-ctx", "512", "--out", str(tmp_path)])

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # a ClickException, not an escaped error
    assert "the benchmark worker exited with status 1" in result.output and "[benchmarkFailed]" in result.output
    assert "llava-edge caption" in result.output and "ContextOverflowError" in result.output


def test_a_failing_anchor_is_a_one_line_error_not_a_traceback(tmp_path: Path) -> None:
    broken = tmp_path / "llama-mtmd-cli"
    broken.write_text("#!/bin/sh\necho 'error: failed to load model' >&2\nexit 3\n")
    broken.chmod(0o755)
    result = CliRunner().invoke(main, [*BENCH_TINY, "--max-tokens", "2", "--suite", "targets", "--only", ANCHOR,
                                       "--anchor", str(broken), "--out", str(tmp_path / "out")])

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "llama-mtmd-cli exited with status 3" in result.output and "[benchmarkFailed]" in result.output
    assert "failed to load model" in result.output


def test_an_anchor_configuration_without_an_anchor_says_how_to_get_one() -> None:
    configs = [replace(sweep_suite("synthetic-tiny", runs=1, warmup=0, max_tokens=2)[0], engine=ENGINE_MTMD)]
    with pytest.raises(BenchmarkError, match=r"build_mtmd_cli\.sh"):
        run_benchmark(configs, measure_bandwidth=False)
