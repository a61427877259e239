"""Two caption commands, A and B, run in turn as whole processes: per-stage medians and the A/B ratio pair by pair.

Each command must print ``llava-edge caption --json`` output (one JSON object with ``timings``). A and B
alternate (A B A B ...) after one warm-up of each, so a drift in the machine's speed touches both alike.
Writes ``OUT.json`` and ``OUT.md`` with the machine described.

Example (streaming against the commit before it, the old code from a git worktree on ``PYTHONPATH``)::

    git worktree add /tmp/before 8ee6989
    CAPTION="python -m llava_edge caption noise.png --model synthetic-real-shape --detail low --max-tokens 32 --json"
    python benchmarks/ab_caption.py --runs 5 --out benchmarks/results/streaming-cost-real-shape \\
        --a "$CAPTION" --b "env PYTHONPATH=/tmp/before $CAPTION" \\
        --a-label streaming --b-label "before streaming (8ee6989)"
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

STAGES = ("image_encode_s", "image_prefill_s", "text_prefill_s", "first_token_s", "decode_s", "total_s")


def run_once(command: str) -> dict[str, Any]:
    """One whole-process run: its wall seconds, the caption's stage timings and text."""
    began = time.perf_counter()
    done = subprocess.run(shlex.split(command), capture_output=True, text=True, check=True)
    wall = time.perf_counter() - began
    record = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "timings": record["timings"], "text": record["text"]}


def spread(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    stages = {stage: spread([run["timings"][stage] for run in runs]) for stage in STAGES}
    decode_rates = [(run["timings"]["generated_tokens"] - 1) / run["timings"]["decode_s"] for run in runs
                    if run["timings"]["decode_s"] > 0]
    return {"stages_s": stages, "wall_s": spread([run["wall_s"] for run in runs]),
            "decode_tok_s": spread(decode_rates) if decode_rates else None}


def machine() -> dict[str, Any]:
    from llava_edge.host import cores, cpu, memory

    return {"cpu": cpu.cpu_name(), "amx": cpu.cpu_has_amx(), "cores": len(cores.usable_cpus()),
            "ram_gib": round(memory.total_memory() / 2**30), "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", required=True, help="command A (the change)")
    parser.add_argument("--b", required=True, help="command B (the anchor)")
    parser.add_argument("--a-label", default="A")
    parser.add_argument("--b-label", default="B")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--what", default="A against B")
    parser.add_argument("--out", required=True, help="path without extension")
    args = parser.parse_args()

    run_once(args.a), run_once(args.b)  # warm-ups: the page cache, the first-run costs
    a_runs, b_runs = [], []
    for _ in range(args.runs):
        a_runs.append(run_once(args.a))
        b_runs.append(run_once(args.b))
    ratios = [a["timings"]["total_s"] / b["timings"]["total_s"] for a, b in zip(a_runs, b_runs, strict=True)]
    walls = [a["wall_s"] / b["wall_s"] for a, b in zip(a_runs, b_runs, strict=True)]
    report = {
        "what": args.what, "date": time.strftime("%Y-%m-%d"), "machine": machine(),
        "method": f"whole processes, A and B alternating, {args.runs} counted runs each after 1 warm-up each; "
                  "medians; stage timings from each run's JSON output",
        "A": {"label": args.a_label, "command": args.a, **summary(a_runs)},
        "B_anchor": {"label": args.b_label, "command": args.b, **summary(b_runs)},
        "ratio_A_over_B": {"caption_total": spread(ratios), "whole_process_wall": spread(walls)},
        "same_text": len({run["text"] for run in a_runs + b_runs}) == 1,
    }
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    a, b = report["A"], report["B_anchor"]
    rows = [f"| {stage} | {a['stages_s'][stage]['median']} | {b['stages_s'][stage]['median']} |" for stage in STAGES]
    ratio = report["ratio_A_over_B"]
    return "\n".join([
        f"# {report['what']}", "",
        f"Machine: {report['machine']}", "", f"Method: {report['method']}.", "",
        f"A: `{a['command']}` ({a['label']})", "", f"B: `{b['command']}` ({b['label']})", "",
        f"| stage (median s) | {a['label']} (A) | {b['label']} (B) |", "|---|---|---|", *rows,
        f"| decode tok/s | {(a['decode_tok_s'] or {}).get('median')} | {(b['decode_tok_s'] or {}).get('median')} |",
        "",
        f"A/B per caption (pair by pair): median {ratio['caption_total']['median']} (min "
        f"{ratio['caption_total']['min']}, max {ratio['caption_total']['max']}); whole process wall: median "
        f"{ratio['whole_process_wall']['median']} ({ratio['whole_process_wall']['min']} .. "
        f"{ratio['whole_process_wall']['max']}). Same caption text in every run: {report['same_text']}.", "",
    ])


if __name__ == "__main__":
    main()
