"""``run_eval``: the reference first, then each variant, every one in its own measured process.

Each process captions every image of the set at each detail (timed per stage: CLIP encode, prefill,
first token, decode, total) and teacher-forces the reference captions, with all image tokens and under
each image token budget (one report row per variant and budget). The reference's logits wait in a
scratch folder; a variant is compared with them caption by caption. The parent adds the positions up
per detail (mean and p99 KL, top-1 agreement, caption NLL against the reference) and takes the medians
of the timings. Peak RSS comes from ``wait4`` on each process (``bench.machine_facts.run_measured``).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llava_edge.bench.machine_facts import describe_machine, run_measured
from llava_edge.errors import EvaluationError
from llava_edge.evaluation.eval_set import EvalItem
from llava_edge.evaluation.quality import CaptionComparison, QualityTally
from llava_edge.evaluation.variants import EvalVariant
from llava_edge.evaluation.worker import REFERENCE, VARIANT

EVAL_PROMPT = "Describe this image in one sentence."


@dataclass(frozen=True)
class EvalSettings:
    """How every variant is measured (the same for all)."""

    prompt: str = EVAL_PROMPT
    details: tuple[str, ...] = ("low", "high")
    max_tokens: int = 32
    """Tokens generated per timed caption (random weights never stop early, so this pins the count)."""
    score_tokens: int | None = None
    """Score at most this many tokens of each reference caption (None: all of them)."""
    warmup: int = 1
    seed: int = 0
    runtime: dict[str, Any] = field(default_factory=dict)
    """``RuntimeOptions`` fields that differ from the defaults."""
    image_tokens: tuple[int, ...] = ()
    """Image token budgets: every variant is also measured under each (with each of ``token_selections``)."""
    token_selections: tuple[str, ...] = ("diverse",)

    @property
    def budgets(self) -> list[tuple[int, str]]:
        """(tokens, selection) of every budget row, in order."""
        return [(tokens, selection) for tokens in self.image_tokens for selection in self.token_selections]


@dataclass
class VariantResult:
    """One variant: what it is, its size and memory, and per detail its quality loss and speed."""

    name: str
    label: str
    quant: str
    reference: bool
    model_path: str
    mmproj_path: str
    file_bytes: int
    peak_rss_bytes: int
    load_s: float
    quality: dict[str, dict[str, float]]
    """Per detail: ``QualityTally.summary()``."""
    speed: dict[str, dict[str, float]]
    """Per detail: medians of the stages (seconds, tokens per second, token counts)."""
    captions: list[dict[str, Any]]
    """Per image and detail: the headline numbers (for finding the images that differ most)."""
    image_tokens: int | None = None
    """This row's image token budget (``None``: all tokens)."""
    token_selection: str | None = None
    quality_own: dict[str, dict[str, float]] = field(default_factory=dict)
    """A budget row, per detail: ``QualityTally.summary()`` against the same variant at all tokens."""

    @property
    def row_name(self) -> str:
        """The variant's name, with the budget when the row has one."""
        return self.name if self.image_tokens is None else f"{self.name} @{self.image_tokens} {self.token_selection}"


@dataclass
class EvalReport:
    """Everything one ``run_eval`` call measured, with the machine and versions."""

    created: str
    reference: str
    settings: dict[str, Any]
    images: list[str]
    machine: dict[str, Any]
    versions: dict[str, Any]
    variants: list[VariantResult]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_eval(
    variants: Sequence[EvalVariant], reference: EvalVariant, items: Sequence[EvalItem],
    settings: EvalSettings | None = None, *, progress: Callable[[str], None] | None = None,
    on_result: Callable[[EvalReport], object] | None = None,
) -> EvalReport:
    """Measure ``reference`` and every variant on ``items``.

    Args:
        variants: the models to compare (the reference may be among them; it is measured once).
        reference: the model the quality loss is measured against.
        items: the eval set (images with reference captions).
        settings: prompt, details, tokens, runtime options.
        progress: called with a short line before each variant.
        on_result: called with the report so far after each variant (to save partial results).

    Raises:
        EvaluationError: a measuring process failed (the message has its error or the end of its log).
    """
    settings = settings or EvalSettings()
    report = EvalReport(_now(), reference.name, asdict(settings), [item.name for item in items],
                        describe_machine(bandwidth=False), _versions(), [])
    others = [variant for variant in variants if variant is not reference]
    with tempfile.TemporaryDirectory(prefix="llava-edge-eval-") as scratch:
        for role, variant in [(REFERENCE, reference), *((VARIANT, variant) for variant in others)]:
            if progress:
                progress(f"{variant.name} ({variant.label}): {len(items)} image(s) x {', '.join(settings.details)}")
            report.variants.extend(_measure(variant, role, items, settings, Path(scratch)))
            if on_result:
                on_result(report)
    return report


def _measure(variant: EvalVariant, role: str, items: Sequence[EvalItem], settings: EvalSettings,
             scratch: Path) -> list[VariantResult]:
    """The variant's all-token row, then one row per budget, from one measured process."""
    output = scratch / f"result-{time.monotonic_ns()}.json"
    job = {
        "name": variant.name, "model_path": str(variant.files.model_path),
        "mmproj_path": str(variant.files.mmproj_path), "template": variant.files.template,
        "runtime": settings.runtime, "prompt": settings.prompt, "details": list(settings.details),
        "max_tokens": settings.max_tokens, "score_tokens": settings.score_tokens, "warmup": settings.warmup,
        "seed": settings.seed, "role": role, "reference_dir": str(scratch), "output": str(output),
        "budgets": settings.budgets,
        "items": [{"name": item.name, "path": str(item.path), "caption": item.caption} for item in items],
    }
    run = run_measured([sys.executable, "-m", "llava_edge.evaluation.worker"], json.dumps(job))
    data = json.loads(output.read_text()) if output.is_file() else {}
    if "error" in data:
        raise EvaluationError(f"{variant.name}: {data['error']}")
    if run.returncode != 0 or "captions" not in data:
        raise EvaluationError(
            f"{variant.name}: the evaluation process exited with status {run.returncode}. Try `llava-edge caption` "
            f"with the same model to see the error alone; the end of its output:\n{run.stderr[-2000:]}"
        )
    rows = []
    for budget in [None, *settings.budgets]:
        key = list(budget) if budget else None
        captions = [caption for caption in data["captions"] if caption.get("budget") == key]
        rows.append(VariantResult(
            variant.name, variant.label, variant.quant, role == REFERENCE and budget is None,
            str(variant.files.model_path), str(variant.files.mmproj_path), variant.file_bytes, run.peak_rss_bytes,
            data["load_s"], quality=_quality(captions, settings.details), speed=_speed(captions, settings.details),
            captions=[_headline(caption) for caption in captions], image_tokens=budget[0] if budget else None,
            token_selection=budget[1] if budget else None,
            quality_own=_quality(captions, settings.details, "own_comparison") if budget else {},
        ))
    return rows


def _quality(captions: list[dict[str, Any]], details: Sequence[str],
             key: str = "comparison") -> dict[str, dict[str, float]]:
    tallies = {detail: QualityTally() for detail in details}
    for caption in captions:
        tallies[caption["detail"]].add(CaptionComparison(**caption[key]))
    return {detail: tally.summary() for detail, tally in tallies.items()}


SPEED_KEYS = ("image_encode_s", "prefill_tok_s", "decode_tok_s", "first_token_s", "total_s", "image_tokens",
              "prompt_tokens", "generated_tokens")


def _speed(captions: list[dict[str, Any]], details: Sequence[str]) -> dict[str, dict[str, float]]:
    summary = {}
    for detail in details:
        rows = [_rates(caption["timings"]) for caption in captions if caption["detail"] == detail]
        summary[detail] = {key: statistics.median(row[key] for row in rows) for key in SPEED_KEYS} if rows else {}
    return summary


def _rates(timings: dict[str, Any]) -> dict[str, float]:
    prefill_s = timings["image_prefill_s"] + timings["text_prefill_s"]
    rates = {key: float(timings[key]) for key in SPEED_KEYS if key in timings}
    rates["prefill_tok_s"] = timings["prompt_tokens"] / prefill_s if prefill_s > 0 else 0.0
    rates["decode_tok_s"] = timings["generated_tokens"] / timings["decode_s"] if timings["decode_s"] > 0 else 0.0
    return rates


def _headline(caption: dict[str, Any]) -> dict[str, Any]:
    comparison = CaptionComparison(**caption["comparison"])
    tally = QualityTally()
    tally.add(comparison)
    return {"image": caption["image"], "detail": caption["detail"], "budget": caption.get("budget"), **tally.summary(),
            "total_s": caption["timings"]["total_s"]}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _versions() -> dict[str, Any]:
    from importlib.metadata import version

    from llava_edge._version import __version__
    from llava_edge.runtime.backend import backend_info

    info = backend_info()
    return {"llava_edge": __version__, "llama_cpp_python": info["llama_cpp_python"],
            "llama_cpp_system_info": info["system_info"], "numpy": version("numpy")}
