"""The command-line options that several commands share: ``--registry``, and the runtime options that choose
and load the model (``caption`` and ``serve``), which a command receives as one typed ``ModelLoad``.

Below the wings, so that each wing's command (``batch/command.py``, ``server/command.py``) declares them
itself; ``llava_edge.cli`` puts the commands into one group."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from llava_edge.generation import RuntimeOptions

if TYPE_CHECKING:
    from llava_edge.api import Captioner

F = TypeVar("F", bound=Callable[..., Any])

registry_option = click.option(
    "--registry", type=click.Path(dir_okay=False), default=None,
    help="A models.toml to use instead of the built-in one (default: $LLAVA_EDGE_MODELS).",
)

_RUNTIME_FLAGS = ("model", "model_path", "mmproj_path", "device", "threads", "n_ctx", "offline", "registry")
"""The parameters ``runtime_options`` adds, which reach the command as ``load``."""


@dataclass(frozen=True)
class ModelLoad:
    """Which model a command loads, and how: the runtime options as the command line gave them."""

    model: str | None = None
    """A variant id, alias, ``runware:150@2`` or ``synthetic-<preset>``; ``None``: the registry's default."""
    model_path: str | None = None
    """A local text-model GGUF, instead of ``model``."""
    mmproj_path: str | None = None
    """Its local mmproj GGUF."""
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    """Device, context length and threads (``--threads`` sets both decode and prefill threads)."""
    offline: bool | None = None
    """Use only the local model cache; ``None``: as ``HF_HUB_OFFLINE`` says."""
    registry: str | None = None
    """A models.toml to use instead of the built-in one."""

    @classmethod
    def from_flags(cls, *, model: str | None, model_path: str | None, mmproj_path: str | None, device: str,
                   threads: int | None, n_ctx: int, offline: bool | None, registry: str | None) -> ModelLoad:
        """The load the options of ``runtime_options`` describe."""
        runtime = RuntimeOptions(device=device, n_ctx=n_ctx, threads=threads, threads_batch=threads)
        return cls(model, model_path, mmproj_path, runtime, offline, registry)

    def with_runtime(self, **changes: Any) -> ModelLoad:
        """This load with some ``RuntimeOptions`` fields changed (``prefix_cache_bytes=0``, say)."""
        return replace(self, runtime=replace(self.runtime, **changes))

    def load(self) -> Captioner:
        """Load the model: a ``Captioner`` (close it when done).

        Raises:
            LlavaEdgeError: as ``Captioner`` does (unknown model, files not cached, a broken GGUF, ...).
        """
        from llava_edge.api import Captioner

        return Captioner(self.model, model_path=self.model_path, mmproj_path=self.mmproj_path, runtime=self.runtime,
                         offline=self.offline, registry=self.registry)


def runtime_options(function: F) -> F:
    """Options that choose and load the model, shared by every command that runs one. The command receives
    them as one ``load: ModelLoad`` argument."""

    @wraps(function)
    def with_load(*args: Any, **kwargs: Any) -> Any:
        flags = {name: kwargs.pop(name) for name in _RUNTIME_FLAGS}
        return function(*args, load=ModelLoad.from_flags(**flags), **kwargs)

    decorators = [
        click.option("--model", "-m", default=None, help="Variant id, alias, runware:150@2, or synthetic-tiny."),
        click.option("--model-path", type=click.Path(exists=True, dir_okay=False), help="A local text-model GGUF."),
        click.option("--mmproj-path", type=click.Path(exists=True, dir_okay=False), help="Its local mmproj GGUF."),
        click.option(
            "--device", type=click.Choice(["auto", "cpu", "metal", "cuda"]), default="auto", show_default=True
        ),
        click.option("--threads", type=click.IntRange(1), default=None,
                     help="CPU threads (default: the performance cores where the CPU has two kinds, else every "
                          "usable core)."),
        click.option("--n-ctx", type=click.IntRange(512), default=4096, show_default=True),
        click.option("--offline", is_flag=True, default=None, help="Use only the local model cache."),
        registry_option,
    ]
    decorated: Any = with_load
    for decorator in reversed(decorators):
        decorated = decorator(decorated)
    return cast(F, decorated)
