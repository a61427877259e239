"""Benchmarks per stage: llava-edge configurations and the ``llama-mtmd-cli`` anchor, measured alike.

``run_benchmark(configs)`` runs every configuration in a fresh process (so model load time and peak
RSS belong to that configuration): warm-up captions first, then ``runs`` timed captions, each of a
different picture of the requested size, so the first question about an image never hits the
image-prefix cache; a follow-up question about the same image measures the cache. The anchor runs the
native CLI once per picture on the same files, pictures, prompt and number of generated tokens.

Results carry the median and spread of every stage, the machine (CPU, flags, cores, RAM, measured
bandwidth), versions and every setting. Models with fewer text layers than the real one (the
``real-shape-4l`` preset) also get ``scaled`` stages: text-model time multiplied by 32 / n_layer.
This module prints nothing; ``bench_report`` writes JSON, markdown and a chart.
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
from typing import Any, TypeVar

from llava_edge.bench.anchor import anchor_version, mtmd_command, run_mtmd
from llava_edge.bench.machine_facts import ProcessRun, describe_machine, run_measured
from llava_edge.errors import BenchmarkError

T = TypeVar("T")
ENGINE_EDGE = "llava-edge"
ENGINE_MTMD = "llama-mtmd-cli"
BENCH_PROMPT = "Describe this image in detail."
FOLLOWUP_PROMPT = "What colours stand out in this image?"
STAGES = ("image_encode_s", "image_select_s", "image_prefill_s", "text_prefill_s", "first_token_s", "decode_s",
          "total_s", "decode_tok_s")
COUNTS = ("image_tokens", "prompt_tokens", "generated_tokens")
FOLLOWUP_STAGES = ("first_token_s", "image_prefill_s", "total_s")
TEXT_STAGES = ("image_prefill_s", "text_prefill_s", "decode_s")
"""Stages that run the text model, the ones a layer-count scale applies to."""
REAL_LAYERS = 32
KV_BYTES = 2
"""Bytes per K or V element: llama.cpp's default f16 KV cache."""
BUSY_CORES = 0.5
"""A process run during which other processes kept more cores than this busy is run once more."""


@dataclass(frozen=True)
class BenchConfig:
    """One configuration: what to load, which picture, which settings, how often."""

    name: str
    model: str = "synthetic-tiny"
    """A variant id / alias or ``synthetic-<preset>``."""
    engine: str = ENGINE_EDGE
    image_size: tuple[int, int] = (672, 672)
    detail: str = "auto"
    image_tokens: int | None = None
    """An image token budget (llava-edge only; ``None``: every token is fed)."""
    token_selection: str = "diverse"
    """How the budget picks its tokens."""
    runtime: dict[str, Any] = field(default_factory=dict)
    """``RuntimeOptions`` fields that differ from the defaults (llava-edge only)."""
    anchor_args: tuple[str, ...] = ()
    """Extra ``llama-mtmd-cli`` flags (anchor only; none = its defaults)."""
    max_tokens: int = 64
    runs: int = 3
    warmup: int = 1
    warmup_tokens: int = 8
    followup: bool = False
    prompt: str = BENCH_PROMPT
    seed: int = 0


@dataclass
class ConfigResult:
    """Measurements of one configuration: per-run samples, their summary and the process facts."""

    config: BenchConfig
    samples: list[dict[str, Any]]
    summary: dict[str, dict[str, float]]
    load_s: float
    peak_rss_bytes: int
    settings: dict[str, Any]
    """Resolved settings: llava-edge's RuntimeOptions, or what the CLI reported it used."""
    environment: dict[str, Any]
    """Load average before/after and cores used by other processes, per process run."""
    decode_ceiling: dict[str, float] = field(default_factory=dict)
    scaled: dict[str, dict[str, float]] | None = None
    """Summary with text-model stages scaled to 32 layers (reduced-layer models only)."""


@dataclass
class BenchReport:
    """Everything one ``run_benchmark`` call measured, with the machine and versions."""

    created: str
    machine: dict[str, Any]
    versions: dict[str, Any]
    results: list[ConfigResult]

    def result(self, name: str) -> ConfigResult | None:
        return next((result for result in self.results if result.config.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_benchmark(configs: Sequence[BenchConfig], *, anchor: str | Path | None = None,
                  measure_bandwidth: bool = True,
                  progress: Callable[[str], None] | None = None,
                  on_result: Callable[[BenchReport], None] | None = None,
                  busy_cores: float | None = BUSY_CORES) -> BenchReport:
    """Run each configuration in its own process(es) and collect the results.

    Args:
        configs: what to run; anchor configurations need ``anchor``.
        anchor: path to a ``llama-mtmd-cli`` binary (``benchmarks/build_mtmd_cli.sh`` builds one).
        measure_bandwidth: measure memory bandwidth (a few seconds) for the machine description.
        progress: called with a short line before each configuration (the CLI prints it).
        on_result: called with the report so far after each configuration (to save partial results).
        busy_cores: measure a process once more when other processes kept more cores than this busy
            during it (None: never).

    Raises:
        BenchmarkError: an anchor configuration without ``anchor``, or a configuration's process failed
            (the message has the end of its log).
    """
    machine = describe_machine(bandwidth=measure_bandwidth)
    report = BenchReport(_now(), machine, _versions(anchor), [])
    with tempfile.TemporaryDirectory(prefix="llava-edge-bench-") as scratch:
        for config in configs:
            if progress:
                progress(f"{config.name}: {config.runs} run(s) after {config.warmup} warm-up(s)")
            if config.engine == ENGINE_MTMD:
                if anchor is None:
                    raise BenchmarkError(
                        f"{config.name} runs llama-mtmd-cli: pass --anchor with the path of the binary "
                        "(benchmarks/build_mtmd_cli.sh builds one), or leave this configuration out with --only."
                    )
                result = _run_anchor(config, Path(anchor), Path(scratch), busy_cores)
            else:
                result = _run_edge(config, Path(scratch), busy_cores)
            add_decode_ceiling(result, machine.get("bandwidth_gbs"))
            report.results.append(result)
            if on_result:
                on_result(report)
    return report


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def bench_image(size: tuple[int, int], seed: int, directory: Path) -> Path:
    """A deterministic picture (smooth colour fields plus noise) saved as PNG; its content depends on seed."""
    import numpy as np
    from PIL import Image

    path = directory / f"bench-{size[0]}x{size[1]}-{seed}.png"
    if not path.exists():
        rng = np.random.default_rng(seed)
        y, x = np.mgrid[0 : size[1], 0 : size[0]]
        phase = rng.uniform(0, 6.28, 3)
        base = np.stack([127 + 100 * np.sin(x / (40 + 30 * c) + y / 70 + phase[c]) for c in range(3)], axis=-1)
        noisy = base + rng.normal(0, 12, base.shape)
        Image.fromarray(np.clip(noisy, 0, 255).astype("uint8"), "RGB").save(path)
    return path


def _images(config: BenchConfig, directory: Path) -> tuple[list[str], list[str]]:
    """(warm-up pictures at 336x336, timed pictures at the configured size); all different."""
    warm = [str(bench_image((336, 336), 1000 + index, directory)) for index in range(config.warmup)]
    timed = [str(bench_image(config.image_size, index, directory)) for index in range(config.runs)]
    return warm, timed


def _run_edge(config: BenchConfig, scratch: Path, busy_cores: float | None) -> ConfigResult:
    files = _model_files(config.model)
    warm, timed = _images(config, scratch)
    output = scratch / f"result-{time.monotonic_ns()}.json"
    job = {
        "model": None, "model_path": str(files.model_path), "mmproj_path": str(files.mmproj_path),
        "runtime": config.runtime, "max_tokens": config.max_tokens, "seed": config.seed,
        "warmup_tokens": config.warmup_tokens, "warmup_images": warm, "images": timed, "prompt": config.prompt,
        "detail": config.detail, "image_tokens": config.image_tokens, "token_selection": config.token_selection,
        "followup_prompt": FOLLOWUP_PROMPT if config.followup else "",
        "output": str(output),
    }
    run = _quiet_run(lambda: run_measured([sys.executable, "-m", "llava_edge.bench.worker"], json.dumps(job)),
                     busy_cores)
    if run.returncode != 0:
        raise BenchmarkError(
            f"{config.name}: the benchmark worker exited with status {run.returncode}. Try `llava-edge caption` "
            f"with the same model to see the error alone; the end of the worker's output:\n{run.stderr[-2000:]}"
        )
    data = json.loads(output.read_text())
    samples = [_with_rate(sample) for sample in data["samples"]]
    return _result(config, samples, data["load_s"], run.peak_rss_bytes, data["runtime_options"], [run], files)


def _run_anchor(config: BenchConfig, binary: Path, scratch: Path, busy_cores: float | None) -> ConfigResult:
    files = _model_files(config.model)
    warm, timed = _images(config, scratch)

    def command(image: str, tokens: int) -> list[str]:
        return mtmd_command(binary, files.model_path, files.mmproj_path, Path(image), config.prompt, tokens,
                            seed=config.seed, extra=config.anchor_args)

    for image in warm:
        run_mtmd(command(image, config.warmup_tokens), config.warmup_tokens)
    runs, samples, settings = [], [], {}
    for image in timed:
        timed_command = command(image, config.max_tokens)
        run, parsed = _quiet_run(lambda: run_mtmd(timed_command, config.max_tokens), busy_cores)  # noqa: B023
        runs.append(run)
        settings, sample = parsed.settings, asdict(parsed)
        sample.pop("settings")
        sample.update(total_s=parsed.total_s, wall_s=run.wall_s)
        samples.append(_with_rate(sample))
    peak = max(run.peak_rss_bytes for run in runs)
    load = statistics.median(run.wall_s - sample["total_s"] for run, sample in zip(runs, samples, strict=True))
    return _result(config, samples, load, peak, settings, runs, files)


def _quiet_run(measure: Callable[[], T], busy_cores: float | None) -> T:
    """Measure; if other processes kept more than ``busy_cores`` busy meanwhile, measure once more and
    keep the quieter run. Every kept run's ``others_cores`` is reported either way."""
    first = measure()
    if busy_cores is None or _process(first).others_cores <= busy_cores:
        return first
    second = measure()
    return min(first, second, key=lambda outcome: _process(outcome).others_cores)


def _process(outcome: Any) -> ProcessRun:
    run: ProcessRun = outcome[0] if isinstance(outcome, tuple) else outcome
    return run


def _with_rate(sample: dict[str, Any]) -> dict[str, Any]:
    decode = sample.get("decode_s", 0.0)
    sample["decode_tok_s"] = sample.get("generated_tokens", 0) / decode if decode > 0 else 0.0
    return sample


def _result(config: BenchConfig, samples: list[dict[str, Any]], load_s: float, peak: int,
            settings: dict[str, Any], runs: list[ProcessRun], files: Any) -> ConfigResult:
    environment = {
        "runs": [{"loadavg_before": round(run.loadavg_before, 2), "loadavg_after": round(run.loadavg_after, 2),
                  "others_cores": round(run.others_cores, 2), "wall_s": round(run.wall_s, 2)} for run in runs],
        "model_path": str(files.model_path), "mmproj_path": str(files.mmproj_path),
        "model_bytes": files.model_path.stat().st_size, "mmproj_bytes": files.mmproj_path.stat().st_size,
    }
    result = ConfigResult(config, samples, summarize(samples), load_s, peak, settings, environment)
    layers = _text_shape(files.model_path)["n_layer"]
    if layers < REAL_LAYERS and config.model.startswith("synthetic-real-shape"):
        result.scaled = summarize([scale_sample(sample, REAL_LAYERS / layers) for sample in samples])
        result.environment["scaled_by"] = f"text-model stages x{REAL_LAYERS / layers:g} ({layers} -> 32 layers)"
    return result


def summarize(samples: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median, min, max and spread (max - min, as % of the median) of every stage and count."""
    summary = {}
    keys = [*STAGES, *COUNTS, "wall_s"]
    keys += [f"followup_{name}" for name in FOLLOWUP_STAGES]
    for key in keys:
        values = [_value(sample, key) for sample in samples]
        present = [value for value in values if value is not None]
        if present:
            median = statistics.median(present)
            summary[key] = {"median": median, "min": min(present), "max": max(present), "n": len(present),
                            "spread_pct": 100 * (max(present) - min(present)) / median if median else 0.0}
    return summary


def _value(sample: dict[str, Any], key: str) -> float | None:
    if key.startswith("followup_"):
        followup = sample.get("followup")
        return None if followup is None else followup.get(key.removeprefix("followup_"))
    return sample.get(key)


def scale_sample(sample: dict[str, Any], factor: float) -> dict[str, Any]:
    """A sample with its text-model stages multiplied by ``factor`` and the sums recomputed."""
    scaled = {key: value for key, value in sample.items() if key != "followup"}
    extra = {key: sample[key] * (factor - 1) for key in TEXT_STAGES}
    for key, value in extra.items():
        scaled[key] += value
    scaled["first_token_s"] += extra["image_prefill_s"] + extra["text_prefill_s"]
    scaled["total_s"] += sum(extra.values())
    return _with_rate(scaled)


def add_decode_ceiling(result: ConfigResult, bandwidth_gbs: float | None) -> None:
    """Decode ceiling = bandwidth / bytes read per token (weights except the embedding table, plus the KV
    cache at the mean decode context); the measured decode rate as a fraction of it."""
    if not bandwidth_gbs or "decode_tok_s" not in result.summary:
        return
    shape = _text_shape(Path(result.environment["model_path"]))
    counts = result.summary
    prompt = counts.get("prompt_tokens", counts.get("image_tokens", {"median": 0.0}))["median"]
    context = prompt + counts.get("generated_tokens", {"median": 0.0})["median"] / 2
    per_token = shape["weight_bytes_per_token"] + shape["kv_bytes_per_token"] * context
    ceiling = bandwidth_gbs * 1e9 / per_token
    measured = result.summary["decode_tok_s"]["median"]
    result.decode_ceiling = {"bytes_per_token": per_token, "ceiling_tok_s": ceiling,
                             "measured_tok_s": measured, "fraction": measured / ceiling}


def _text_shape(model_path: Path) -> dict[str, int]:
    """Layer count, bytes of weights one decode step reads, and KV bytes per context token."""
    from gguf import GGUFReader

    reader = GGUFReader(str(model_path))

    def number(suffix: str) -> int:
        key = next(name for name in reader.fields if name.endswith(suffix))
        return int(reader.fields[key].contents())

    n_embd, n_head, n_head_kv, n_layer = (number(s) for s in (".embedding_length", ".attention.head_count",
                                                              ".attention.head_count_kv", ".block_count"))
    weights = sum(int(t.n_bytes) for t in reader.tensors if t.name != "token_embd.weight")
    return {"n_layer": n_layer, "weight_bytes_per_token": weights,
            "kv_bytes_per_token": 2 * n_layer * n_head_kv * (n_embd // n_head) * KV_BYTES}


def _model_files(model: str) -> Any:
    from llava_edge.models.resolve import model_files
    from llava_edge.runtime.quantize import quantize_gguf

    return model_files(model, offline=True, quantize=quantize_gguf)


def _versions(anchor: str | Path | None) -> dict[str, Any]:
    from importlib.metadata import version

    from llava_edge._version import __version__
    from llava_edge.runtime.backend import backend_info

    info = backend_info()
    versions = {"llava_edge": __version__, "llama_cpp_python": info["llama_cpp_python"],
                "llama_cpp_system_info": info["system_info"], "numpy": version("numpy")}
    if anchor is not None:
        versions["mtmd_cli"] = str(anchor)
        versions["mtmd_cli_version"] = anchor_version(anchor)
    return versions
