"""The child side of a llava-edge benchmark configuration: ``python -m llava_edge.bench.worker``.

Reads one job as JSON on stdin, loads the model once, captions the warm-up images, then the timed
images (each a different picture, so the first question about it never hits the image-prefix cache),
optionally asks a follow-up question about each, and writes the measurements as JSON to ``job["output"]``.
Running every configuration in its own process makes model load time and peak RSS per configuration.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from typing import Any


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job (see ``llava_edge.bench.runner._worker_job``) and return its measurements."""
    from llava_edge.api import Captioner
    from llava_edge.generation import GenerationOptions, RuntimeOptions

    started = time.perf_counter()
    captioner = Captioner(job["model"], model_path=job["model_path"], mmproj_path=job["mmproj_path"],
                          runtime=RuntimeOptions(**job["runtime"]), offline=True)
    load_s = time.perf_counter() - started
    options = GenerationOptions(max_tokens=job["max_tokens"], seed=job["seed"])
    warm = GenerationOptions(max_tokens=job["warmup_tokens"], seed=job["seed"])
    for image in job["warmup_images"]:
        captioner.describe(image, job["prompt"], detail="low", options=warm)
    samples = [_sample(captioner, image, job, options) for image in job["images"]]
    resolved = asdict(captioner.runtime.options)
    captioner.close()
    return {"load_s": load_s, "runtime_load_s": captioner.runtime.load_s, "samples": samples,
            "runtime_options": resolved}


def _sample(captioner: Any, image: str, job: dict[str, Any], options: Any) -> dict[str, Any]:
    budget = {"image_tokens": job.get("image_tokens"), "token_selection": job.get("token_selection")}
    first = captioner.describe(image, job["prompt"], detail=job["detail"], options=options, **budget)
    sample = asdict(first.timings)
    if job["followup_prompt"]:
        follow = captioner.describe(image, job["followup_prompt"], detail=job["detail"], options=options, **budget)
        sample["followup"] = asdict(follow.timings)
    return sample


def main() -> None:
    job = json.loads(sys.stdin.read())
    result = run_job(job)
    with open(job["output"], "w") as handle:  # a file, not stdout: native code may print there
        json.dump(result, handle)


if __name__ == "__main__":
    main()
