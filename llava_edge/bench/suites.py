"""The benchmark suites and the performance targets they check.

``target_suite`` is the matrix that answers every target in one run (anchor, defaults, follow-up,
detail low, identical settings, repack and flash attention); ``sweep_suite`` varies one CPU setting at
a time, meant for the quick reduced-layer model. ``evaluate_targets`` turns a report into ratios with a
met / not-met verdict. Targets are ratios measured in one run, never timing asserts.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from llava_edge.bench.anchor import probe_anchor
from llava_edge.bench.runner import ENGINE_MTMD, BenchConfig, BenchReport, ConfigResult

ANCHOR = "mtmd-cli defaults"
ANCHOR_TUNED = "mtmd-cli -c 4096 -fa on -nr"
TUNED_ANCHOR_ARGS = ("-c", "4096", "-fa", "on", "-nr")
"""llama-mtmd-cli given llava-edge's defaults by hand: a 4096-token context, flash attention, no repacking."""
DEFAULTS = "llava-edge defaults"
LOW = "llava-edge detail=low"
AS_ANCHOR = "llava-edge as mtmd-cli"
LOW_REPACK = "llava-edge detail=low repack=on"
LOW_FLASH = "llava-edge detail=low flash_attn=on"

ANCHOR_SETTINGS: dict[str, Any] = {"repack": True, "flash_attn": True, "n_batch": 2048, "n_ubatch": 512}
"""llama-mtmd-cli's defaults in RuntimeOptions terms: extra buffer types on, flash attention "auto"
(enabled on CPU), batch 2048, micro-batch 512. Threads and n_ctx are added from what the CLI reports."""
GIB = 2**30


def target_suite(model: str, *, runs: int = 2, warmup: int = 1, max_tokens: int = 64,
                 size: tuple[int, int] = (672, 672), anchor: str | None = None) -> list[BenchConfig]:
    """Every configuration the targets need, all on the same model, picture size, prompt and tokens.

    With ``anchor`` (the CLI binary) the suite starts with the CLI at its defaults and at llava-edge's
    defaults given as flags (``TUNED_ANCHOR_ARGS``: where the gain comes from), and the identical-settings
    configuration also takes the threads and n_ctx the CLI reports using (probed on the tiny model)."""
    base = BenchConfig(name=DEFAULTS, model=model, image_size=size, max_tokens=max_tokens, runs=runs, warmup=warmup)
    as_anchor = dict(ANCHOR_SETTINGS)
    if anchor is not None:
        used = probe_anchor(anchor)
        as_anchor.update(threads=int(used["n_threads"]), threads_batch=int(used["n_threads"]),
                         n_ctx=int(used["n_ctx"]))
    anchored = [replace(base, name=ANCHOR, engine=ENGINE_MTMD),
                replace(base, name=ANCHOR_TUNED, engine=ENGINE_MTMD, anchor_args=TUNED_ANCHOR_ARGS),
                ] if anchor is not None else []
    return [
        *anchored,
        replace(base, followup=True),
        replace(base, name=LOW, detail="low"),
        replace(base, name=AS_ANCHOR, runtime=as_anchor),
        replace(base, name=LOW_REPACK, detail="low", runtime={"repack": True}),
        replace(base, name=LOW_FLASH, detail="low", runtime={"flash_attn": True}),
    ]


def custom_suite(model: str, sizes: list[tuple[int, int]], details: list[str], runtime: dict[str, Any], *,
                 runs: int = 3, warmup: int = 1, max_tokens: int = 64, followup: bool = False,
                 anchor: bool = False) -> list[BenchConfig]:
    """Every picture size x detail with one option set; with ``anchor``, the CLI's defaults per size first."""
    configs = []
    for size in sizes:
        base = BenchConfig(name="", model=model, image_size=size, runtime=runtime, max_tokens=max_tokens,
                           runs=runs, warmup=warmup, followup=followup)
        label = f"{size[0]}x{size[1]}"
        if anchor:
            configs.append(replace(base, name=f"mtmd-cli {label}", engine=ENGINE_MTMD, runtime={}, followup=False))
        configs += [replace(base, name=f"llava-edge {label} detail={detail}", detail=detail) for detail in details]
    return configs


SWEEP: dict[str, dict[str, Any]] = {
    "defaults": {},
    "repack=on": {"repack": True},
    "flash_attn=on": {"flash_attn": True},
    "n_ubatch=256": {"n_ubatch": 256, "n_batch": 512},
    "n_ubatch=1024": {"n_ubatch": 1024, "n_batch": 1024},
    "n_batch=2048 n_ubatch=512": {"n_batch": 2048},
    "n_batch=n_ubatch=2048": {"n_batch": 2048, "n_ubatch": 2048},
    "threads=1 (decode)": {"threads": 1},
}
"""One CPU setting changed at a time from the RuntimeOptions defaults."""


def sweep_suite(model: str, *, runs: int = 2, warmup: int = 1, max_tokens: int = 64,
                size: tuple[int, int] = (672, 672), names: list[str] | None = None) -> list[BenchConfig]:
    """The ``SWEEP`` settings (or the named subset) on one model and picture size."""
    base = BenchConfig(name="", model=model, image_size=size, max_tokens=max_tokens, runs=runs, warmup=warmup)
    return [replace(base, name=f"sweep {name}", runtime=SWEEP[name]) for name in names or SWEEP]


def _median(result: ConfigResult | None, key: str) -> float | None:
    if result is None or key not in result.summary:
        return None
    return result.summary[key]["median"]


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return top / bottom if top is not None and bottom else None


def evaluate_targets(report: BenchReport) -> list[dict[str, Any]]:
    """Each performance target whose configurations ran: the measured value, the goal, and whether it was met."""
    anchor, default, low, same = (report.result(name) for name in (ANCHOR, DEFAULTS, LOW, AS_ANCHOR))
    rows = [
        _target("default 672x672 caption vs llama-mtmd-cli defaults (end to end, without load)",
                _ratio(_median(anchor, "total_s"), _median(default, "total_s")), 1.3, "x faster", higher=True),
        _target("follow-up question: time to first token, first / follow-up",
                _ratio(_median(default, "first_token_s"), _median(default, "followup_first_token_s")), 20,
                "x shorter", higher=True),
        _target('detail="low" vs "high" on 672x672 (end to end)',
                _ratio(_median(default, "total_s"), _median(low, "total_s")), 3.5, "x faster", higher=True),
        _target("peak RSS, defaults (n_ctx 4096)",
                default.peak_rss_bytes / GIB if default else None, 6.0, "GiB", higher=False),
        _target("overhead over llama-mtmd-cli with identical settings (end to end)",
                _overhead(same, anchor), 2.0, "%", higher=False),
    ]
    for result in (default, anchor):
        if result is not None and result.decode_ceiling:
            rows.append({"target": f"decode vs bandwidth ceiling ({result.config.name})",
                         "value": round(100 * result.decode_ceiling["fraction"], 1), "goal": "report",
                         "unit": "% of ceiling", "met": None})
    return [row for row in rows if row["value"] is not None]


def _overhead(ours: ConfigResult | None, anchor: ConfigResult | None) -> float | None:
    ratio = _ratio(_median(ours, "total_s"), _median(anchor, "total_s"))
    return None if ratio is None else 100 * (ratio - 1)


def _target(name: str, value: float | None, goal: float, unit: str, *, higher: bool) -> dict[str, Any]:
    met = None if value is None else (value >= goal if higher else value <= goal)
    shown = None if value is None else round(value, 2)
    return {"target": name, "value": shown, "goal": f"{'>=' if higher else '<='} {goal:g}", "unit": unit, "met": met}
