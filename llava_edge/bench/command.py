"""The ``llava-edge bench`` command (added to the CLI group by ``llava_edge.cli``)."""

from __future__ import annotations

from typing import Any

import click


@click.command("bench")
@click.option("--model", "-m", default="synthetic-real-shape-4l", show_default=True,
              help="Variant id / alias, or synthetic-<preset> (real-shape, real-shape-4l, tiny).")
@click.option("--suite", type=click.Choice(["custom", "targets", "sweep"]), default="custom", show_default=True,
              help="custom: --image-size x --detail with one option set; targets: the performance target matrix; "
                   "sweep: one CPU setting at a time.")
@click.option("--only", multiple=True, help="Run only the suite configurations with these names.")
@click.option("--image-size", "sizes", multiple=True, default=("672x672",), show_default=True)
@click.option("--detail", "details", multiple=True, type=click.Choice(["auto", "low", "high"]), default=("auto",))
@click.option("--runs", type=click.IntRange(1), default=3, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=1, show_default=True, help="Warm-up captions (336x336).")
@click.option("--max-tokens", type=click.IntRange(1), default=64, show_default=True,
              help="Generated tokens per caption (random weights never stop early, so this pins the count).")
@click.option("--followup", is_flag=True, help="Also time a follow-up question about each image.")
@click.option("--anchor", type=click.Path(exists=True, dir_okay=False),
              help="llama-mtmd-cli binary (benchmarks/build_mtmd_cli.sh) to run on the same inputs.")
@click.option("--out", type=click.Path(file_okay=False), default="benchmarks/results", show_default=True)
@click.option("--name", default=None, help="File name stem (default: <model>-<suite>-<UTC time>).")
@click.option("--repack/--no-repack", default=None, help="Weight repacking (llama.cpp extra buffer types).")
@click.option("--flash-attn/--no-flash-attn", default=None)
@click.option("--threads", type=click.IntRange(1), default=None, help="Decode threads.")
@click.option("--threads-batch", type=click.IntRange(1), default=None, help="Prefill and CLIP threads.")
@click.option("--batch", type=click.IntRange(1), default=None, help="n_batch.")
@click.option("--ubatch", type=click.IntRange(1), default=None, help="n_ubatch.")
@click.option("--n-ctx", type=click.IntRange(512), default=None)
@click.option("--no-bandwidth", is_flag=True, help="Skip the memory-bandwidth measurement.")
@click.option("--busy-cores", type=click.FloatRange(0), default=0.5, show_default=True,
              help="Re-run a process once when other processes kept more cores than this busy during it.")
def bench_command(model: str, suite: str, only: tuple[str, ...], sizes: tuple[str, ...], details: tuple[str, ...],
                  runs: int, warmup: int, max_tokens: int, followup: bool, anchor: str | None, out: str,
                  name: str | None, no_bandwidth: bool, busy_cores: float, **settings: Any) -> None:
    """Benchmark captioning per stage; write JSON, a markdown table and a PNG chart."""
    import time

    from llava_edge.bench.report import write_outputs
    from llava_edge.bench.runner import run_benchmark
    from llava_edge.bench.suites import custom_suite, sweep_suite, target_suite

    runtime = _bench_runtime(**settings)
    common: dict[str, Any] = {"runs": runs, "warmup": warmup, "max_tokens": max_tokens}
    if suite == "targets":
        configs = target_suite(model, size=_size(sizes[0]), anchor=anchor, **common)
    elif suite == "sweep":
        configs = sweep_suite(model, size=_size(sizes[0]), **common)
    else:
        configs = custom_suite(model, [_size(s) for s in sizes], list(details), runtime, followup=followup,
                               anchor=anchor is not None, **common)
    configs = [config for config in configs if not only or config.name in only]
    if not configs:
        raise click.BadParameter("--only matched no configuration of the suite.")
    stem = name or f"{model}-{suite}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    report = run_benchmark(configs, anchor=anchor, measure_bandwidth=not no_bandwidth,
                           progress=lambda line: click.echo(line, err=True),
                           on_result=lambda partial: _write_partial(partial, out, stem),
                           busy_cores=busy_cores)
    for kind, path in write_outputs(report, out, stem).items():
        click.echo(f"{kind}: {path}")


def _write_partial(report: Any, out: str, stem: str) -> None:
    """Write the report so far, so that what finished is kept if a later configuration fails."""
    from llava_edge.bench.report import write_outputs

    write_outputs(report, out, stem)


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    try:
        return int(width), int(height or width)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not WIDTHxHEIGHT (e.g. 672x672)") from None


def _bench_runtime(repack: bool | None, flash_attn: bool | None, threads: int | None, threads_batch: int | None,
                   batch: int | None, ubatch: int | None, n_ctx: int | None) -> dict[str, Any]:
    chosen = {"repack": repack, "flash_attn": flash_attn, "threads": threads, "threads_batch": threads_batch,
              "n_batch": batch, "n_ubatch": ubatch, "n_ctx": n_ctx}
    return {key: value for key, value in chosen.items() if value is not None}
