"""Resumable HTTP transfer of one file into a ``.part`` file that outlives the process.

``huggingface_hub`` 2.4.0 resumes a cut download only inside the same call, in 10 MiB steps, and
starts from zero after the process dies (its temp files get a new random name on every attempt).
Model files are 4-5 GB and edge devices lose power, so this module keeps what arrived in a
``.part`` file written as the bytes come in, asks for the rest with ``Range: bytes=<size>-`` on
the next attempt or the next run, and hashes the content while it streams so a 5 GB file is
read only once. The request goes through ``huggingface_hub``'s own HTTP session (its proxies,
offline guard and error mapping) and its tqdm progress bar.

This module only moves bytes: it lets ``httpx2`` and ``huggingface_hub`` errors through for
``download.py`` to translate, and it neither verifies nor places the finished file.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import httpx2
from huggingface_hub import constants, get_session, hf_raise_for_status
from huggingface_hub.utils.tqdm import tqdm

MAX_ATTEMPTS_WITHOUT_PROGRESS = 3
"""A transfer gives up after this many attempts in a row that added no byte to the part file."""

RETRY_DELAY_S = 1.0
"""Pause before asking again after a dropped connection."""

_HASH_BLOCK = 8 * 2**20
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-\d+/(\d+|\*)$")


class PartFile:
    """A partial download on disk, with the running sha256 of the bytes it holds."""

    def __init__(self, path: Path, total: int | None) -> None:
        self.path = path
        if total is not None and path.exists() and path.stat().st_size > total:
            path.unlink()  # longer than the file itself: not a prefix of it
        self.digest: Any
        self.digest, self.size = _hash_file(path) if path.exists() else (hashlib.sha256(), 0)

    def restart(self) -> None:
        """Forget the content (the server ignored the Range request and sends the whole file)."""
        self.path.write_bytes(b"")
        self.digest = hashlib.sha256()
        self.size = 0

    def append(self, chunk: bytes, sink: BinaryIO) -> None:
        """Write all of ``chunk``: an unbuffered write may take only part of it (a disk filling up takes
        what fits, then fails), and only bytes that are on disk may count."""
        view = memoryview(chunk)
        while view:
            written = sink.write(view) or 0
            self.digest.update(view[:written])
            self.size += written
            view = view[written:]


def fetch_part(
    url: str, part_path: Path, *, headers: dict[str, str], total: int | None, label: str, progress: bool,
    on_bytes: Callable[[int], None] | None = None,
) -> PartFile:
    """Bring ``part_path`` up to the whole body of ``url``, resuming from what it already holds; ``on_bytes``
    hears the bytes on disk, first what was kept, then after every chunk.

    Retries a dropped connection at once while each attempt adds bytes; gives up after
    ``MAX_ATTEMPTS_WITHOUT_PROGRESS`` attempts in a row that add none, keeping the part file.

    Returns:
        The part file, its size and its sha256 (of everything on disk, old and new bytes).

    Raises:
        httpx2.TransportError: the connection failed and stopped making progress.
        huggingface_hub.errors.HfHubHTTPError: the server answered with an error status.
    """
    part = PartFile(part_path, total)
    part_path.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(  # type: ignore[no-untyped-call]
        total=total, initial=part.size, desc=label, unit="B", unit_scale=True, unit_divisor=1024,
        disable=not progress, name="huggingface_hub.http_get",  # obeys HF_HUB_DISABLE_PROGRESS_BARS
    )
    report = on_bytes or (lambda size: None)
    report(part.size)
    with bar:
        failures = 0
        while total is None or part.size < total:
            before = part.size
            try:
                _append_rest(url, part, headers, bar, report)
                break
            except httpx2.TransportError:
                failures = 0 if part.size > before else failures + 1
                if failures >= MAX_ATTEMPTS_WITHOUT_PROGRESS:
                    raise
                time.sleep(RETRY_DELAY_S)
    return part


def _append_rest(url: str, part: PartFile, headers: dict[str, str], bar: tqdm,
                 report: Callable[[int], None]) -> None:
    request_headers = {**headers, "Range": f"bytes={part.size}-"} if part.size else headers
    timeout = httpx2.Timeout(constants.HF_HUB_DOWNLOAD_TIMEOUT)
    with get_session().stream("GET", url, headers=request_headers, timeout=timeout) as response:
        hf_raise_for_status(response)
        if response.status_code != 206 or _range_start(response) != part.size:
            bar.update(-part.size)
            part.restart()
        with part.path.open("ab", buffering=0) as sink:  # unbuffered: what arrived is on disk
            for chunk in response.iter_bytes():
                part.append(chunk, sink)
                bar.update(len(chunk))
                report(part.size)


def _range_start(response: httpx2.Response) -> int | None:
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def file_sha256(path: Path) -> str:
    """The sha256 of a file on disk."""
    digest, _ = _hash_file(path)
    return str(digest.hexdigest())


def _hash_file(path: Path) -> tuple[Any, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as held:
        while block := held.read(_HASH_BLOCK):
            digest.update(block)
            size += len(block)
    return digest, size
