"""Evaluation output: JSON (everything), a markdown table per detail, and the chart (``chart.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llava_edge.evaluation.chart import draw_chart
from llava_edge.evaluation.runner import EvalReport, VariantResult

GIB = 2**30
COLUMNS = ("variant", "type", "image tokens", "file MB", "peak RSS GiB", "KL mean", "KL p99", "top-1 agree",
           "ΔNLL/token", "KL vs own all tokens", "CLIP encode s", "prefill tok/s", "decode tok/s", "first token s",
           "total s")
NOTES = (
    "KL: KL(reference || variant) of the next-token distributions in nats, teacher-forced over the reference "
    "captions, mean and 99th percentile over all caption positions. Top-1 agree: share of positions where "
    "both models rank the same token first. ΔNLL/token: the variant's negative log-likelihood of the "
    "reference captions minus the reference model's, per token (positive: the variant finds the captions "
    "less likely). Speed: medians over the images of a timed caption of a fixed number of tokens; model "
    "load excluded. Peak RSS: the whole measuring process (load, captions and scoring). A row with a budget "
    "(`@640 diverse`) fed at most that many image tokens per image; its KL columns compare it with the one "
    "reference at all tokens, and \"KL vs own all tokens\" (mean) with the same variant at all tokens. Image "
    "tokens: the median fed per caption."
)
SYNTHETIC_NOTE = ("Synthetic models have random weights: their numbers show the structure of quantization loss "
                  "(how it grows as precision drops), not the quality of real captions.")


def write_outputs(report: EvalReport, directory: str | Path, stem: str, *, chart: bool = True) -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and (with ``chart``, needs matplotlib) ``<stem>.png``.

    Raises:
        MissingExtraError: ``chart`` is on and matplotlib is missing; the message says how to install it.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md"}
    paths["json"].write_text(json.dumps(report.to_dict(), indent=1, default=str) + "\n")
    if chart:
        paths["png"] = draw_chart(report, out / f"{stem}.png")
    paths["md"].write_text(markdown(report, chart=paths["png"].name if chart else None))
    return paths


def markdown(report: EvalReport, *, chart: str | None = None) -> str:
    """One table per detail, the notes, the settings and the machine."""
    lines = [f"# llava-edge eval, {report.created}", "", f"Reference: **{report.reference}**. "
             f"{len(report.images)} image(s), prompt {report.settings['prompt']!r}, "
             f"{report.settings['max_tokens']} generated tokens per timed caption.", ""]
    if chart:
        lines += [f"![quality loss against time per caption]({chart})", ""]
    for detail in report.settings["details"]:
        lines += [f"## detail={detail}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(_row(variant, detail)) + " |" for variant in report.variants]
        lines.append("")
    lines.append(NOTES)
    if any(variant.name.startswith("synthetic-") for variant in report.variants):
        lines += ["", SYNTHETIC_NOTE]
    stand_ins = [variant.label for variant in report.variants if "stand-in" in variant.label]
    if stand_ins:
        lines += ["", "Stand-ins: " + "; ".join(stand_ins) + ". Today's llama.cpp quantizer no longer makes the "
                  "published Q3_K_XS mix under that name; the closest current type is measured in its place."]
    lines += ["", "## Machine and versions", ""]
    lines += [f"- {key}: {_plain(value)}" for key, value in {**report.machine, **report.versions}.items()]
    return "\n".join(lines) + "\n"


def _row(variant: VariantResult, detail: str) -> list[str]:
    quality, speed = variant.quality.get(detail, {}), variant.speed.get(detail, {})
    name = f"**{variant.name}** (reference)" if variant.reference else variant.row_name
    return [
        name, variant.label, _fixed(speed, "image_tokens", 0), f"{variant.file_bytes / 1e6:.1f}",
        f"{variant.peak_rss_bytes / GIB:.2f}", _number(quality, "kl_mean"), _number(quality, "kl_p99"),
        _percent(quality, "top1_agreement"), _number(quality, "delta_nll", signed=True),
        _number(variant.quality_own.get(detail, {}), "kl_mean"), _fixed(speed, "image_encode_s", 3),
        _fixed(speed, "prefill_tok_s", 1), _fixed(speed, "decode_tok_s", 1), _fixed(speed, "first_token_s", 3),
        _fixed(speed, "total_s", 3),
    ]


def _number(values: dict[str, float], key: str, *, signed: bool = False) -> str:
    if key not in values:
        return ""
    return f"{values[key]:{'+' if signed else ''}.3g}"


def _percent(values: dict[str, float], key: str) -> str:
    return f"{100 * values[key]:.1f} %" if key in values else ""


def _fixed(values: dict[str, float], key: str, digits: int) -> str:
    return f"{values[key]:.{digits}f}" if key in values else ""


def _plain(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
