"""The child side of one evaluated variant: ``python -m llava_edge.evaluation.worker``.

Reads one job as JSON on stdin, loads the model once, captions a warm-up picture, then for every image
and detail: captions it (timed, stage by stage) and teacher-forces the reference caption (logits at
every position), with all image tokens and then under each image token budget of the job. The
reference's job saves its all-token logits per caption into the scratch folder; every job compares its
own with them caption by caption, and a budget's also with its own all-token logits, so no full logits
outlive the caption in hand. A budget that keeps all of an image's tokens reuses the all-token result.
Writes the result as JSON to ``job["output"]``; running each variant in its own process makes its load
time and peak RSS its own.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from llava_edge.errors import EvaluationError, LlavaEdgeError

REFERENCE = "reference"
VARIANT = "variant"


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job (built by ``llava_edge.evaluation.runner``) and return its measurements."""
    from llava_edge.generation import GenerationOptions, RuntimeOptions
    from llava_edge.models.catalog import ModelFiles
    from llava_edge.runtime.engine import LlavaRuntime

    files = ModelFiles(Path(job["model_path"]), Path(job["mmproj_path"]), job["template"], job["name"])
    started = time.perf_counter()
    with LlavaRuntime(files, RuntimeOptions(**job["runtime"])) as runtime:
        load_s = time.perf_counter() - started
        for index in range(job["warmup"]):
            runtime.generate(_warmup_picture(index), job["prompt"], GenerationOptions(max_tokens=4, seed=job["seed"]))
        options = GenerationOptions(max_tokens=job["max_tokens"], seed=job["seed"])
        captions = [row for item in job["items"] for detail in job["details"]
                    for row in _caption(runtime, item, detail, job, options)]
    return {"load_s": load_s, "captions": captions}


def _caption(
    runtime: Any, item: dict[str, Any], detail: str, job: dict[str, Any], options: Any
) -> list[dict[str, Any]]:
    """Caption one image at one detail (timed) with all tokens and under each budget; score each one's
    reference caption against the reference (and a budget's against this model at all tokens)."""
    from llava_edge.api import prepare_image
    from llava_edge.evaluation.quality import compare_caption
    from llava_edge.images import load_image
    from llava_edge.runtime.scoring import score_caption
    from llava_edge.token_budget import TokenBudget, image_token_count

    picture = prepare_image(load_image(Path(item["path"])), detail)
    full_tokens = image_token_count(*picture.size, "high")
    generation = runtime.generate(picture, job["prompt"], options)
    score = score_caption(runtime, picture, job["prompt"], item["caption"], max_tokens=job["score_tokens"])
    reference = _reference(job, item, detail, score)
    rows = [{"image": item["name"], "detail": detail, "budget": None, "timings": asdict(generation.timings),
             "score_s": score.seconds, "comparison": asdict(compare_caption(reference, score.logits, score.tokens))}]
    for tokens, selection in job.get("budgets", []):
        row = {**rows[0], "budget": [tokens, selection]}
        if image_token_count(*picture.size, "high", tokens) < full_tokens:
            budget = TokenBudget(tokens, selection)
            reduced = runtime.generate(picture, job["prompt"], options, budget)
            scored = score_caption(runtime, picture, job["prompt"], item["caption"], max_tokens=job["score_tokens"],
                                   budget=budget)
            row.update(timings=asdict(reduced.timings), score_s=scored.seconds,
                       comparison=asdict(compare_caption(reference, scored.logits, scored.tokens)),
                       own_comparison=asdict(compare_caption(score.logits, scored.logits, scored.tokens)))
        else:
            row["own_comparison"] = asdict(compare_caption(score.logits, score.logits, score.tokens))
        rows.append(row)
    return rows


def _reference(job: dict[str, Any], item: dict[str, Any], detail: str, score: Any) -> Any:
    """The reference's all-token logits for this caption (saved here when this job is the reference)."""
    saved = Path(job["reference_dir"]) / f"{item['name']}.{detail}.npz"
    if job["role"] == REFERENCE:
        np.savez(saved, logits=score.logits, tokens=np.asarray(score.tokens))
    reference = np.load(saved)
    if tuple(int(token) for token in reference["tokens"]) != score.tokens:
        raise EvaluationError(
            f"{job['name']} tokenizes the caption of {item['name']} differently from the reference: they do not "
            "share a vocabulary. Compare only variants of one model, with a reference of that model."
        )
    return reference["logits"]


def _warmup_picture(index: int) -> Any:
    """A 336x336 noise picture that no timed image shares (so no timed caption reuses its prefix)."""
    from PIL import Image

    rng = np.random.default_rng(10_000 + index)
    return Image.fromarray(rng.integers(0, 256, (336, 336, 3), dtype=np.uint8), "RGB")


def main() -> None:
    job = json.loads(sys.stdin.read())
    try:
        result = run_job(job)
    except LlavaEdgeError as err:  # reported to the parent, which raises it as an EvaluationError
        result = {"error": f"{err} [{err.code}]"}
    with open(job["output"], "w") as handle:  # a file, not stdout: native code may print there
        json.dump(result, handle)
    sys.exit(2 if "error" in result else 0)


if __name__ == "__main__":
    main()
