"""The ``llava-edge caption`` command and its photo flags (added to the CLI group by ``llava_edge.cli``)."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from llava_edge.command_options import ModelLoad, runtime_options

if TYPE_CHECKING:
    from llava_edge.batch.job import CaptionJob
    from llava_edge.batch.outputs import Sinks
    from llava_edge.batch.photo_step import PhotoFlags
    from llava_edge.batch.records import BatchSummary
    from llava_edge.structured import StructuredOutput

F = TypeVar("F", bound=Callable[..., Any])
_PHOTO_FLAGS = ("write_metadata", "keywords", "xmp_sidecar", "xmp_style", "sidecar_ext", "metadata_jsonl",
                "kohya_json", "prefix", "suffix", "strip_preamble", "if_exists", "overwrite", "keep_times")
"""The parameters ``photo_options`` adds, which reach the command as ``photo_flags``."""


def photo_options(function: F) -> F:
    """Where else captions go (the photos extra for XMP): the image, XMP sidecars, dataset files. The command
    receives them as one ``photo_flags: PhotoFlags`` argument."""

    @wraps(function)
    def with_photo_flags(*args: Any, **kwargs: Any) -> Any:
        from llava_edge.batch.photo_step import PhotoFlags

        flags = PhotoFlags(**{name: kwargs.pop(name) for name in _PHOTO_FLAGS})
        return function(*args, photo_flags=flags, **kwargs)

    choice, path = click.Choice, click.Path(dir_okay=False)
    flags: list[tuple[str, dict[str, Any]]] = [
        ("--write-metadata", {"is_flag": True, "help": "Write each caption into its image (XMP, IPTC, EXIF)."}),
        ("--keywords", {"is_flag": True, "help": "Also ask for keywords; write them as dc:subject/IPTC Keywords."}),
        ("--xmp-sidecar", {"is_flag": True, "help": "Write an XMP sidecar beside each image."}),
        ("--xmp-style", {"type": choice(["adobe", "darktable"]), "help": "photo.xmp (adobe) or photo.jpg.xmp."}),
        ("--sidecar-ext", {"type": choice([".txt", ".caption"]), "help": "A text sidecar with this extension."}),
        ("--metadata-jsonl", {"type": path, "help": "Hugging Face imagefolder metadata.jsonl (file_name, text)."}),
        ("--kohya-json", {"type": path, "help": "kohya metadata JSON ({stem: {caption}})."}),
        ("--prefix", {"default": "", "help": "Trigger words before dataset captions (text, jsonl, kohya)."}),
        ("--suffix", {"default": "", "help": "Words after dataset captions."}),
        ("--strip-preamble", {"is_flag": True, "help": 'Drop openers such as "The image shows".'}),
        ("--if-exists", {"type": choice(["skip", "overwrite", "append"]), "help": "An existing caption: (skip)."}),
        ("--overwrite", {"is_flag": True, "help": "Short for --if-exists overwrite."}),
        ("--keep-times", {"is_flag": True, "help": "Keep a rewritten image's modification time."}),
    ]
    decorated: Any = with_photo_flags
    for flag, kwargs in reversed(flags):
        decorated = click.option(flag, **kwargs)(decorated)
    return cast(F, decorated)



@click.command("caption")
@click.argument("images", nargs=-1, required=True)
@click.option("--prompt", "-p", default=None, help="Instruction for the model (default: a detailed description).")
@click.option("--detail", type=click.Choice(["auto", "low", "high"]), default="auto", show_default=True)
@click.option("--image-tokens", type=click.IntRange(1), default=None, metavar="N",
              help="Feed at most N image tokens per image, chosen from all its tiles (default: all).")
@click.option("--token-selection", type=click.Choice(["diverse", "pooled", "uniform"]), default=None,
              help="How --image-tokens picks its tokens (default: diverse).")
@click.option("--max-tokens", type=click.IntRange(1), default=None)
@click.option("--temperature", type=click.FloatRange(0, 2), default=None)
@click.option("--seed", type=click.IntRange(0), default=None)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image, with timings.")
@click.option("--recursive", "-r", is_flag=True, help="Include the subfolders of folders (and ** in globs).")
@click.option("--out", "-o", type=click.Path(dir_okay=False), default=None,
              help="Append one record per image to this JSONL or CSV file; run again to resume.")
@click.option("--format", "out_format", type=click.Choice(["jsonl", "csv"]), default=None,
              help="Format of --out (default: csv for a .csv file, else jsonl).")
@click.option("--sidecar", is_flag=True, help="Write each caption to a .txt file beside its image.")
@click.option("--ray", "ray_address", metavar="ADDRESS", default=None,
              help="Caption on a Ray cluster: auto, local, or its address (needs llava-edge[ray]).")
@click.option("--quiet", "-q", is_flag=True, help="No live line or progress bar.")
@click.option("--json-schema", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Answer with JSON that follows this JSON Schema file (the parsed object goes into the records).")
@click.option("--structured", type=click.Choice(["photo"]), default=None,
              help="Answer with the built-in schema: photo (caption, alt_text, keywords, main_subjects).")
@photo_options
@runtime_options
def caption_command(images: tuple[str, ...], prompt: str | None, detail: str, image_tokens: int | None,
                    token_selection: str | None, max_tokens: int | None, temperature: float | None,
                    seed: int | None, as_json: bool, recursive: bool, out: str | None, out_format: str | None,
                    sidecar: bool, ray_address: str | None, quiet: bool, json_schema: str | None,
                    structured: str | None, photo_flags: PhotoFlags, load: ModelLoad) -> None:
    """Caption IMAGES: files, folders, globs, URLs or data URIs.

    One image on a terminal shows a live line (CLIP tiles, prefill tokens, ETA), then the caption as it is
    generated. With --out or --sidecar, captions go to files with a progress bar that shows the image in
    hand's stage, a bad image becomes an error record, and running the same command again skips the images
    already done. Ctrl-C stops within one prefill batch (exit 130); what was written is complete. The photo
    flags (--write-metadata, --xmp-sidecar, --metadata-jsonl, ...) also write captions into images and datasets.
    """
    from llava_edge.batch.discovery import discover_images
    from llava_edge.batch.job import CaptionJob
    from llava_edge.batch.outputs import open_sinks
    from llava_edge.batch.photo_step import photo_options_for
    from llava_edge.batch.signals import stop_on_signals
    from llava_edge.generation import GenerationOptions

    if out_format is not None and out is None:
        raise click.UsageError("--format is the format of --out; give --out too.")
    if token_selection is not None and image_tokens is None:
        raise click.UsageError("--token-selection picks the tokens --image-tokens keeps; give --image-tokens too.")
    found = discover_images(images, recursive=recursive)
    if not found:
        raise click.UsageError(f"No images found in {', '.join(images)}.")
    given = (("max_tokens", max_tokens), ("temperature", temperature), ("seed", seed))
    changes: dict[str, Any] = {name: value for name, value in given if value is not None}
    schema = _structure(json_schema, structured, ray=ray_address is not None)
    flags = dataclasses.replace(photo_flags, sidecar=sidecar)
    photo = photo_options_for(flags, found, ray=ray_address is not None)
    sidecar = flags.plain_sidecar(photo)
    job = CaptionJob(prompt, detail, image_tokens=image_tokens, token_selection=token_selection,
                     generation=GenerationOptions(**changes), schema=schema, photo=photo)
    to_files = out is not None or sidecar or photo is not None
    live = len(found) == 1 and not (to_files or as_json or quiet or ray_address) and _on_a_terminal()
    with stop_on_signals() as stop, open_sinks(found, out=out, out_format=out_format, sidecar=sidecar,
                                                as_json=as_json) as sinks:
        if live:
            summary = _caption_live(found[0], sinks, job, load, stop)
        else:
            progress = None if to_files and not quiet else False
            summary = _caption_all(found, sinks, ray_address, job, load, progress=progress, stop=stop)
    if to_files:
        _report(summary)
    if summary.interrupted:
        sys.exit(130)
    if summary.failed:
        sys.exit(1)


def _caption_all(found: list[str], sinks: Sinks, ray_address: str | None, job: CaptionJob, load: ModelLoad,
                 progress: bool | None, stop: threading.Event) -> BatchSummary:
    """Caption on Ray, or here with the model loaded once (image-prefix cache off: each image is new)."""
    if ray_address is not None:
        from llava_edge.batch.ray_data import caption_on_ray, import_ray

        try:
            import_ray()
        except ImportError as err:
            raise click.ClickException(str(err)) from err
        return caption_on_ray(found, sinks, address=ray_address, load=load.with_runtime(prefix_cache_bytes=0),
                              job=job, progress=progress, stop=stop)
    from llava_edge.batch.photo_step import PhotoStep
    from llava_edge.batch.runner import ImageStage, caption_many, run_batch

    stage = ImageStage()
    with load.with_runtime(prefix_cache_bytes=0).load() as captioner:
        photo = None if job.photo is None else PhotoStep(job.photo, model=captioner.model_name, prompt=job.prompt,
                                                         structured=job.schema is not None)
        records = caption_many(found, job.prompt, captioner=captioner, detail=job.detail, photo=photo,
                               schema=job.schema, options=job.generation, image_tokens=job.image_tokens,
                               token_selection=job.token_selection,
                               skip=sinks.done if sinks.files else None, on_event=stage, stop=stop)
        return run_batch(records, sinks, total=len(found), progress=progress, stop=stop, stage=stage)


def _caption_live(image: str, sinks: Sinks, job: CaptionJob, load: ModelLoad, stop: threading.Event) -> BatchSummary:
    """One caption for a person at a terminal: the live line on stderr, the caption streamed to stdout
    (each only where it is a terminal)."""
    from llava_edge.batch.live import LiveCaption, LiveSink
    from llava_edge.batch.runner import caption_many, run_batch

    live = LiveCaption(sys.stdout, sys.stderr)
    try:
        with load.with_runtime(prefix_cache_bytes=0).load() as captioner:
            records = caption_many([image], job.prompt, captioner=captioner, detail=job.detail,
                                   options=job.generation, on_event=live.event, stop=stop, schema=job.schema,
                                   image_tokens=job.image_tokens, token_selection=job.token_selection)
            return run_batch(records, LiveSink(live, sinks), total=1, progress=False, stop=stop)
    finally:
        live.end()


def _structure(schema_file: str | None, built_in: str | None, *, ray: bool) -> StructuredOutput | None:
    """The checked ``StructuredOutput`` of ``--json-schema``/``--structured`` (before a model loads), or None."""
    if schema_file is None and built_in is None:
        return None
    if schema_file is not None and built_in is not None:
        raise click.UsageError("Give --json-schema or --structured, not both.")
    if ray:
        raise click.UsageError("--ray does not take --json-schema or --structured yet; leave out one of them.")
    from llava_edge.api import structured_output

    if schema_file is None:
        return structured_output(built_in, parameter="structured")
    try:
        with open(schema_file, encoding="utf-8") as file:
            schema = json.load(file)
    except (OSError, ValueError) as err:
        raise click.BadParameter(f"{schema_file} is not a readable JSON file ({err}).",
                                 param_hint="--json-schema") from err
    return structured_output(schema, parameter="json-schema")


def _on_a_terminal() -> bool:
    from llava_edge.batch.live import is_terminal

    return is_terminal(sys.stdout) or is_terminal(sys.stderr)


def _report(summary: BatchSummary) -> None:
    state = "Interrupted" if summary.interrupted else "Done"
    click.echo(f"{state}: {summary.captioned} captioned, {summary.failed} failed, {summary.skipped} already done "
               f"({summary.elapsed_s:.1f} s, {summary.images_per_s:.2f} images/s).", err=True)
    if summary.interrupted:
        click.echo("Run the same command again to resume.", err=True)
