"""Decode speed with and without a JSON-Schema grammar: same model, same image, same prompt, greedy.

The model is loaded once; free-text and structured captions alternate (after one warm-up of each), so a drift
in the machine's speed touches both alike. Decode tokens/s is ``(generated_tokens - 1) / decode_s`` (the
first token's time belongs to prefill). Also timed: preparing the schema (checks + grammar), once per run.
Writes ``OUT.json`` and ``OUT.md`` with medians and the machine described. Runs on any preset, e.g.::

    python benchmarks/grammar_decode.py --model synthetic-tiny --runs 3 --out /tmp/grammar-tiny
    python benchmarks/grammar_decode.py --model synthetic-real-shape --runs 5 --max-tokens 64 \\
        --out benchmarks/results/grammar-decode-real-shape
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from llava_edge import Captioner, GenerationOptions, RuntimeOptions
from llava_edge.api import structured_output
from llava_edge.bench.machine_facts import describe_machine


def noise_png(seed: int = 0, size: int = 336) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def load_schema(value: str) -> Any:
    return value if value in ("photo", "json") else json.loads(Path(value).read_text())


def one_caption(captioner: Captioner, image: bytes, options: GenerationOptions, schema: Any) -> dict[str, Any]:
    result = captioner.describe(image, "Describe this image.", detail="low", options=options, schema=schema)
    timings = result.timings
    rate = (timings.generated_tokens - 1) / timings.decode_s if timings.decode_s > 0 else 0.0
    return {"decode_tok_s": rate, "generated_tokens": timings.generated_tokens, "decode_s": timings.decode_s,
            "finish_reason": result.finish_reason, "parsed": result.data is not None}


def spread(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    schema = load_schema(args.schema)
    image = noise_png()
    options = GenerationOptions(max_tokens=args.max_tokens, temperature=0.0, seed=1)
    runtime = RuntimeOptions(threads=args.threads, threads_batch=args.threads, prefix_cache_bytes=0)
    with Captioner(args.model, runtime=runtime) as captioner:
        for warm_schema in (None, schema):
            one_caption(captioner, image, options, warm_schema)
        free, constrained, prepare = [], [], []
        for _ in range(args.runs):
            free.append(one_caption(captioner, image, options, None))
            began = time.perf_counter()
            prepared = structured_output(schema)
            prepare.append(time.perf_counter() - began)
            constrained.append(one_caption(captioner, image, options, prepared))
        model = captioner.model_name
    free_rate = statistics.median(item["decode_tok_s"] for item in free)
    grammar_rate = statistics.median(item["decode_tok_s"] for item in constrained)
    return {
        "benchmark": "grammar_decode", "model": model, "schema": args.schema, "runs": args.runs,
        "max_tokens": args.max_tokens, "threads": args.threads, "detail": "low",
        "free_text": {"decode_tok_s": spread([item["decode_tok_s"] for item in free]), "runs": free},
        "grammar": {"decode_tok_s": spread([item["decode_tok_s"] for item in constrained]), "runs": constrained,
                    "prepare_s": spread(prepare)},
        "grammar_over_free_decode": round(grammar_rate / free_rate, 3) if free_rate > 0 else None,
        "machine": describe_machine(bandwidth=False),
    }


def markdown(report: dict[str, Any]) -> str:
    free, grammar = report["free_text"], report["grammar"]
    free_tokens = statistics.median(item["generated_tokens"] for item in free["runs"])
    grammar_tokens = statistics.median(item["generated_tokens"] for item in grammar["runs"])
    return "\n".join([
        f"# Decode with and without a grammar: {report['model']}",
        "",
        f"Schema `{report['schema']}`, greedy, `max_tokens` {report['max_tokens']}, detail low, "
        f"{report['runs']} runs each (alternating, after one warm-up each); medians (min-max).",
        "",
        "| | decode tokens/s | tokens generated |",
        "|---|---|---|",
        f"| free text | {free['decode_tok_s']['median']} ({free['decode_tok_s']['min']}-{free['decode_tok_s']['max']}) "
        f"| {free_tokens} |",
        f"| grammar | {grammar['decode_tok_s']['median']} ({grammar['decode_tok_s']['min']}-"
        f"{grammar['decode_tok_s']['max']}) | {grammar_tokens} |",
        "",
        f"Grammar / free decode speed: **{report['grammar_over_free_decode']}**. Preparing the schema (checks + "
        f"grammar): median {grammar['prepare_s']['median']} s.",
        "",
        f"Machine: {json.dumps(report['machine'])}",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="synthetic-tiny")
    parser.add_argument("--schema", default="photo", help="photo, json, or a JSON Schema file")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", required=True, help="path without extension: OUT.json and OUT.md are written")
    args = parser.parse_args()
    report = run(args)
    Path(f"{args.out}.json").write_text(json.dumps(report, indent=2) + "\n")
    Path(f"{args.out}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
