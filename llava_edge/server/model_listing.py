"""The models a server can answer with, one entry per model, for ``/v1/models``, ``/api/tags`` and
``/api/pull``: each installed model once, with every other name that picks it (its aliases); and which model a
name picks, the same on every API (``resolve_model``, ``task_model`` for Runware tasks).

The generic names (``llava``, ``llava:7b``, ``runware:150@2``, ...) are aliases of the start model, the one
``serve`` loaded. Synthetic models are listed only when the server was started on one: a server started on a
real model does not offer test models to its clients.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from llava_edge import paths
from llava_edge.errors import LlavaEdgeError, UnknownModelError
from llava_edge.models.catalog import ModelFiles, load_registry
from llava_edge.models.ollama_names import ollama_tag
from llava_edge.models.resolve import installed_models, model_files
from llava_edge.models.synthetic import NAME_PREFIX
from llava_edge.server.conversation import quoted

if TYPE_CHECKING:
    from llava_edge.api import Captioner
    from llava_edge.server.resident_model import ResidentModel


class Serving(Protocol):
    """What the model listing reads of the server: its resident model."""

    @property
    def resident(self) -> ResidentModel: ...

    @property
    def captioner(self) -> Captioner: ...

GENERIC_NAMES = ("llava", "llava:latest", "llava:7b", "llava-1.6-mistral", "llava-1.6-mistral:7b",
                 "llava:7b-v1.6-mistral", "runware:150@2")
"""Names Ollama and Runware users type for this model; all mean the start model."""
CAPABILITIES = ("completion", "vision")


@dataclass(frozen=True)
class InstalledModel:
    """One model on this machine, as the listings show it."""

    id: str
    """The variant id (``Q4_K_M``), ``synthetic-<preset>``, or a local file's name."""
    tag: str
    """Its Ollama name (``llava:7b-v1.6-mistral-q4_K_M``; the id where Ollama has none)."""
    aliases: tuple[str, ...]
    """Every other name that picks it, the id and tag included."""
    resident: bool
    """Loaded now."""


def installed_list(service: Serving) -> list[InstalledModel]:
    """The models a request may name, the resident one first."""
    start, resident = service.resident.start_model, service.captioner.model_name
    names = name_table(service)
    ids = list(dict.fromkeys([resident, *names.values()]))
    if not started_on_synthetic(service):
        ids = [model for model in ids if not model.startswith(NAME_PREFIX) or model == resident]
    resident_path = service.captioner.files.model_path
    ids = [model for model in ids if model == resident or installed_files(model, service).model_path != resident_path]
    listed = []
    for model in ids:
        tag = ollama_tag(model)
        others = [name for name, target in names.items() if target == model and name not in (model, tag)]
        aliases = dict.fromkeys([*([model] if tag != model else []), *([tag] if tag != model else []), *others])
        listed.append(InstalledModel(model, tag, tuple(aliases), model == resident))
    if start not in ids:  # loaded from files no registry lists: the generic names still name it
        return listed
    return [_with_generic(entry) if entry.id == start else entry for entry in listed]


def name_table(service: Serving) -> dict[str, str]:
    """Every name that picks an installed model, mapped to that model's id: ids, aliases, Ollama tags, and
    the generic names for the start model when it can be loaded again by name."""
    captioner = service.captioner
    cache_dir = None if captioner.cache_dir is None else os.fspath(captioner.cache_dir)
    registry = None if captioner.registry is None else os.fspath(captioner.registry)
    names = installed_models(registry=registry, cache_dir=cache_dir)
    start = service.resident.start_model
    if start in names.values():
        names.update({generic: start for generic in GENERIC_NAMES})
    return names


def installed_files(name: str, service: Serving) -> ModelFiles:
    """The files of an installed model, found without loading, downloading or building anything."""
    captioner = service.captioner
    if name == captioner.model_name:
        return captioner.files
    if name == service.resident.start_model:
        return service.resident.start_files
    return model_files(name, registry=captioner.registry, cache_dir=captioner.cache_dir, offline=True)


def started_on_synthetic(service: Serving) -> bool:
    """Whether the start model is a synthetic one (by name, or by its files' place in the synthetic cache)."""
    if service.resident.start_model.startswith(NAME_PREFIX):
        return True
    return Path(paths.cache_dir(), "synthetic") in service.resident.start_files.model_path.resolve().parents


def _with_generic(entry: InstalledModel) -> InstalledModel:
    aliases = dict.fromkeys([*entry.aliases, *GENERIC_NAMES])
    return InstalledModel(entry.id, entry.tag, tuple(aliases), entry.resident)


@functools.lru_cache(maxsize=8)
def registry_entry(model_name: str, registry: str | None) -> tuple[tuple[str, ...], str]:
    """(aliases, quantization) of a variant, read from its registry once; ``((), "unknown")`` for local or
    synthetic files that no registry lists."""
    try:
        spec = load_registry(registry).resolve(model_name)
    except LlavaEdgeError:
        return (), "unknown"
    return tuple(spec.aliases), spec.quant


def registry_path(service: Serving) -> str | None:
    registry = service.captioner.registry
    return None if registry is None else os.fspath(registry)


def resolve_model(name: str, service: Serving) -> str | None:
    """The id of the installed model ``name`` picks, the same on every API (Runware tasks included); None when
    it picks none. The generic names (``llava``, ``runware:150@2``, ...) always mean the start model, even
    after a swap and when it was loaded from files no registry lists; a model whose files are the resident's
    or the start model's is that one."""
    key, start, resident = name.strip().lower(), service.resident.start_model, service.captioner.model_name
    if key in _lowered(list(GENERIC_NAMES)):
        return start
    for model in (resident, start):
        if key in _lowered([model, *registry_entry(model, registry_path(service))[0]]):
            return model
    target = {known.lower(): model for known, model in name_table(service).items()}.get(key)
    if target is None:
        return None
    files = installed_files(target, service).model_path
    return {service.captioner.files.model_path: resident, service.resident.start_files.model_path: start}.get(
        files, target)


def task_model(name: str, service: Serving) -> str:
    """The installed model a Runware task's ``model`` names, resolved as the chat APIs resolve it.

    Raises:
        UnknownModelError: no installed model has that name (Runware's ``invalidModel``).
    """
    target = resolve_model(name, service)
    if target is None:
        raise UnknownModelError(f"Model {quoted(name)} is not on this machine; name runware:150@2 (the model this "
                                f"server started with, {service.resident.start_model}) or an installed model.")
    return target


def _lowered(names: list[str]) -> set[str]:
    return {name.lower() for name in names}


