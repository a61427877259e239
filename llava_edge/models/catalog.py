"""The model registry: loads and validates ``models.toml`` and resolves model names.

Only this module knows the TOML shape. Names resolve case-insensitively through variant ids
(``Q4_K_M``), aliases (``q4``, ``llava``) and Runware AIR ids (``runware:150@2``).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from llava_edge.errors import RegistryError, UnknownModelError

REGISTRY_ENV = "LLAVA_EDGE_MODELS"
_SHA256 = re.compile(r"^([0-9a-f]{64})?$")
_REVISION = re.compile(r"^[0-9a-f]{40}$")
_TOP_KEYS = ("default", "aliases", "templates", "mmproj", "models")
_HUB_FILE_KEYS = ("repo", "revision", "file", "size", "sha256")
_MODEL_KEYS = (*_HUB_FILE_KEYS, "mmproj", "template", "aliases")


@dataclass(frozen=True)
class HubFile:
    """One file on the Hugging Face hub, pinned to a commit."""

    repo: str
    revision: str
    file: str
    size: int
    """Size in bytes as the hub lists it (approximate); the exact size comes from the hub."""
    sha256: str
    """Published sha256, or "" when none is published (the hub's LFS hash is checked instead)."""


@dataclass(frozen=True)
class ModelSpec:
    """A quantization variant: the text-model GGUF, its mmproj and its prompt template."""

    id: str
    model: HubFile
    mmproj: HubFile
    template: str
    """Prompt template with ``{image}`` and ``{prompt}`` placeholders."""
    aliases: tuple[str, ...] = ()

    @property
    def quant(self) -> str:
        return self.id

    @property
    def size(self) -> int:
        """Bytes on disk for both files."""
        return self.model.size + self.mmproj.size


@dataclass(frozen=True)
class ModelFiles:
    """Local paths of a text-model GGUF and its mmproj, ready for the runtime."""

    model_path: Path
    mmproj_path: Path
    template: str
    name: str = "local"


@dataclass(frozen=True)
class Registry:
    """All variants of one registry file, with its default and alias table."""

    models: dict[str, ModelSpec]
    default: str
    aliases: dict[str, str]
    source: str

    def resolve(self, name: str | None) -> ModelSpec:
        """The variant named by an id, alias or AIR id; the default for ``None``.

        Raises:
            UnknownModelError: no variant has that name; the message lists the valid ones.
        """
        if name is None:
            return self.models[self.default]
        key = name.strip().lower()
        for spec in self.models.values():
            if key == spec.id.lower() or key in (alias.lower() for alias in spec.aliases):
                return spec
        target = {alias.lower(): model_id for alias, model_id in self.aliases.items()}.get(key)
        if target is not None:
            return self.models[target]
        raise UnknownModelError(
            f"Unknown model {name!r}. Known variants: {', '.join(self.models)}; aliases: "
            f"{', '.join(sorted(self.aliases))}. Or pass model_path= and mmproj_path= for local files."
        )


def builtin_registry_path() -> Path:
    """The built-in ``models.toml``: packaged inside ``llava_edge/models/`` in a wheel; at the top of the
    repository in a source checkout or an editable install."""
    packaged = Path(str(resources.files("llava_edge.models").joinpath("models.toml")))
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "models.toml"


def load_registry(path: str | os.PathLike[str] | None = None) -> Registry:
    """Load a registry: ``path``, else ``$LLAVA_EDGE_MODELS``, else the ``models.toml`` in the package.

    Raises:
        RegistryError: the file is missing or malformed; the message names the bad key.
    """
    chosen = path if path is not None else os.environ.get(REGISTRY_ENV) or None
    if chosen is None:
        source, text = "models.toml", builtin_registry_path().read_text(encoding="utf-8")
    else:
        source = str(chosen)
        try:
            text = Path(chosen).read_text(encoding="utf-8")
        except OSError as err:
            raise RegistryError(f"Cannot read model registry {source}: {err.strerror}.") from err
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise RegistryError(f"Model registry {source} is not valid TOML: {err}.") from err
    return _parse_registry(data, source)


def available_models(path: str | os.PathLike[str] | None = None) -> list[str]:
    """The variant ids of the registry, in file order."""
    return list(load_registry(path).models)


def _parse_registry(data: dict[str, Any], source: str) -> Registry:
    _check_keys(data, _TOP_KEYS, "", source)
    templates = _table(data, "templates", source)
    for name, text in templates.items():
        if not isinstance(text, str) or "{image}" not in text or "{prompt}" not in text:
            raise RegistryError(f"{source}: templates.{name} must be a string containing {{image}} and {{prompt}}.")
    projectors = {
        name: _hub_file(entry, f"mmproj.{name}", source)
        for name, entry in _table(data, "mmproj", source).items()
    }
    models = {
        model_id: _model_spec(model_id, entry, projectors, templates, source)
        for model_id, entry in _table(data, "models", source).items()
    }
    if not models:
        raise RegistryError(f"{source}: [models] lists no variant; add at least one [models.<id>] table.")
    default = data.get("default")
    if default not in models:
        raise RegistryError(f"{source}: default = {default!r} is not one of the [models] ids: {', '.join(models)}.")
    aliases = _table(data, "aliases", source)
    for alias, target in aliases.items():
        if target not in models:
            raise RegistryError(f"{source}: aliases.{alias!r} points to {target!r}, which is not a [models] id.")
    return Registry(models=models, default=default, aliases=dict(aliases), source=source)


def _table(data: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise RegistryError(f"{source}: {key} must be a table.")
    return value


def _model_spec(
    model_id: str, entry: Any, projectors: dict[str, HubFile], templates: dict[str, Any], source: str
) -> ModelSpec:
    where = f"models.{model_id}"
    hub_file = _hub_file(entry, where, source, _MODEL_KEYS)
    mmproj = entry.get("mmproj")
    if mmproj not in projectors:
        raise RegistryError(f"{source}: {where}.mmproj = {mmproj!r} names no [mmproj.<name>] table.")
    template = entry.get("template")
    if template not in templates:
        raise RegistryError(f"{source}: {where}.template = {template!r} names no entry of [templates].")
    aliases = entry.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(alias, str) for alias in aliases):
        raise RegistryError(f"{source}: {where}.aliases must be a list of strings.")
    return ModelSpec(model_id, hub_file, projectors[mmproj], templates[template], tuple(aliases))


def _hub_file(entry: Any, where: str, source: str, keys: tuple[str, ...] = _HUB_FILE_KEYS) -> HubFile:
    if not isinstance(entry, dict):
        raise RegistryError(f"{source}: {where} must be a table.")
    _check_keys(entry, keys, f"{where}.", source)
    for key in ("repo", "revision", "file"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise RegistryError(f"{source}: {where}.{key} is missing or not a non-empty string.")
    if not _REVISION.match(entry["revision"]):
        raise RegistryError(f"{source}: {where}.revision must be a 40-hex commit id, got {entry['revision']!r}.")
    if not isinstance(entry.get("size"), int) or entry["size"] <= 0:
        raise RegistryError(f"{source}: {where}.size must be a positive integer (bytes).")
    sha256 = entry.get("sha256", "")
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise RegistryError(f"{source}: {where}.sha256 must be 64 lowercase hex digits or \"\".")
    return HubFile(entry["repo"], entry["revision"], entry["file"], entry["size"], sha256)


def _check_keys(entry: dict[str, Any], known: tuple[str, ...], prefix: str, source: str) -> None:
    """Reject a key the registry does not know (a typo like ``sha265`` must not be silently ignored)."""
    for key in entry:
        if key not in known:
            raise RegistryError(f"{source}: {prefix}{key} is not a known key; expected one of: {', '.join(known)}.")
