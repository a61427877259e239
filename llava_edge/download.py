"""Model files from the Hugging Face hub, through ``huggingface_hub`` and its standard cache."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import LocalEntryNotFoundError

from .errors import DownloadError, ModelNotCachedError
from .registry import HubFile, ModelFiles, ModelSpec


def is_offline(offline: bool | None = None) -> bool:
    """An explicit choice wins; otherwise ``HF_HUB_OFFLINE`` decides (read at call time)."""
    if offline is not None:
        return offline
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def download_model(
    spec: ModelSpec, *, cache_dir: str | os.PathLike[str] | None = None, offline: bool | None = None,
    token: str | bool | None = None,
) -> ModelFiles:
    """The local files of a variant, downloaded first when they are not cached.

    Raises:
        ModelNotCachedError: offline and a file is not in the cache.
        DownloadError: the hub could not deliver a file.
    """
    model_path = _fetch(spec, spec.model, cache_dir, is_offline(offline), token)
    mmproj_path = _fetch(spec, spec.mmproj, cache_dir, is_offline(offline), token)
    return ModelFiles(model_path, mmproj_path, spec.template, spec.id)


def _fetch(spec: ModelSpec, hub_file: HubFile, cache_dir: object, offline: bool, token: str | bool | None) -> Path:
    try:
        return Path(
            hf_hub_download(
                hub_file.repo, hub_file.file, revision=hub_file.revision, cache_dir=cache_dir,
                local_files_only=offline, token=token,
            )
        )
    except LocalEntryNotFoundError as err:
        if offline:
            raise ModelNotCachedError(
                f"{hub_file.file} ({spec.id}) is not in the local cache and offline mode is on. "
                f"Run `llava-edge pull {spec.id}` while online."
            ) from err
        raise DownloadError(f"Could not reach the hub for {hub_file.repo}/{hub_file.file}: {err}. Retry when online.") from err
    except Exception as err:  # noqa: BLE001 (huggingface_hub raises many types; this is its boundary)
        raise DownloadError(f"Downloading {hub_file.repo}/{hub_file.file} failed: {err}") from err
