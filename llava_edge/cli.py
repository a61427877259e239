"""The ``llava-edge`` command: a thin layer over the API. Parse, call, print (text or ``--json``)."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from functools import wraps
from typing import Any, TypeVar

import click

from llava_edge._version import __version__
from llava_edge.errors import LlavaEdgeError
from llava_edge.evaluation.command import eval_command

F = TypeVar("F", bound=Callable[..., Any])


def _user_errors(function: F) -> F:
    """Show a LlavaEdgeError as a one-line message and exit 1, instead of a traceback."""

    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except LlavaEdgeError as err:
            raise click.ClickException(f"{err} [{err.code}]") from err

    return wrapper  # type: ignore[return-value]


registry_option = click.option(
    "--registry", type=click.Path(dir_okay=False), default=None,
    help="A models.toml to use instead of the built-in one (default: $LLAVA_EDGE_MODELS).",
)


def runtime_options(function: F) -> F:
    """Options that choose and load the model, shared by every command that runs one."""
    decorators = [
        click.option("--model", "-m", default=None, help="Variant id, alias, runware:150@2, or synthetic-tiny."),
        click.option("--model-path", type=click.Path(exists=True, dir_okay=False), help="A local text-model GGUF."),
        click.option("--mmproj-path", type=click.Path(exists=True, dir_okay=False), help="Its local mmproj GGUF."),
        click.option(
            "--device", type=click.Choice(["auto", "cpu", "metal", "cuda"]), default="auto", show_default=True
        ),
        click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads (default: all cores)."),
        click.option("--n-ctx", type=click.IntRange(512), default=4096, show_default=True),
        click.option("--offline", is_flag=True, default=None, help="Use only the local model cache."),
        registry_option,
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def captioner_config(options: dict[str, Any], **runtime_changes: Any) -> dict[str, Any]:
    """Captioner keyword arguments from the shared runtime options of a command (plus RuntimeOptions changes)."""
    from llava_edge.generation import RuntimeOptions

    runtime = RuntimeOptions(
        device=options["device"], n_ctx=options["n_ctx"], threads=options["threads"], threads_batch=options["threads"],
        **runtime_changes,
    )
    return {
        "model": options["model"], "model_path": options["model_path"], "mmproj_path": options["mmproj_path"],
        "runtime": runtime, "offline": options["offline"], "registry": options.get("registry"),
    }


def load_captioner(options: dict[str, Any], **runtime_changes: Any) -> Any:
    """A Captioner built from the shared runtime options of a command."""
    from llava_edge.api import Captioner

    return Captioner(**captioner_config(options, **runtime_changes))


def photo_options(function: F) -> F:
    """Where else captions go (the photos extra for XMP): the image, XMP sidecars, dataset files."""
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
    for flag, kwargs in reversed(flags):
        function = click.option(flag, **kwargs)(function)
    return function


@click.group()
@click.version_option(__version__, prog_name="llava-edge")
def main() -> None:
    """Caption images offline with LLaVA-1.6-Mistral-7B, speaking the Runware caption API."""


def _with_user_errors(command: click.Command) -> click.Command:
    """A wing's command, its ``LlavaEdgeError``s shown as one line like the CLI's own commands'."""
    if command.callback is not None:
        command.callback = _user_errors(command.callback)
    return command


main.add_command(_with_user_errors(eval_command))  # quality loss per quantization variant: llava_edge/evaluation


@main.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--prompt", "-p", default=None, help="Instruction for the model (default: a detailed description).")
@click.option("--detail", type=click.Choice(["auto", "low", "high"]), default="auto", show_default=True)
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
@_user_errors
def caption(images: tuple[str, ...], prompt: str | None, detail: str, max_tokens: int | None,
            temperature: float | None, seed: int | None, as_json: bool, recursive: bool, out: str | None,
            out_format: str | None, sidecar: bool, ray_address: str | None, quiet: bool, **options: Any) -> None:
    """Caption IMAGES: files, folders, globs, URLs or data URIs.

    One image on a terminal shows a live line (CLIP tiles, prefill tokens, ETA), then the caption as it is
    generated. With --out or --sidecar, captions go to files with a progress bar that shows the image in
    hand's stage, a bad image becomes an error record, and running the same command again skips the images
    already done. Ctrl-C stops within one prefill batch (exit 130); what was written is complete. The photo
    flags (--write-metadata, --xmp-sidecar, --metadata-jsonl, ...) also write captions into images and datasets.
    """
    from llava_edge.batch.outputs import open_sinks
    from llava_edge.batch.photo_step import photo_options_for
    from llava_edge.batch.runner import discover_images
    from llava_edge.batch.signals import stop_on_signals
    from llava_edge.generation import GenerationOptions

    if out_format is not None and out is None:
        raise click.UsageError("--format is the format of --out; give --out too.")
    found = discover_images(images, recursive=recursive)
    if not found:
        raise click.UsageError(f"No images found in {', '.join(images)}.")
    given = (("max_tokens", max_tokens), ("temperature", temperature), ("seed", seed))
    changes: dict[str, Any] = {name: value for name, value in given if value is not None}
    schema = _structure(options.pop("json_schema"), options.pop("structured"), ray=ray_address is not None)
    photo = photo_options_for({**options, "sidecar": sidecar}, found, ray=ray_address is not None)
    sidecar = sidecar and (photo is None or photo.targets.text_sidecar is None)
    job = {"prompt": prompt, "detail": detail, "generation": GenerationOptions(**changes), "photo": photo,
           "schema": schema}
    to_files = out is not None or sidecar or photo is not None
    live = len(found) == 1 and not (to_files or as_json or quiet or ray_address) and _on_a_terminal()
    with stop_on_signals() as stop, open_sinks(found, out=out, out_format=out_format, sidecar=sidecar,
                                                as_json=as_json) as sinks:
        if live:
            summary = _caption_live(found[0], sinks, job, options, stop)
        else:
            progress = None if to_files and not quiet else False
            summary = _caption_all(found, sinks, ray_address, job, options, progress=progress, stop=stop)
    if to_files:
        _report(summary)
    if summary.interrupted:
        sys.exit(130)
    if summary.failed:
        sys.exit(1)


def _caption_all(found: list[str], sinks: Any, ray_address: str | None, job: dict[str, Any],
                 options: dict[str, Any], progress: bool | None, stop: threading.Event) -> Any:
    """Caption on Ray, or here with the model loaded once (image-prefix cache off: each image is new)."""
    if ray_address is not None:
        from llava_edge.batch.ray_data import caption_on_ray, import_ray

        try:
            import_ray()
        except ImportError as err:
            raise click.ClickException(str(err)) from err
        ray_job = {key: value for key, value in job.items() if key not in ("photo", "schema")}  # refused
        return caption_on_ray(found, sinks, address=ray_address, progress=progress, stop=stop, **ray_job,
                              gpus_per_actor=1 if options["device"] == "cuda" else 0,
                              **captioner_config(options, prefix_cache_bytes=0))
    from llava_edge.batch.photo_step import PhotoStep
    from llava_edge.batch.runner import ImageStage, caption_many, run_batch

    stage = ImageStage()
    with load_captioner(options, prefix_cache_bytes=0) as captioner:
        photo = job["photo"] and PhotoStep(job["photo"], model=captioner.model_name, prompt=job["prompt"],
                                           structured=job["schema"] is not None)
        records = caption_many(found, job["prompt"], captioner=captioner, detail=job["detail"], photo=photo,
                               schema=job["schema"],
                               options=job["generation"], skip=sinks.done if sinks.files else None, on_event=stage,
                               stop=stop)
        return run_batch(records, sinks, total=len(found), progress=progress, stop=stop, stage=stage)


def _caption_live(image: str, sinks: Any, job: dict[str, Any], options: dict[str, Any],
                  stop: threading.Event) -> Any:
    """One caption for a person at a terminal: the live line on stderr, the caption streamed to stdout
    (each only where it is a terminal)."""
    from llava_edge.batch.runner import caption_many, run_batch
    from llava_edge.live import LiveCaption, LiveSink

    live = LiveCaption(sys.stdout, sys.stderr)
    try:
        with load_captioner(options, prefix_cache_bytes=0) as captioner:
            records = caption_many([image], job["prompt"], captioner=captioner, detail=job["detail"],
                                   options=job["generation"], on_event=live.event, stop=stop, schema=job["schema"])
            return run_batch(records, LiveSink(live, sinks), total=1, progress=False, stop=stop)
    finally:
        live.end()


def _structure(schema_file: str | None, built_in: str | None, *, ray: bool) -> Any:
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
    from llava_edge.live import is_terminal

    return is_terminal(sys.stdout) or is_terminal(sys.stderr)


def _report(summary: Any) -> None:
    state = "Interrupted" if summary.interrupted else "Done"
    click.echo(f"{state}: {summary.captioned} captioned, {summary.failed} failed, {summary.skipped} already done "
               f"({summary.elapsed_s:.1f} s, {summary.images_per_s:.2f} images/s).", err=True)
    if summary.interrupted:
        click.echo("Run the same command again to resume.", err=True)


@main.command()
@click.option("--json", "as_json", is_flag=True)
def info(as_json: bool) -> None:
    """What this machine and the installed llama-cpp-python can do."""
    from llava_edge import machine
    from llava_edge.runtime.probe import probe_in_child

    facts = {
        "llava_edge": __version__,
        **probe_in_child(),
        "cpu": machine.cpu_model(),
        "cpu_features": machine.cpu_flags(),
        "threads": machine.cpu_count(),
        "ram_total_gib": round(machine.total_memory() / 2**30, 1),
        "ram_available_gib": round(machine.available_memory() / 2**30, 1),
    }
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    for key, value in facts.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        click.echo(f"{key:>18}: {shown}")


@main.command()
@click.option("--host", default=None,
              help="Address to bind (default 127.0.0.1). Anything but loopback needs an --api-key of 16+ "
                   "characters, or --no-auth.")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default 8765).")
@click.option("--api-key", envvar="LLAVA_EDGE_API_KEY", default=None,
              help="Key clients must send (env LLAVA_EDGE_API_KEY). Without one, any key is accepted.")
@click.option("--max-queue", type=click.IntRange(1), default=None,
              help="Caption tasks waiting at most (default 32); more are answered serviceUnavailable.")
@click.option("--result-ttl", type=click.IntRange(1), default=None,
              help="Seconds results stay available to getResponse when a task sets no ttl (default 3600).")
@click.option("--allow-fetch-host", "fetch_hosts", metavar="HOST", multiple=True,
              help="A host that image URLs, webhookURL and uploadEndpoint may name, even if its address is "
                   "private; repeat for more (default: any host with a public address).")
@click.option("--no-fetch", is_flag=True,
              help="Contact no host for a request: image URLs, webhooks and uploadEndpoint are all refused.")
@click.option("--allow-private-fetch", is_flag=True,
              help="Let requests make the server contact loopback, private, link-local and other non-public "
                   "addresses (refused by default).")
@click.option("--shutdown-timeout", type=click.FloatRange(0), default=None,
              help="On SIGTERM or Ctrl-C, seconds accepted captions get to finish (default 20); then 5 s for "
                   "pending webhooks.")
@click.option("--no-auth", is_flag=True,
              help="Serve a non-loopback address without a key, for clients that cannot send one (warned).")
@click.option("--allow-origin", "origins", metavar="ORIGIN", multiple=True,
              help="A web page origin (https://app.example:8443) that may call the server from a browser; "
                   "repeat for more. Other pages are refused.")
@click.option("--prefix-cache-mb", type=click.IntRange(0), default=1024, show_default=True,
              help="Memory for image prefixes kept between requests, so clients that interleave still get fast "
                   "follow-up answers (about 360 MB per 672x672 image on the 7B model; 0 keeps only the last).")
@click.option("--allow-host", "host_names", metavar="NAME", multiple=True,
              help="A Host name clients may use besides IP addresses and localhost (DNS-rebinding defence).")
@click.option("--allow-pull", is_flag=True,
              help="Let clients download models through /api/pull on a non-loopback bind without a key.")
@runtime_options
@_user_errors
def serve(host: str | None, port: int | None, api_key: str | None, max_queue: int | None, result_ttl: int | None,
          fetch_hosts: tuple[str, ...], no_fetch: bool, allow_private_fetch: bool, shutdown_timeout: float | None,
          no_auth: bool, origins: tuple[str, ...], host_names: tuple[str, ...], prefix_cache_mb: int,
          allow_pull: bool, **options: Any) -> None:
    """Serve the Runware API (REST and WebSocket at /v1) so the official Runware SDKs caption on this device."""
    from llava_edge.server.settings import ServerSettings, normalise_host

    if no_fetch and fetch_hosts:
        raise click.UsageError("--no-fetch forbids every host; leave out --allow-fetch-host.")
    allowed_hosts = frozenset() if no_fetch else frozenset(map(normalise_host, fetch_hosts)) or None
    given: dict[str, Any] = {"host": host, "port": port, "api_key": api_key, "max_queue": max_queue,
                             "result_ttl": result_ttl, "shutdown_timeout": shutdown_timeout,
                             "fetch_hosts": allowed_hosts, "allow_private_fetch": allow_private_fetch,
                             "no_auth": no_auth, "allow_origins": frozenset(origins),
                             "allow_hosts": frozenset(name.lower() for name in host_names),
                             "offline": bool(options["offline"]), "allow_pull": allow_pull}
    settings = ServerSettings(**{name: value for name, value in given.items() if value is not None})
    settings.check()
    try:
        from llava_edge.server.app import run_server
        from llava_edge.server.page import page_url
        from llava_edge.server.request_log import show_server_logs
    except ImportError as err:
        raise click.ClickException(str(err)) from err
    if settings.no_auth:
        click.echo(f"llava-edge: WARNING: serving {settings.host} without a key (--no-auth): anyone who can reach "
                   "this address can caption and upload.", err=True)
    show_server_logs()  # the model's load time, then refusals, swaps and unloads
    captioner = load_captioner(options, prefix_cache_bytes=prefix_cache_mb * 2**20)
    root = f"{settings.host}:{settings.port}/v1"
    click.echo(f"llava-edge: {captioner.model_name} loaded; serving http://{root} and ws://{root}", err=True)
    click.echo(f"llava-edge: captioning page: {page_url(settings)} (open it in a browser)", err=True)
    if run_server(captioner, settings):
        captioner.close()
    else:  # a caption still runs past the shutdown deadline; freeing the model under it would crash
        click.echo("llava-edge: a caption was still running at the shutdown deadline; exiting without it.", err=True)


@main.command()
@click.argument("variant", required=False)
@registry_option
@click.option("--dir", "local_dir", type=click.Path(file_okay=False), default=None,
              help="Put the files in this directory instead of the Hugging Face cache.")
@click.option("--token", default=None, help="Hugging Face token for gated or private repos (default: HF_TOKEN).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@_user_errors
def pull(variant: str | None, registry: str | None, local_dir: str | None, token: str | None, quiet: bool) -> None:
    """Download and verify VARIANT (an id, alias, runware:150@2 or auto; default: the registry's default).

    An interrupted download resumes where it stopped on the next run; files already present are re-hashed.
    """
    from llava_edge.models.download import download_model

    files = download_model(variant, registry=registry, local_dir=local_dir, token=token,
                           progress=False if quiet else None, verify_cached=True)
    click.echo(f"{files.name} model:  {files.model_path}")
    click.echo(f"{files.name} mmproj: {files.mmproj_path}")


@main.command()
@registry_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array of variants.")
@_user_errors
def models(registry: str | None, as_json: bool) -> None:
    """Every variant: size on disk, RAM it needs at n_ctx 4096, whether it is downloaded, default and auto."""
    from llava_edge.models.resolve import list_variants

    rows = list_variants(registry=registry)
    if as_json:
        click.echo(json.dumps([asdict(row) for row in rows], indent=2))
        return
    click.echo(f"{'VARIANT':<14}{'SIZE':>9}{'RAM@4096':>10}  {'DOWNLOADED':<11}{'NOTES':<14}ALIASES")
    for row in rows:
        notes = ", ".join(note for note, on in (("default", row.default), ("auto", row.auto)) if on)
        click.echo(f"{row.id:<14}{row.size_bytes / 1e9:>7.2f}GB{row.memory_bytes / 2**30:>7.1f}GiB  "
                   f"{'yes' if row.downloaded else 'no':<11}{notes:<14}{', '.join(row.aliases)}")


def _write_partial(report: Any, out: str, stem: str) -> None:
    """Write the report so far, so that what finished is kept if a later configuration fails."""
    from llava_edge.bench.report import write_outputs

    write_outputs(report, out, stem)


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    try:
        return int(width), int(height or width)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not WIDTHxHEIGHT (e.g. 672x672)") from None


def _bench_runtime(repack: bool | None, flash_attn: bool | None, threads: int | None, threads_batch: int | None,
                   batch: int | None, ubatch: int | None, n_ctx: int | None) -> dict[str, Any]:
    chosen = {"repack": repack, "flash_attn": flash_attn, "threads": threads, "threads_batch": threads_batch,
              "n_batch": batch, "n_ubatch": ubatch, "n_ctx": n_ctx}
    return {key: value for key, value in chosen.items() if value is not None}


@main.command()
@click.option("--model", "-m", default="synthetic-real-shape-4l", show_default=True,
              help="Variant id / alias, or synthetic-<preset> (real-shape, real-shape-4l, tiny).")
@click.option("--suite", type=click.Choice(["custom", "targets", "sweep"]), default="custom", show_default=True,
              help="custom: --image-size x --detail with one option set; targets: the performance target matrix; "
                   "sweep: one CPU setting at a time.")
@click.option("--only", multiple=True, help="Run only the suite configurations with these names.")
@click.option("--image-size", "sizes", multiple=True, default=("672x672",), show_default=True)
@click.option("--detail", "details", multiple=True, type=click.Choice(["auto", "low", "high"]), default=("auto",))
@click.option("--runs", type=click.IntRange(1), default=3, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=1, show_default=True, help="Warm-up captions (336x336).")
@click.option("--max-tokens", type=click.IntRange(1), default=64, show_default=True,
              help="Generated tokens per caption (random weights never stop early, so this pins the count).")
@click.option("--followup", is_flag=True, help="Also time a follow-up question about each image.")
@click.option("--anchor", type=click.Path(exists=True, dir_okay=False),
              help="llama-mtmd-cli binary (benchmarks/build_mtmd_cli.sh) to run on the same inputs.")
@click.option("--out", type=click.Path(file_okay=False), default="benchmarks/results", show_default=True)
@click.option("--name", default=None, help="File name stem (default: <model>-<suite>-<UTC time>).")
@click.option("--repack/--no-repack", default=None, help="Weight repacking (llama.cpp extra buffer types).")
@click.option("--flash-attn/--no-flash-attn", default=None)
@click.option("--threads", type=click.IntRange(1), default=None, help="Decode threads.")
@click.option("--threads-batch", type=click.IntRange(1), default=None, help="Prefill and CLIP threads.")
@click.option("--batch", type=click.IntRange(1), default=None, help="n_batch.")
@click.option("--ubatch", type=click.IntRange(1), default=None, help="n_ubatch.")
@click.option("--n-ctx", type=click.IntRange(512), default=None)
@click.option("--no-bandwidth", is_flag=True, help="Skip the memory-bandwidth measurement.")
@click.option("--busy-cores", type=click.FloatRange(0), default=0.5, show_default=True,
              help="Re-run a process once when other processes kept more cores than this busy during it.")
@_user_errors
def bench(model: str, suite: str, only: tuple[str, ...], sizes: tuple[str, ...], details: tuple[str, ...],
          runs: int, warmup: int, max_tokens: int, followup: bool, anchor: str | None, out: str, name: str | None,
          no_bandwidth: bool, busy_cores: float, **settings: Any) -> None:
    """Benchmark captioning per stage; write JSON, a markdown table and a PNG chart."""
    import time

    from llava_edge.bench.report import write_outputs
    from llava_edge.bench.runner import run_benchmark
    from llava_edge.bench.suites import custom_suite, sweep_suite, target_suite

    runtime = _bench_runtime(**settings)
    common: dict[str, Any] = {"runs": runs, "warmup": warmup, "max_tokens": max_tokens}
    if suite == "targets":
        configs = target_suite(model, size=_size(sizes[0]), anchor=anchor, **common)
    elif suite == "sweep":
        configs = sweep_suite(model, size=_size(sizes[0]), **common)
    else:
        configs = custom_suite(model, [_size(s) for s in sizes], list(details), runtime, followup=followup,
                               anchor=anchor is not None, **common)
    configs = [config for config in configs if not only or config.name in only]
    if not configs:
        raise click.BadParameter("--only matched no configuration of the suite.")
    stem = name or f"{model}-{suite}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    report = run_benchmark(configs, anchor=anchor, measure_bandwidth=not no_bandwidth,
                           progress=lambda line: click.echo(line, err=True),
                           on_result=lambda partial: _write_partial(partial, out, stem),
                           busy_cores=busy_cores)
    for kind, path in write_outputs(report, out, stem).items():
        click.echo(f"{kind}: {path}")
