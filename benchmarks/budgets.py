"""What an image token budget saves of a whole caption, against full tokens and the tuned llama-mtmd-cli.

In one run, each configuration in its own process (``llava-edge bench``'s runner: 1 warm-up, then the medians
of ``--runs`` captions of different 672x672 pictures, 64 tokens): ``llama-mtmd-cli -c 4096 -fa on -nr`` (with
``--anchor``), llava-edge at full tokens (2,880), then the budgets 1280, 640 and 320 with ``diverse`` and 640
with ``pooled`` and ``uniform``. The report has every stage (CLIP encode, selection, image prefill, first
token, total, decode tok/s, peak RSS), each budget's whole caption against full-token llava-edge and against
the tuned CLI, and the gate: the 640 ``diverse`` caption at most 1/2.5 of full-token llava-edge, peak RSS no
higher. Speed only: what a budget costs in quality is what ``llava-edge eval --image-tokens`` measures.

Takes about half an hour on the real Q4_K_M model on a 2-core machine; run it with nothing else running:

    python benchmarks/budgets.py --model Q4_K_M --anchor /path/to/llama-mtmd-cli
    python benchmarks/budgets.py --model synthetic-tiny --runs 1 --out /tmp/budgets   # a check of the script

A configuration measured while the machine was busy can be measured again, alone, into the same report (the busy
result stays in it, renamed "(replaced)"):

    python benchmarks/budgets.py --model Q4_K_M --anchor ... --only "mtmd-cli -c 4096 -fa on -nr" \
        --into benchmarks/results/budgets-Q4_K_M.json

Writes ``<out>/budgets-<model>.json`` and ``.md`` (the machine described) as each configuration finishes.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from llava_edge.bench.report import load_report, markdown
from llava_edge.bench.runner import ENGINE_MTMD, BenchConfig, BenchReport, ConfigResult, run_benchmark
from llava_edge.bench.suites import ANCHOR_TUNED, TUNED_ANCHOR_ARGS

GIB = 2**30
FULL = "llava-edge full tokens"
BUDGETS = ((1280, "diverse"), (640, "diverse"), (320, "diverse"), (640, "pooled"), (640, "uniform"))
GATE = (640, "diverse")
GATE_RATIO = 2.5
"""The 640-token caption's whole time at most 1 / 2.5 of full-token llava-edge's."""
COLUMNS = ("configuration", "image tokens", "CLIP encode s", "select s", "image prefill s", "first token s",
           "total s", "decode tok/s", "peak RSS GiB", "full / this", "tuned CLI / this")


def budget_name(tokens: int, selection: str) -> str:
    return f"llava-edge {tokens} {selection}"


def configs(model: str, *, runs: int, max_tokens: int, anchor: bool) -> list[BenchConfig]:
    """The tuned CLI (with ``anchor``), full tokens, then every budget; the same model, size and prompt."""
    base = BenchConfig(name=FULL, model=model, image_size=(672, 672), max_tokens=max_tokens, runs=runs, warmup=1)
    tuned = [replace(base, name=ANCHOR_TUNED, engine=ENGINE_MTMD, anchor_args=TUNED_ANCHOR_ARGS)] if anchor else []
    budgets = [replace(base, name=budget_name(tokens, selection), image_tokens=tokens, token_selection=selection)
               for tokens, selection in BUDGETS]
    return [*tuned, base, *budgets]


def _total(result: ConfigResult | None) -> float | None:
    return None if result is None else result.summary["total_s"]["median"]


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return round(top / bottom, 2) if top is not None and bottom else None


def comparison(report: BenchReport) -> dict[str, Any]:
    """Per configuration, the whole caption against full tokens and the tuned CLI; the gate's verdict."""
    full, tuned = report.result(FULL), report.result(ANCHOR_TUNED)
    rows = {result.config.name: {"full_over_this": _ratio(_total(full), _total(result)),
                                 "tuned_cli_over_this": _ratio(_total(tuned), _total(result))}
            for result in report.results}
    gated = report.result(budget_name(*GATE))
    gate: dict[str, Any] = {"configuration": budget_name(*GATE), "goal": f"full / this >= {GATE_RATIO}",
                            "met": None}
    if gated is not None and full is not None:
        ratio = rows[gated.config.name]["full_over_this"]
        gate.update(full_over_this=ratio, tuned_cli_over_this=rows[gated.config.name]["tuned_cli_over_this"],
                    peak_rss_no_higher=gated.peak_rss_bytes <= full.peak_rss_bytes,
                    met=ratio is not None and ratio >= GATE_RATIO and gated.peak_rss_bytes <= full.peak_rss_bytes)
    return {"ratios": rows, "gate": gate}


def table(report: BenchReport) -> str:
    """The budgets table (medians), the gate, then the runner's full table with the machine and versions."""
    ratios = comparison(report)
    lines = ["# Image token budgets", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for result in report.results:
        summary, ratio = result.summary, ratios["ratios"][result.config.name]

        def cell(key: str, digits: int = 2, summary: dict[str, Any] = summary) -> str:
            return f"{summary[key]['median']:.{digits}f}" if key in summary else "-"

        lines.append("| " + " | ".join([
            result.config.name, cell("image_tokens", 0), cell("image_encode_s"), cell("image_select_s", 3),
            cell("image_prefill_s"), cell("first_token_s"), cell("total_s"), cell("decode_tok_s"),
            f"{result.peak_rss_bytes / GIB:.2f}", str(ratio["full_over_this"] or "-"),
            str(ratio["tuned_cli_over_this"] or "-")]) + " |")
    gate = ratios["gate"]
    verdict = {True: "met", False: "**not met**", None: "not measured"}[gate["met"]]
    lines += ["", f"Gate: {gate['configuration']}, whole caption {gate['goal']} and peak RSS no higher: {verdict} "
              f"(full / this {gate.get('full_over_this')}, tuned CLI / this {gate.get('tuned_cli_over_this')}).",
              "", "Speed only; what a budget costs in quality is what `llava-edge eval --image-tokens` measures.",
              "", markdown(report).replace("# llava-edge benchmark", "## Every stage", 1)]
    return "\n".join(lines)


def write(report: BenchReport, stem: Path) -> None:
    document = {**report.to_dict(), **comparison(report)}
    stem.with_suffix(".json").write_text(json.dumps(document, indent=1, default=str) + "\n")
    stem.with_suffix(".md").write_text(table(report))


def replaced_in(base: BenchReport, again: BenchReport) -> BenchReport:
    """``base`` with each result of ``again`` in place of the one of the same name (kept, renamed)."""
    results = list(base.results)
    for fresh in again.results:
        for index, old in enumerate(results):
            if old.config.name == fresh.config.name:
                results[index:index + 1] = [fresh, replace(old, config=replace(
                    old.config, name=f"{old.config.name} (replaced: measured while the machine was busy)"))]
                break
        else:
            results.append(fresh)
    return replace(base, results=results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="Q4_K_M", help="a variant id or synthetic-<preset>")
    parser.add_argument("--anchor", default=None, help="a llama-mtmd-cli binary (benchmarks/build_mtmd_cli.sh)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--only", action="append", default=None,
                        help="measure only the configuration of this name (repeatable)")
    parser.add_argument("--into", type=Path, default=None,
                        help="a budgets JSON whose result of the same name this run replaces (kept, renamed)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"budgets-{args.model}"
    base = load_report(args.into) if args.into is not None else None
    chosen = [config for config in configs(args.model, runs=args.runs, max_tokens=args.max_tokens,
                                           anchor=args.anchor is not None)
              if args.only is None or config.name in args.only]

    def merged(report: BenchReport) -> BenchReport:
        return report if base is None else replaced_in(base, report)

    report = run_benchmark(chosen, anchor=args.anchor, progress=lambda line: print(line, flush=True),
                           on_result=lambda partial: write(merged(partial), stem))
    write(merged(report), stem)
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
