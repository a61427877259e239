"""Caption on a Ray cluster with Ray Data (the ``ray`` extra: ``pip install "llava-edge[ray]"``).

``RayCaptioner`` is a callable class for ``Dataset.map_batches``: each actor loads the model once and
captions its batches with ``caption_many``. ``caption_dataset`` applies it with an autoscaling actor
pool, and ``caption_on_ray`` is the ``llava-edge caption --ray`` path: the records stream back to this
process, which writes them like a local run (so resume and the output format are the same). Ray does
the scheduling, retries, actor restarts and backpressure. This is the only module that imports ``ray``.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from llava_edge.batch.records import BatchRecord, BatchSummary, ImageItem, json_text
from llava_edge.batch.runner import BATCH_RUNTIME, Sink, caption_many, item_digest, run_batch
from llava_edge.command_options import ModelLoad
from llava_edge.errors import LlavaEdgeError, MissingExtraError
from llava_edge.token_budget import token_budget

if TYPE_CHECKING:
    from llava_edge.batch.job import CaptionJob

INSTALL_HINT = 'Install it with: pip install "llava-edge[ray]"'
DEFAULT_BATCH_SIZE = 4
"""Images per map_batches call: small, because one caption takes seconds on the real model and a lost
batch is recomputed."""
MAX_DEFAULT_ACTOR_CPUS = 4


class RayCaptioner:
    """For ``dataset.map_batches(RayCaptioner, fn_constructor_kwargs={...}, compute=ActorPoolStrategy(...))``.

    Input columns: ``path`` (a file path, or a name when ``bytes`` is given); optionally ``bytes``, the
    encoded image (as ``ray.data.read_binary_files(..., include_paths=True)`` gives), and ``name``, what the
    record calls the image (default: ``path``). Output columns, one row per image: ``image``, ``sha256``
    ("" when unreadable), ``ok``, ``text`` ("" on error) and ``record`` (the JSON output record).

    Args:
        model: as for ``Captioner``; keyword options (``model_path``, ``mmproj_path``, ``runtime``,
            ``generation``, ``offline``, ...) go to ``Captioner`` too. ``runtime`` defaults to
            ``BATCH_RUNTIME`` (no image-prefix cache).
        prompt, detail, image_tokens, token_selection: as for ``caption_many``.
    """

    def __init__(self, model: str | None = None, *, prompt: str | None = None, detail: str = "auto",
                 image_tokens: int | None = None, token_selection: str | None = None, **captioner_options: Any):
        from llava_edge.api import Captioner

        token_budget(image_tokens, token_selection)  # a bad budget fails the actor before the model loads
        captioner_options.setdefault("runtime", BATCH_RUNTIME)
        self._captioner = Captioner(model, **captioner_options)
        self._prompt, self._detail = prompt, detail
        self._image_tokens, self._token_selection = image_tokens, token_selection

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        records = list(caption_many(_items(batch), self._prompt, captioner=self._captioner, detail=self._detail,
                                    image_tokens=self._image_tokens, token_selection=self._token_selection))
        return {
            "image": [record.image for record in records],
            "sha256": [record.sha256 or "" for record in records],
            "ok": [record.ok for record in records],
            "text": [record.text or "" for record in records],
            "record": [json_text(record.to_json()) for record in records],  # a name that is not UTF-8 too
        }


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or a MissingExtraError (an ImportError) that says how to install it."""
    try:
        import ray
        import ray.data  # ray without [data] lacks pyarrow and pandas
    except ImportError as err:
        raise MissingExtraError(f"Captioning on Ray needs ray[data] ({err.name} is missing). {INSTALL_HINT}") from err
    return ray


def caption_dataset(
    dataset: Any,
    model: str | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    cpus_per_actor: int | None = None,
    gpus_per_actor: float = 0,
    max_actors: int | None = None,
    **captioner_options: Any,
) -> Any:
    """``dataset`` with captions: ``map_batches(RayCaptioner)`` on an autoscaling pool of actors.

    Each actor reserves ``cpus_per_actor`` CPUs and runs llama.cpp with as many threads (default: the
    runtime's ``threads``, else the smaller of 4 and the largest node's CPUs). The pool grows up to
    ``max_actors`` (default: as many as the cluster fits).

    Args:
        dataset: a ``ray.data.Dataset`` with the input columns ``RayCaptioner`` reads.
        model, captioner_options: for ``RayCaptioner`` (``prompt``, ``detail``, ``image_tokens``,
            ``token_selection``, ``model_path``, ...).
    """
    ray = import_ray()
    runtime = captioner_options.pop("runtime", None) or BATCH_RUNTIME
    cpus = cpus_per_actor or runtime.threads or _default_actor_cpus(ray)
    runtime = replace(runtime, threads=runtime.threads or cpus, threads_batch=runtime.threads_batch or cpus)
    for key in ("model_path", "mmproj_path"):  # relative to this process, not to the workers
        if captioner_options.get(key) is not None:
            captioner_options[key] = os.path.abspath(captioner_options[key])
    return dataset.map_batches(
        RayCaptioner,
        fn_constructor_kwargs={"model": model, "runtime": runtime, **captioner_options},
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max_actors),
        batch_size=batch_size,
        num_cpus=cpus,
        num_gpus=gpus_per_actor,
    )


def caption_on_ray(
    images: list[str], sink: Sink, *, address: str, load: ModelLoad, job: CaptionJob, progress: bool | None = None,
    stop: threading.Event | None = None,
) -> BatchSummary:
    """Caption ``images`` on a Ray cluster; the records come back here and go to ``sink``.

    Images ``sink`` already holds are skipped before any work is sent. The image files must be readable
    at the same absolute paths on every node (a shared filesystem).

    Args:
        address: ``"auto"`` (the running cluster), ``"local"`` (start Ray on this machine), or a cluster
            address (``ray://head:10001``, ``head:6379``). Ignored when Ray is already initialised.
        load: the model each actor loads; with ``device="cuda"`` each actor reserves a GPU.
        job: the prompt, detail, image token budget and generation options. Its ``photo`` and ``schema`` are
            not sent (the ``caption`` command refuses them with ``--ray``).
        progress, stop: as for ``run_batch``.
    """
    ray = import_ray()
    pending = [image for image in images if not sink.done(image, partial(item_digest, _item(image)))]
    skipped = len(images) - len(pending)
    connected_here = not ray.is_initialized()
    if connected_here and pending:
        _connect(ray, address)
    try:
        summary = _run(ray, pending, sink, load, job, progress, stop) if pending else BatchSummary()
    finally:
        if connected_here and ray.is_initialized():
            ray.shutdown()
    summary.skipped += skipped
    return summary


def _run(ray: Any, images: list[str], sink: Sink, load: ModelLoad, job: CaptionJob, progress: bool | None,
         stop: threading.Event | None) -> BatchSummary:
    ray.data.DataContext.get_current().enable_progress_bars = False
    rows = [{"path": _item(image).source, "name": image} for image in images]
    captioned = caption_dataset(
        ray.data.from_items(rows), load.model, gpus_per_actor=1 if load.runtime.device == "cuda" else 0,
        model_path=load.model_path, mmproj_path=load.mmproj_path, runtime=load.runtime, offline=load.offline,
        registry=load.registry, prompt=job.prompt, detail=job.detail, generation=job.generation,
        image_tokens=job.image_tokens, token_selection=job.token_selection,
    )
    records = (BatchRecord.from_json(json.loads(row["record"])) for row in captioned.iter_rows())
    return run_batch(records, sink, total=len(images), progress=progress, stop=stop)


def _connect(ray: Any, address: str) -> None:
    try:
        ray.init(address=None if address == "local" else address, include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise LlavaEdgeError(
            f"Could not connect to the Ray cluster at {address!r}: {err}. Start one with `ray start --head`, "
            "or use --ray local to run Ray on this machine.",
            code="rayUnavailable",
        ) from err


def _item(image: str) -> ImageItem:
    """Files are sent by absolute path (workers may run elsewhere); URLs and data URIs as they are."""
    return ImageItem(image, os.path.abspath(image) if os.path.isfile(image) else image)


def _items(batch: dict[str, Any]) -> list[ImageItem]:
    paths = [str(path) for path in batch["path"]]
    names = [str(name) for name in batch["name"]] if "name" in batch else paths
    sources = [bytes(data) for data in batch["bytes"]] if "bytes" in batch else paths
    return [ImageItem(name, source) for name, source in zip(names, sources, strict=True)]


def _default_actor_cpus(ray: Any) -> int:
    if not ray.is_initialized():
        ray.init()  # as Ray Data would on first use; the cluster's size is needed now
    node_cpus = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")]
    return max(1, min(MAX_DEFAULT_ACTOR_CPUS, int(max(node_cpus, default=1))))
