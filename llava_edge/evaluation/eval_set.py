"""The eval set: images with one reference caption each. The package ships twenty (``eval_set/``, public
domain or CC0, listed with their sources in ``eval_set/LICENSES.md``); any folder with a ``captions.toml``
of the same shape can replace it::

    [images."coffee.jpg"]
    caption = "A cup of espresso on a red saucer ..."
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from llava_edge.errors import EvaluationError

CAPTIONS_FILE = "captions.toml"


@dataclass(frozen=True)
class EvalItem:
    """One image of the set and its reference caption."""

    name: str
    path: Path
    caption: str


def builtin_set_dir() -> Path:
    """The folder of the eval set shipped with the package."""
    return Path(str(resources.files("llava_edge.evaluation") / "eval_set"))


def load_eval_set(directory: str | Path | None = None, *, limit: int | None = None) -> list[EvalItem]:
    """The images of a set with their captions, in file-name order.

    Args:
        directory: a folder with ``captions.toml`` (default: the built-in set).
        limit: keep only the first ``limit`` images.

    Raises:
        EvaluationError: no captions file, a malformed entry, or a listed image that is missing.
    """
    folder = Path(directory) if directory is not None else builtin_set_dir()
    listing = folder / CAPTIONS_FILE
    if not listing.is_file():
        raise EvaluationError(f"No {CAPTIONS_FILE} in {folder}: give a folder of images with one, "
                              "shaped like llava_edge/evaluation/eval_set/captions.toml.")
    try:
        images = tomllib.loads(listing.read_text("utf-8")).get("images", {})
    except tomllib.TOMLDecodeError as err:
        raise EvaluationError(f"{listing} is not valid TOML: {err}. Fix the file.") from err
    items = [_item(folder, name, entry, listing) for name, entry in sorted(images.items())]
    if not items:
        raise EvaluationError(f"{listing} lists no images; add [images.\"<file>\"] tables with a caption.")
    return items[:limit]


def _item(folder: Path, name: str, entry: object, listing: Path) -> EvalItem:
    caption = entry.get("caption") if isinstance(entry, dict) else None
    if not isinstance(caption, str) or not caption.strip():
        raise EvaluationError(f"{listing}: images.\"{name}\" needs a non-empty caption = \"...\".")
    path = folder / name
    if not path.is_file():
        raise EvaluationError(f"{listing} lists {name}, which is not in {folder}. Add the image or remove its entry.")
    return EvalItem(name, path, caption.strip())
