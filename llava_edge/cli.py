"""The ``llava-edge`` command: the group, and the commands that manage this machine's models (``info``, ``pull``,
``models``). Each wing owns its own command (``caption``: ``batch/command.py``, ``serve``: ``server/command.py``,
``bench``: ``bench/command.py``, ``eval``: ``evaluation/command.py``), and this group shows their
``LlavaEdgeError``s as one line like its own. Thin: parse, call the API, print (text or ``--json``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from functools import wraps
from typing import Any, TypeVar

import click

from llava_edge._version import __version__
from llava_edge.batch.command import caption_command
from llava_edge.bench.command import bench_command
from llava_edge.command_options import registry_option
from llava_edge.errors import LlavaEdgeError
from llava_edge.evaluation.command import eval_command
from llava_edge.host import refuse_unsupported_os
from llava_edge.server.command import serve_command

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


@click.group()
@click.version_option(__version__, prog_name="llava-edge")
@_user_errors
def main() -> None:
    """Caption images offline with LLaVA-1.6-Mistral-7B, speaking the Runware caption API."""
    refuse_unsupported_os()


def _with_user_errors(command: click.Command) -> click.Command:
    """A wing's command, its ``LlavaEdgeError``s shown as one line like the CLI's own commands'."""
    if command.callback is not None:
        command.callback = _user_errors(command.callback)
    return command


main.add_command(_with_user_errors(caption_command))  # many images, resumable outputs, photos: llava_edge/batch
main.add_command(_with_user_errors(serve_command))  # the Runware, OpenAI and Ollama APIs: llava_edge/server
main.add_command(_with_user_errors(bench_command))  # speed per stage: llava_edge/bench
main.add_command(_with_user_errors(eval_command))  # quality loss per quantization variant: llava_edge/evaluation


@main.command()
@click.option("--json", "as_json", is_flag=True)
def info(as_json: bool) -> None:
    """What this machine and the installed llama-cpp-python can do."""
    from llava_edge import machine
    from llava_edge.runtime.probe import probe_in_child

    backend = probe_in_child()
    facts = {"llava_edge": __version__, **backend, **machine.describe(backend)}
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    for key, value in facts.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        click.echo(f"{key:>18}: {shown}")


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
