"""Model files from the Hugging Face hub: pinned, resumable, verified and offline-first.

``huggingface_hub`` does what it does well: the file URL (``hf_hub_url``), the file metadata
(``get_hf_file_metadata``: commit, LFS sha256, exact size), tokens and headers, the cache layout
and offline lookups (``try_to_load_from_cache``), the file lock and the progress bar. What
``hf_hub_download`` 2.4.0 does not do, this module adds (see /work/shared/hub-client.md):

* resume across processes: bytes go to a persistent ``<final>.part`` (``resumable.py``);
* verification: size and sha256 (the registry's, else the hub's LFS hash) are checked *before*
  the file is renamed into place, so a bad file is never where a good one is expected; a file
  already in place is verified where it lies and never moved or rewritten (another process may be
  loading it), and a wrong one is replaced only by an atomic rename;
* a disk-space check for the whole variant before the first byte is fetched;
* errors that say what happened and which command to run.

Files land in the standard hub cache (``models--org--name/{blobs,snapshots,refs}``) so that
``hf_hub_download(..., local_files_only=True)`` finds them too, or in a directory the user names.
Environment variables (``HF_ENDPOINT``, ``HF_HUB_CACHE``, ``HF_HOME``, ``HF_HUB_OFFLINE``) are read
at call time; ``huggingface_hub`` freezes them at import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
from huggingface_hub.utils import WeakFileLock, build_hf_headers  # type: ignore[attr-defined]  # lazy exports

from llava_edge.errors import ChecksumMismatchError, DownloadError, InsufficientDiskError, ModelNotCachedError
from llava_edge.models.catalog import HubFile, ModelFiles, ModelSpec, load_registry
from llava_edge.models.hub_errors import hub_errors
from llava_edge.models.resumable import PartFile, fetch_part, file_sha256
from llava_edge.models.selection import resolve_variant

PathArg = str | os.PathLike[str]
DEFAULT_ENDPOINT = "https://huggingface.co"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """Where a variant's files go: the hub cache (``cache_dir``) or a plain directory (``local_dir``)."""

    cache_dir: Path
    local_dir: Path | None = None

    def cached(self, hub_file: HubFile) -> Path | None:
        """The local file for ``hub_file`` if it is already there; never touches the network."""
        if self.local_dir is not None:
            path = self.local_dir / hub_file.file
            return path if path.is_file() else None
        found = try_to_load_from_cache(hub_file.repo, hub_file.file, cache_dir=self.cache_dir,
                                       revision=hub_file.revision)
        return Path(found) if isinstance(found, str) else None

    def storage(self, hub_file: HubFile) -> Path:
        """The repo's folder in the hub cache: ``models--org--name``."""
        return self.cache_dir / ("models--" + hub_file.repo.replace("/", "--"))


@dataclass(frozen=True)
class FileProgress:
    """How far the download of one file has come (what ``download_model`` tells ``on_progress``)."""

    file: str
    digest: str
    """``sha256:<hex>`` when the sha256 is known, else the hub's ETag."""
    total: int | None
    completed: int
    """Bytes on disk so far, resumed ones included."""


ProgressListener = Callable[[FileProgress], None]


@dataclass(frozen=True)
class _Fetch:
    """One file to download, with what the hub said about it."""

    spec: ModelSpec
    hub_file: HubFile
    url: str
    headers: dict[str, str]
    commit: str
    etag: str
    size: int | None
    sha256: str
    final: Path

    @property
    def part(self) -> Path:
        return self.final.with_name(self.final.name + ".part")


def hub_cache_dir(cache_dir: PathArg | None = None) -> Path:
    """``cache_dir``, else ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def hub_endpoint() -> str:
    """``$HF_ENDPOINT`` (a mirror, or a test hub), else https://huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def is_offline(offline: bool | None = None) -> bool:
    """An explicit choice wins; otherwise ``HF_HUB_OFFLINE`` decides (read at call time)."""
    if offline is not None:
        return offline
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def is_downloaded(spec: ModelSpec, target: Target) -> bool:
    """Whether both files of ``spec`` are in ``target`` (no network)."""
    return all(target.cached(hub_file) is not None for hub_file in (spec.model, spec.mmproj))


def download_model(
    variant: str | ModelSpec | None = None,
    *,
    registry: PathArg | None = None,
    cache_dir: PathArg | None = None,
    local_dir: PathArg | None = None,
    offline: bool | None = None,
    token: str | bool | None = None,
    progress: bool | None = None,
    verify_cached: bool = False,
    on_progress: ProgressListener | None = None,
) -> ModelFiles:
    """The local files of a variant, downloaded, verified and resumed as needed.

    Args:
        variant: a variant id, alias, Runware AIR id, ``"auto"`` (by memory) or a ``ModelSpec``;
            ``None`` is the registry's default.
        registry: a models.toml to use instead of ``$LLAVA_EDGE_MODELS`` or the built-in one.
        cache_dir: the hub cache (default ``$HF_HUB_CACHE`` / ``$HF_HOME/hub``).
        local_dir: put the files in this directory instead of the hub cache.
        offline: use only local files (default: ``$HF_HUB_OFFLINE``); no request is sent.
        token: passed to ``huggingface_hub`` unchanged (``None`` reads ``$HF_TOKEN`` or the login).
        progress: draw progress bars; ``None`` draws them only when stdout and stderr are terminals.
        verify_cached: re-hash files already present and replace any that do not match.
        on_progress: called from this thread as each missing file's bytes arrive (``FileProgress``).

    Returns:
        The model and mmproj paths with the variant's prompt template.

    Raises:
        ModelNotCachedError: offline and a file is missing; names the ``llava-edge pull`` command.
        InsufficientDiskError: the files do not fit on the target disk; nothing was fetched.
        ChecksumMismatchError: a file's size or sha256 is wrong; it was deleted.
        DownloadError: the hub could not deliver a file (missing, private, connection lost).
        UnknownModelError, InsufficientMemoryError: ``variant`` names no variant / nothing fits.
    """
    spec = variant if isinstance(variant, ModelSpec) else resolve_variant(variant, load_registry(registry))
    target = Target(hub_cache_dir(cache_dir), Path(local_dir).expanduser() if local_dir is not None else None)
    hint = _pull_command(spec, registry, local_dir)
    files = (spec.model, spec.mmproj)
    if verify_cached:
        for hub_file in files:
            _drop_if_corrupt(hub_file, target)
    if is_offline(offline):
        paths = [_cached_or_raise(spec, hub_file, target, hint) for hub_file in files]
    else:
        paths = _fetch_all(spec, files, target, token, _show_progress(progress), hint, on_progress)
    return ModelFiles(paths[0], paths[1], spec.template, spec.id)


def _fetch_all(spec: ModelSpec, files: tuple[HubFile, ...], target: Target, token: str | bool | None,
               progress: bool, hint: str, on_progress: ProgressListener | None = None) -> list[Path]:
    """Ask the hub about every missing file, check the disk once, then transfer one by one."""
    cached = {hub_file: target.cached(hub_file) for hub_file in files}
    plans = [_plan(spec, hub_file, target, token, hint) for hub_file in files if cached[hub_file] is None]
    _check_disk(spec, plans)
    fetched = {plan.hub_file: _transfer(plan, target, progress, hint, on_progress) for plan in plans}
    return [cached[hub_file] or fetched[hub_file] for hub_file in files]


def _plan(spec: ModelSpec, hub_file: HubFile, target: Target, token: str | bool | None, hint: str) -> _Fetch:
    endpoint = hub_endpoint()
    url = hf_hub_url(hub_file.repo, hub_file.file, revision=hub_file.revision, endpoint=endpoint)
    with hub_errors(spec.id, hub_file, hint, hub_endpoint()):
        meta = get_hf_file_metadata(url, token=token, endpoint=endpoint)
        headers = build_hf_headers(token=token)
    if not meta.commit_hash or not meta.etag:
        raise DownloadError(f"{endpoint} answered for {hub_file.file} without X-Repo-Commit or ETag: it does not "
                            f"look like a Hugging Face hub. Check HF_ENDPOINT.")
    if _origin(meta.location) != _origin(url):
        headers.pop("authorization", None)  # a signed CDN URL: the token stays with the hub
    hub_sha = meta.etag if _SHA256.match(meta.etag) else ""
    if hub_file.sha256 and hub_sha and hub_sha != hub_file.sha256:
        raise ChecksumMismatchError(
            f"The hub serves {hub_file.repo}/{hub_file.file} with sha256 {hub_sha}, but the registry pins "
            f"{hub_file.sha256}. Nothing was downloaded. Fix the registry entry (repo, revision, sha256)."
        )
    if target.local_dir is not None:
        final = target.local_dir / hub_file.file
    else:
        final = target.storage(hub_file) / "blobs" / meta.etag
    return _Fetch(spec, hub_file, meta.location, headers, meta.commit_hash, meta.etag, meta.size,
                  hub_file.sha256 or hub_sha, final)


def _check_disk(spec: ModelSpec, plans: list[_Fetch]) -> None:
    if not plans:
        return
    needed = sum(_bytes_to_fetch(plan) for plan in plans)
    where = _existing_ancestor(plans[0].final.parent)
    free = shutil.disk_usage(where).free
    if free < needed:
        raise InsufficientDiskError(
            f"Not enough disk space for {spec.id}: {needed / 1e9:.2f} GB to download, {free / 1e9:.2f} GB free "
            f"on {where}. Nothing was downloaded. Free some space, or download elsewhere with "
            f"`llava-edge pull {spec.id} --dir <directory>` (or set HF_HUB_CACHE)."
        )


def _bytes_to_fetch(plan: _Fetch) -> int:
    expected = plan.size or plan.hub_file.size
    if _size_of(plan.final) == expected:  # placed already: verified by _transfer, not fetched again
        return 0
    return max(expected - _size_of(plan.part), 0)


def _transfer(plan: _Fetch, target: Target, progress: bool, hint: str,
              on_progress: ProgressListener | None = None) -> Path:
    plan.final.parent.mkdir(parents=True, exist_ok=True)
    digest = f"sha256:{plan.sha256}" if plan.sha256 else plan.etag

    def on_bytes(completed: int) -> None:
        if on_progress is not None:
            on_progress(FileProgress(plan.hub_file.file, digest, plan.size, completed))

    with WeakFileLock(_lock_path(plan, target)):
        if not _placed_and_verified(plan):
            with hub_errors(plan.spec.id, plan.hub_file, hint, hub_endpoint(), plan.part, plan.size), \
                    _disk_errors(plan, hint):
                part = fetch_part(plan.url, plan.part, headers=plan.headers, total=plan.size,
                                  label=plan.hub_file.file, progress=progress, on_bytes=on_bytes)
            _verify(plan, part, hint)
            os.replace(plan.part, plan.final)  # atomic: a reader of a wrong old file keeps its own inode
    if target.local_dir is not None:
        return plan.final
    return _link_snapshot(plan, target)


def _placed_and_verified(plan: _Fetch) -> bool:
    """Whether ``plan.final`` already holds the whole file (a blob placed by another process, or by a
    run that died before linking the snapshot). It is hashed where it lies and never moved or rewritten:
    another process may be loading it. A wrong file stays until a verified download replaces it."""
    try:
        size = plan.final.stat().st_size
    except FileNotFoundError:
        return False
    if (plan.size is None or size == plan.size) and (not plan.sha256 or file_sha256(plan.final) == plan.sha256):
        return True
    logger.warning("%s is incomplete or corrupt; downloading it again to replace it.", plan.final)
    return False


@contextlib.contextmanager
def _disk_errors(plan: _Fetch, hint: str) -> Iterator[None]:
    """A write that fails (disk full, file too large, read-only) becomes a DownloadError; the bytes
    already written stay in the .part file, so the next call resumes from them."""
    try:
        yield
    except OSError as err:
        kept = plan.part.stat().st_size if plan.part.exists() else 0
        raise DownloadError(
            f"Writing {plan.part} failed: {err.strerror or err}. {kept} bytes are kept there; nothing was "
            f"installed. Free disk space, then run `{hint}` to resume."
        ) from err


def _verify(plan: _Fetch, part: PartFile, hint: str) -> None:
    on_disk = plan.part.stat().st_size if plan.part.exists() else -1
    size_ok = on_disk == part.size and (plan.size is None or part.size == plan.size)
    sha = part.digest.hexdigest()
    if size_ok and (not plan.sha256 or sha == plan.sha256):
        if not plan.sha256:
            logger.warning("%s has no published sha256; only its size was checked.", plan.hub_file.file)
        return
    plan.part.unlink(missing_ok=True)
    raise ChecksumMismatchError(
        f"{plan.hub_file.file} from {plan.hub_file.repo} is corrupt: got {part.size} bytes with sha256 {sha}, "
        f"expected {plan.size} bytes with sha256 {plan.sha256}. The file was deleted and nothing was installed. "
        f"Run `{hint}` to download it again; if it fails again, the mirror or the registry entry is wrong."
    )


def _link_snapshot(plan: _Fetch, target: Target) -> Path:
    """Point ``snapshots/<commit>/<file>`` at the blob (the hub cache layout) and record the ref."""
    storage = target.storage(plan.hub_file)
    pointer = storage / "snapshots" / plan.commit / plan.hub_file.file
    pointer.parent.mkdir(parents=True, exist_ok=True)
    relative = os.path.relpath(plan.final, pointer.parent)
    if not (pointer.is_symlink() and os.readlink(pointer) == relative):  # else linked already: a path in use
        pointer.unlink(missing_ok=True)
        try:
            pointer.symlink_to(relative)
        except FileExistsError:  # another process linked it in between
            pass
        except OSError:  # no symlinks here (Windows without developer mode): the blob moves instead
            os.replace(plan.final, pointer)
    if plan.hub_file.revision != plan.commit:
        ref = storage / "refs" / plan.hub_file.revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(plan.commit)
    return pointer


def _drop_if_corrupt(hub_file: HubFile, target: Target) -> None:
    """Delete a present file whose sha256 differs from the registry's (or from its blob name)."""
    path = target.cached(hub_file)
    if path is None:
        return
    blob = path.resolve()
    expected = hub_file.sha256 or (blob.name if _SHA256.match(blob.name) else "")
    if expected and file_sha256(blob) != expected:
        logger.warning("%s in %s does not match its sha256; deleting it to download again.", hub_file.file, path)
        path.unlink()
        blob.unlink(missing_ok=True)


def _cached_or_raise(spec: ModelSpec, hub_file: HubFile, target: Target, hint: str) -> Path:
    found = target.cached(hub_file)
    if found is None:
        where = target.local_dir or target.cache_dir
        raise ModelNotCachedError(
            f"{hub_file.file} ({spec.id}) is not in {where} and offline mode is on. "
            f"Run `{hint}` while online (or unset HF_HUB_OFFLINE)."
        )
    return found


def _pull_command(spec: ModelSpec, registry: PathArg | None, local_dir: PathArg | None) -> str:
    command = f"llava-edge pull {spec.id}"
    if registry is not None:
        command += f" --registry {registry}"
    if local_dir is not None:
        command += f" --dir {local_dir}"
    return command


def _show_progress(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    return sys.stdout.isatty() and sys.stderr.isatty()


def _lock_path(plan: _Fetch, target: Target) -> Path:
    """The lock ``huggingface_hub`` itself takes for this file, so the two never write it at once."""
    if target.local_dir is not None:
        return target.local_dir / ".cache" / "huggingface" / "download" / f"{plan.hub_file.file}.lock"
    return target.cache_dir / ".locks" / target.storage(plan.hub_file).name / f"{plan.etag}.lock"


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def _size_of(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
