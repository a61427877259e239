"""``huggingface_hub`` and ``httpx2`` failures of a download, turned into ``DownloadError`` messages that say
what happened and which command to run next."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx2
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalTokenNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from llava_edge.errors import DownloadError
from llava_edge.models.catalog import HubFile


@contextlib.contextmanager
def hub_errors(variant: str, hub_file: HubFile, hint: str, endpoint: str, part: Path | None = None,
               size: int | None = None) -> Iterator[None]:
    """Translate failures while asking about or fetching ``hub_file`` of ``variant``; ``hint`` is the pull
    command to suggest; ``part`` and ``size`` (during a transfer) say how much is kept for resuming."""
    name = f"{hub_file.repo}/{hub_file.file}@{hub_file.revision[:12]}"
    try:
        yield
    except RemoteEntryNotFoundError as err:
        raise DownloadError(f"The hub has no file {name} (404 Entry Not Found). Check the `file` and "
                            f"`revision` of variant {variant} in the model registry.") from err
    except RevisionNotFoundError as err:
        raise DownloadError(f"The hub has no revision {hub_file.revision} of {hub_file.repo}. Check the "
                            f"`revision` of variant {variant} in the model registry.") from err
    except GatedRepoError as err:
        raise DownloadError(f"{hub_file.repo} is gated: accept its terms on the hub, then pass a token "
                            f"(HF_TOKEN, `hf auth login` or --token) and run `{hint}`.") from err
    except RepositoryNotFoundError as err:
        raise DownloadError(f"Repository {hub_file.repo} was not found, or it is private and no valid token "
                            f"was sent. Set HF_TOKEN, run `hf auth login` or pass --token.") from err
    except LocalTokenNotFoundError as err:
        raise DownloadError("A token was asked for but none is stored: run `hf auth login`, set HF_TOKEN "
                            "or pass the token itself.") from err
    except (OfflineModeIsEnabled, HfHubHTTPError) as err:
        raise DownloadError(f"Downloading {name} failed: {err} Run `{hint}` to try again.") from err
    except httpx2.TransportError as err:
        raise DownloadError(_connection_lost(name, err, hint, endpoint, part, size)) from err


def _connection_lost(name: str, err: Exception, hint: str, endpoint: str, part: Path | None,
                     size: int | None) -> str:
    kept = part.stat().st_size if part is not None and part.exists() else 0
    if part is None or not kept:
        return (f"Cannot reach {endpoint} for {name}: {err or type(err).__name__}. Check the connection "
                f"and run `{hint}` again, or set HF_HUB_OFFLINE=1 to use only downloaded models.")
    total = f" of {size}" if size else ""
    return (f"The connection dropped while downloading {name}: {err or type(err).__name__}. {kept}{total} bytes "
            f"are kept in {part}; run `{hint}` again to resume from there.")
