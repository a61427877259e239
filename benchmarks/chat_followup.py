"""Second-turn time to first token through the OpenAI-compatible API, against the first turn.

Start a server (``llava-edge serve --model synthetic-real-shape-4l``), then
``python benchmarks/chat_followup.py http://127.0.0.1:8765 --runs 5 --out benchmarks/results/chat-followup``.
Each run uses a new noise image: turn one asks for a caption, turn two resends the history with a follow-up
question (as chat UIs do). Time to first token is measured at the client, from sending the request to the
first streamed content. Writes JSON and markdown with medians.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from llava_edge.host.cpu import cpu_name


def noise_png(seed: int, size: int = 672) -> str:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def first_token_s(url: str, messages: list[dict[str, Any]], max_tokens: int) -> tuple[float, str]:
    body = {"model": "llava", "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    started, first, text = time.perf_counter(), None, ""
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            content = json.loads(line[6:])["choices"][0]["delta"].get("content") if "choices" in line else None
            if content:
                first = first or time.perf_counter()
                text += content
    return (first or time.perf_counter()) - started, text


def run(url: str, runs: int, detail: str, max_tokens: int) -> list[dict[str, float]]:
    rows = []
    for seed in range(runs):
        question = [{"type": "text", "text": "Describe this image."},
                    {"type": "image_url", "image_url": {"url": noise_png(seed), "detail": detail}}]
        turn_one = [{"role": "user", "content": question}]
        first_s, answer = first_token_s(url, turn_one, max_tokens)
        turn_two = [*turn_one, {"role": "assistant", "content": answer},
                    {"role": "user", "content": "What colours stand out?"}]
        second_s, _ = first_token_s(url, turn_two, max_tokens)
        rows.append({"first_turn_ttft_s": first_s, "second_turn_ttft_s": second_s})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--detail", default="high")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--model-label", default="synthetic-real-shape-4l")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = run(args.url.rstrip("/"), args.runs, args.detail, args.max_tokens)
    medians = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    report = {"what": "OpenAI API, second-turn vs first-turn time to first token (client side)",
              "model": args.model_label, "detail": args.detail, "runs": rows, "median": medians,
              "ratio_first_over_second": medians["first_turn_ttft_s"] / medians["second_turn_ttft_s"],
              "machine": {"processor": cpu_name(), "python": platform.python_version()}}
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(
        f"# Follow-up time to first token ({args.model_label}, detail={args.detail})\n\n"
        f"| turn | median TTFT s |\n|---|---|\n| first | {medians['first_turn_ttft_s']:.3f} |\n"
        f"| second (history resent) | {medians['second_turn_ttft_s']:.3f} |\n\n"
        f"First/second: {report['ratio_first_over_second']:.1f}x over {args.runs} images.\n"
    )
    print(json.dumps(report["median"]), f"ratio {report['ratio_first_over_second']:.1f}x")


if __name__ == "__main__":
    main()
