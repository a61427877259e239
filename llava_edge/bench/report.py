"""Benchmark output: JSON (everything), a markdown table and a PNG chart of the stage breakdown.

The chart needs matplotlib, from the ``bench`` extra (``pip install 'llava-edge[bench]'``); it is
imported only when a chart is drawn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llava_edge.bench.runner import BenchConfig, BenchReport, ConfigResult
from llava_edge.bench.suites import evaluate_targets
from llava_edge.errors import MissingExtraError

GIB = 2**30
CHART_STAGES = (("image_encode_s", "image encode (CLIP)"), ("image_prefill_s", "image-token prefill"),
                ("text_prefill_s", "text prefill"), ("decode_s", "decode"))
COLUMNS = ("configuration", "engine", "image", "detail", "settings", "runs", "image tok", "load s", "encode s",
           "image prefill s", "TTFT s", "follow-up TTFT s", "decode tok/s", "total s", "peak RSS GiB",
           "decode % of ceiling")
NOTE = ("Medians; ± is half the min-max range over the timed runs. TTFT = time to first token. Times exclude "
        "model load (its own column). *Scaled* rows multiply a reduced-layer model's text-model stages to 32 "
        "layers (estimates, not measurements).")


def write_outputs(report: BenchReport, directory: str | Path, stem: str) -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and (with matplotlib) ``<stem>.png`` into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md", "png": out / f"{stem}.png"}
    document = report.to_dict()
    document["targets"] = evaluate_targets(report)
    paths["json"].write_text(json.dumps(document, indent=1, default=str) + "\n")
    paths["md"].write_text(markdown(report, chart=paths["png"].name))
    draw_chart(report, paths["png"])
    return paths


def load_report(path: str | Path) -> BenchReport:
    """A report read back from its JSON (to re-render it, or to merge runs)."""
    document = json.loads(Path(path).read_text())
    results = []
    for item in document["results"]:
        config = dict(item.pop("config"))
        config["image_size"] = tuple(config["image_size"])
        config["anchor_args"] = tuple(config["anchor_args"])
        results.append(ConfigResult(config=BenchConfig(**config), **item))
    return BenchReport(document["created"], document["machine"], document["versions"], results)


def markdown(report: BenchReport, *, chart: str | None = None) -> str:
    """The results table (medians, with the spread), the targets, and the machine."""
    lines = [f"# llava-edge benchmark, {report.created}", ""]
    if chart:
        lines += [f"![stage breakdown]({chart})", ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for result in report.results:
        lines.append("| " + " | ".join(_row(result, result.summary)) + " |")
        if result.scaled:
            lines.append("| " + " | ".join(_row(result, result.scaled, scaled=True)) + " |")
    lines += ["", NOTE]
    targets = evaluate_targets(report)
    if targets:
        lines += ["", "## Targets", "", "| target | measured | goal | met |", "|---|---|---|---|"]
        for row in targets:
            met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
            lines.append(f"| {row['target']} | {row['value']} {row['unit']} | {row['goal']} | {met} |")
    lines += ["", "## Machine and versions", ""]
    lines += [f"- {key}: {_plain(value)}" for key, value in {**report.machine, **report.versions}.items()]
    return "\n".join(lines) + "\n"


def _row(result: ConfigResult, summary: dict[str, dict[str, float]], *, scaled: bool = False) -> list[str]:
    config = result.config
    name = f"{config.name} *(scaled)*" if scaled else config.name
    ceiling = result.decode_ceiling.get("fraction")
    return [
        name, config.engine, f"{config.image_size[0]}x{config.image_size[1]}", config.detail,
        _settings(result), str(len(result.samples)), _cell(summary, "image_tokens", digits=0), f"{result.load_s:.1f}",
        _cell(summary, "image_encode_s"), _cell(summary, "image_prefill_s"), _cell(summary, "first_token_s"),
        _cell(summary, "followup_first_token_s", digits=2), _cell(summary, "decode_tok_s", digits=2),
        _cell(summary, "total_s"), f"{result.peak_rss_bytes / GIB:.2f}",
        "" if ceiling is None or scaled else f"{100 * ceiling:.0f} %",
    ]


def _settings(result: ConfigResult) -> str:
    if result.config.engine != "llava-edge":
        return " ".join(result.config.anchor_args) or "CLI defaults"
    return ", ".join(f"{key}={value}" for key, value in result.config.runtime.items()) or "defaults"


def _cell(summary: dict[str, dict[str, float]], key: str, *, digits: int = 1) -> str:
    if key not in summary:
        return ""
    stat = summary[key]
    half = (stat["max"] - stat["min"]) / 2
    return f"{stat['median']:.{digits}f}" + (f" ± {half:.{digits}f}" if half >= 0.5 * 10**-digits else "")


def _plain(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def draw_chart(report: BenchReport, path: str | Path) -> Path:
    """A horizontal stacked bar per configuration: median seconds per stage (scaled rows marked).

    Raises:
        MissingExtraError: matplotlib is missing; the message says how to install it.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise MissingExtraError("The benchmark chart needs matplotlib: pip install 'llava-edge[bench]'") from err
    bars = [(r.config.name + (" (scaled)" if r.scaled else ""), r.scaled or r.summary) for r in report.results]
    figure, axes = plt.subplots(figsize=(10, 0.55 * len(bars) + 1.6))
    left = [0.0] * len(bars)
    for key, label in CHART_STAGES:
        widths = [summary.get(key, {}).get("median", 0.0) for _, summary in bars]
        axes.barh(range(len(bars)), widths, left=left, label=label)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    axes.set_yticks(range(len(bars)), [name for name, _ in bars])
    axes.invert_yaxis()
    axes.set_xlabel("seconds per caption (median; model load excluded)")
    axes.set_title(f"llava-edge stage breakdown — {report.machine.get('cpu', '')}, {report.machine.get('cores')} cores",
                   fontsize=10)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
