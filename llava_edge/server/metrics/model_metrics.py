"""What happens to the resident model, as Prometheus metrics: whether each model is loaded, its loads, swaps,
unloads and their durations, and each finished caption's tokens and stage durations (``Timings``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from llava_edge.api import CaptionResult
from llava_edge.server.resident_model import ModelObserver, UnloadReason

STAGES = ("image_encode", "image_prefill", "text_prefill", "first_token", "decode")
"""The stages of a caption, as ``Timings`` fields without their ``_s``; ``first_token`` runs from the start."""
IMAGE_STAGES = frozenset({"image_encode", "image_prefill"})
"""Stages a caption without image tokens (a text-only turn) does not go through: not observed for it."""
UNLOAD_REASONS: tuple[UnloadReason, ...] = ("idle", "keep_alive_zero", "swap")
STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Seconds, from a cached prefix on a GPU to a full-detail image on a Raspberry Pi."""
LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
ResidentState = Callable[[], tuple[str, bool]]
"""The resident model's id and whether it is in memory, read at scrape time (it never loads anything)."""


class ModelMetrics(ModelObserver):
    """The resident model's observer (``ResidentModel.observer``), recording into ``registry``."""

    def __init__(self, registry: CollectorRegistry, resident: ResidentState):
        self._loaded = _LoadedModels(resident)
        registry.register(self._loaded)
        self.loads = Counter("llava_edge_model_loads", "Model loads after the start (a reload after an idle "
                             "unload, a swap, or the previous model again after a failed swap), by model.",
                             ["model"], registry=registry)
        self.swaps = Counter("llava_edge_model_swaps", "Loads that replaced another resident model, by the model "
                             "swapped in.", ["model"], registry=registry)
        self.load_failures = Counter("llava_edge_model_load_failures", "Loads that failed, by model.", ["model"],
                                     registry=registry)
        self.unloads = Counter("llava_edge_model_unloads", "Models freed, by model and reason (idle: the "
                               "keep-alive expired; keep_alive_zero: a keep-alive of 0, right after the answer; "
                               "swap: another model came in).",
                               ["model", "reason"], registry=registry)
        self.load_seconds = Histogram("llava_edge_model_load_seconds", "Seconds each model load took.",
                                      buckets=LOAD_BUCKETS, registry=registry)
        self.unload_seconds = Histogram("llava_edge_model_unload_seconds", "Seconds each unload took, by reason.",
                                        ["reason"], buckets=LOAD_BUCKETS, registry=registry)
        self.captions = Counter("llava_edge_captions", "Captions finished (every API), by model.", ["model"],
                                registry=registry)
        self.image_tokens = Counter("llava_edge_image_tokens", "Image tokens fed to the model, by model.",
                                    ["model"], registry=registry)
        self.prompt_tokens = Counter("llava_edge_prompt_tokens", "Prompt tokens (text and image) of finished "
                                     "captions, by model.", ["model"], registry=registry)
        self.cached_tokens = Counter("llava_edge_cached_prompt_tokens", "Prompt tokens not evaluated again "
                                     "(a prefix still in the context or restored from the prefix cache), by model.",
                                     ["model"], registry=registry)
        self.generated_tokens = Counter("llava_edge_generated_tokens", "Tokens generated, by model.", ["model"],
                                        registry=registry)
        self.stage_seconds = Histogram("llava_edge_stage_seconds", "Seconds per stage of each finished caption.",
                                       ["stage"], buckets=STAGE_BUCKETS, registry=registry)
        for stage in STAGES:
            self.stage_seconds.labels(stage)
        for reason in UNLOAD_REASONS:
            self.unload_seconds.labels(reason)

    def loaded(self, model: str, seconds: float, *, swap: bool) -> None:
        self._loaded.seen(model)
        self.loads.labels(model).inc()
        if swap:
            self.swaps.labels(model).inc()
        self.load_seconds.observe(seconds)

    def unloaded(self, model: str, seconds: float, reason: UnloadReason) -> None:
        self._loaded.seen(model)
        self.unloads.labels(model, reason).inc()
        self.unload_seconds.labels(reason).observe(seconds)

    def load_failed(self, model: str) -> None:
        self.load_failures.labels(model).inc()

    def captioned(self, result: CaptionResult) -> None:
        timings, model = result.timings, result.model
        self.captions.labels(model).inc()
        self.image_tokens.labels(model).inc(timings.image_tokens)
        self.prompt_tokens.labels(model).inc(timings.prompt_tokens)
        self.cached_tokens.labels(model).inc(timings.cached_tokens)
        self.generated_tokens.labels(model).inc(timings.generated_tokens)
        for stage in STAGES:
            if timings.image_tokens or stage not in IMAGE_STAGES:
                self.stage_seconds.labels(stage).observe(getattr(timings, f"{stage}_s"))


class _LoadedModels:
    """``llava_edge_model_loaded{model}``: 1 for the model in memory, 0 for every other model this server has had
    resident. Read from the resident model at scrape time."""

    def __init__(self, resident: ResidentState):
        self._resident = resident
        self._lock = threading.Lock()
        self._models: set[str] = set()

    def seen(self, model: str) -> None:
        with self._lock:
            self._models.add(model)

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        resident, in_memory = self._resident()
        self.seen(resident)
        with self._lock:
            models = sorted(self._models)
        family = self._family()
        for model in models:
            family.add_metric([model], 1.0 if in_memory and model == resident else 0.0)
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("llava_edge_model_loaded", "1 while the model is in memory, else 0, for each "
                                 "model this server has had resident.", labels=["model"])
