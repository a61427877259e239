"""Speed and memory of every published quantization type on the real shape, one variant at a time.

Writes the preset's f16 text model once (13.5 GiB for ``real-shape``: check free disk), then for each
type: quantizes it with llama.cpp's quantizer (3-8 GB), measures it with the ``llava-edge eval`` harness
in its own process (CLIP encode, prefill and decode tok/s, first token, total, peak RSS, file size) at
``detail="low"`` over the first ``--images`` images of the built-in eval set, records the result under
``benchmarks/results/`` as soon as it finishes, and deletes the quantized file before the next type.
Random weights: the speed and memory are real, the captions are not, so no quality is measured here
(``llava-edge eval --ladder`` measures the quality structure on the small ladder).

Takes hours on a 2-core machine: run it with nothing else running, e.g.

    python benchmarks/quant_ladder.py --preset real-shape --images 3
    python benchmarks/quant_ladder.py --preset ladder --images 1        # a quick check of the script

A type already recorded in ``--out`` is skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llava_edge.evaluation.eval_set import load_eval_set
from llava_edge.evaluation.runner import EvalSettings, run_eval
from llava_edge.evaluation.variants import EvalVariant
from llava_edge.models.catalog import ModelFiles
from llava_edge.models.synthetic import PRESETS, TEMPLATE, build_synthetic_pair, write_f16_text_model
from llava_edge.models.synthetic_ladder import RUNGS
from llava_edge.runtime.quantize import quantize_gguf

GIB = 2**30
COLUMNS = ("type", "file GB", "peak RSS GiB", "load s", "CLIP encode s", "prefill tok/s", "decode tok/s",
           "first token s", "total s")


def measure_type(variant: str, quant: str, f16: Path, mmproj: Path, work: Path, settings: EvalSettings,
                 images: int) -> dict[str, Any]:
    """Quantize, measure in its own process, delete; the variant's result as a dict."""
    model = work / f"model-{quant}.gguf"
    quantize_gguf(f16, model, quant)
    try:
        label = variant if variant == quant else f"{variant} (stand-in: built as {quant})"
        chosen = EvalVariant(variant, label, quant, ModelFiles(model, mmproj, TEMPLATE, variant))
        report = run_eval([chosen], chosen, load_eval_set(limit=images), settings)
        result = asdict(report.variants[0])
        result.update(machine=report.machine, versions=report.versions, settings=report.settings)
        return result
    finally:
        model.unlink(missing_ok=True)


def table(results: list[dict[str, Any]]) -> str:
    """The markdown table of every recorded type (medians over the images)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for result in results:
        speed = result["speed"]["low"]
        cells = [result["label"], f"{result['file_bytes'] / 1e9:.2f}", f"{result['peak_rss_bytes'] / GIB:.2f}",
                 f"{result['load_s']:.1f}", f"{speed['image_encode_s']:.2f}", f"{speed['prefill_tok_s']:.1f}",
                 f"{speed['decode_tok_s']:.2f}", f"{speed['first_token_s']:.1f}", f"{speed['total_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="real-shape", choices=[name for name in PRESETS if name != "tiny"])
    parser.add_argument("--images", type=int, default=3, help="images of the eval set (one caption each)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--types", nargs="*", default=[rung.variant for rung in RUNGS])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--work", type=Path, default=None, help="folder for the f16 base and the quantized files")
    args = parser.parse_args()
    settings = EvalSettings(details=("low",), max_tokens=args.max_tokens, score_tokens=8)
    stem = args.out / f"quant-ladder-{args.preset}"
    args.out.mkdir(parents=True, exist_ok=True)
    recorded_path = stem.with_suffix(".json")
    recorded = json.loads(recorded_path.read_text()) if recorded_path.exists() else []
    mmproj = build_synthetic_pair(args.preset, quantize=quantize_gguf).mmproj_path
    with tempfile.TemporaryDirectory(prefix="quant-ladder-", dir=args.work) as scratch:
        work = Path(scratch)
        f16 = write_f16_text_model(args.preset, work / "model-f16.gguf")
        rungs = {rung.variant: rung.quant for rung in RUNGS}
        for variant in args.types:
            if any(result["name"] == variant for result in recorded):
                continue
            print(f"{variant}: quantizing and measuring", flush=True)
            recorded.append(measure_type(variant, rungs[variant], f16, mmproj, work, settings, args.images))
            recorded_path.write_text(json.dumps(recorded, indent=1, default=str) + "\n")
            stem.with_suffix(".md").write_text(table(recorded))
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
