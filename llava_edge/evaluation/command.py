"""The ``llava-edge eval`` command (added to the CLI group by ``llava_edge.cli``)."""

from __future__ import annotations

import time

import click


@click.command("eval")
@click.argument("variants", nargs=-1)
@click.option("--ladder", is_flag=True, help="Add the synthetic quantization ladder (f16 base and every type).")
@click.option("--reference", default=None,
              help="Variant, synthetic model or f16 text-model path to compare against (default: the "
                   "highest-precision variant evaluated).")
@click.option("--mmproj", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The vision projector for variants given as model paths.")
@click.option("--images-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="An eval set: a folder of images with a captions.toml (default: the built-in 20 images).")
@click.option("--images", "limit", type=click.IntRange(1), default=None, help="Use only the first N images.")
@click.option("--detail", "details", multiple=True, type=click.Choice(["low", "high"]), default=("low", "high"),
              show_default=True)
@click.option("--image-tokens", "image_tokens", default=None, metavar="N[,N...]",
              help="Also measure each variant under these image token budgets (e.g. 2880,1280,640,320,160); each "
                   "row is compared with the reference at all tokens and with the same variant at all tokens.")
@click.option("--token-selection", "token_selections", default="diverse", show_default=True,
              metavar="METHOD[,METHOD...]", help="How budgets pick tokens: diverse, pooled, uniform (comma list).")
@click.option("--prompt", default=None, help="The instruction before each caption.")
@click.option("--max-tokens", type=click.IntRange(1), default=32, show_default=True,
              help="Tokens generated per timed caption.")
@click.option("--score-tokens", type=click.IntRange(1), default=None,
              help="Score at most this many tokens of each reference caption (default: all).")
@click.option("--warmup", type=click.IntRange(0), default=1, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads (default: all cores).")
@click.option("--n-ctx", type=click.IntRange(512), default=None, help="Context length (default 4096).")
@click.option("--registry", type=click.Path(dir_okay=False), default=None, help="A models.toml to use.")
@click.option("--out", type=click.Path(file_okay=False), default="eval-results", show_default=True)
@click.option("--name", default=None, help="File name stem (default: eval-<UTC time>).")
@click.option("--no-chart", is_flag=True, help="Skip the PNG chart (needs matplotlib, the bench extra).")
def eval_command(variants: tuple[str, ...], ladder: bool, reference: str | None, mmproj: str | None,
                 images_dir: str | None, limit: int | None, details: tuple[str, ...], image_tokens: str | None,
                 token_selections: str, prompt: str | None,
                 max_tokens: int, score_tokens: int | None, warmup: int, threads: int | None, n_ctx: int | None,
                 registry: str | None, out: str, name: str | None, no_chart: bool) -> None:
    """Compare quantization VARIANTS (default: every downloaded one) against a reference: quality loss
    (KL, top-1 agreement, caption NLL), speed per stage, peak RSS and file size; write JSON, markdown and
    a chart. VARIANTS are variant ids, synthetic-<preset>, synthetic-ladder[-<type>] or text-model paths.
    Errors are ``LlavaEdgeError``s: the CLI that registers this command shows them as one line."""
    from llava_edge.evaluation.eval_set import load_eval_set
    from llava_edge.evaluation.report import write_outputs
    from llava_edge.evaluation.runner import EVAL_PROMPT, EvalSettings, run_eval
    from llava_edge.evaluation.variants import choose_reference, resolve_variants

    budgets, selections = _budgets(image_tokens, token_selections)
    chosen = resolve_variants(variants, ladder=ladder, mmproj=mmproj, registry=registry)
    base = choose_reference(chosen, reference, mmproj=mmproj, registry=registry)
    items = load_eval_set(images_dir, limit=limit)
    runtime = {key: value for key, value in (("threads", threads), ("threads_batch", threads), ("n_ctx", n_ctx))
               if value is not None}
    settings = EvalSettings(prompt=prompt or EVAL_PROMPT, details=tuple(dict.fromkeys(details)),
                            max_tokens=max_tokens, score_tokens=score_tokens, warmup=warmup, runtime=runtime,
                            image_tokens=budgets, token_selections=selections)
    stem = name or f"eval-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    report = run_eval(chosen, base, items, settings, progress=lambda line: click.echo(line, err=True),
                      on_result=lambda partial: write_outputs(partial, out, stem, chart=False))
    for kind, path in write_outputs(report, out, stem, chart=not no_chart).items():
        click.echo(f"{kind}: {path}")


def _budgets(image_tokens: str | None, selections: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """``--image-tokens`` and ``--token-selection`` as lists, checked (``click.BadParameter`` names the flag)."""
    from llava_edge.token_budget import SELECTIONS

    methods = tuple(dict.fromkeys(part.strip() for part in selections.split(",") if part.strip()))
    unknown = [method for method in methods if method not in SELECTIONS]
    if unknown or not methods:
        raise click.BadParameter(f"choose from {', '.join(SELECTIONS)}; got {selections!r}",
                                 param_hint="--token-selection")
    if image_tokens is None:
        return (), methods
    try:
        budgets = tuple(dict.fromkeys(int(part) for part in image_tokens.split(",") if part.strip()))
    except ValueError:
        budgets = ()
    if not budgets or min(budgets) < 1:
        raise click.BadParameter(f"give whole numbers of at least 1, like 2880,640,160; got {image_tokens!r}",
                                 param_hint="--image-tokens")
    return budgets, methods
