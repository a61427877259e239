"""Writing files so that a crash, a kill or a full disk leaves the old file or the new one, never a mix.

A replacement is written to a hidden temporary file in the same folder (``.photo.jpg.<random>.llava-edge.tmp``),
given the original's permission bits, owner (where allowed), extended attributes (Finder tags, labels and
comments on macOS), birth time (macOS) and, on request, its access and modification times, fsynced, and
renamed over the original; then the folder is fsynced. A kill before the rename leaves the original untouched
and at most that temporary file. Appends are one ``write`` each, fsynced. Read-modify-write cycles on shared
files (``metadata.jsonl``, kohya JSON, sidecars) hold an exclusive lock on the folder (a hidden
``.llava-edge.lock`` there while it is held), so two writers on one machine do not lose each other's entries.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from llava_edge.host.files import acquire_lock, carry_birth_time, copy_xattrs

TEMP_SUFFIX = ".llava-edge.tmp"
FOLDER_LOCK = ".llava-edge.lock"
_NAME_ROOM = 200
"""Characters of the target's name kept in its temporary file's name (file names are at most 255 bytes)."""


class FileChangedError(OSError):
    """The file changed on disk between being read and being replaced (another program wrote it)."""


def is_read_only(path: Path, found: os.stat_result) -> bool:
    """No write permission bit at all (what ``chmod a-w`` does, which even root should honour), or the
    current user may not write the file."""
    return not found.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(path, os.W_OK)


def replace_file(
    path: Path, data: bytes, *, original: os.stat_result | None = None, keep_times: bool = False
) -> None:
    """Atomically make ``path`` hold ``data``.

    ``original``: the stat of the file as it was read; its mode, owner and extended attributes are carried
    over, and the write is refused (``FileChangedError``) if the file changed since. ``keep_times``: give
    the new file the original's access and modification times.

    Raises:
        FileChangedError: ``path`` changed since ``original`` was taken; nothing was replaced.
        OSError: the temporary file could not be written (disk full, read-only folder); nothing was replaced.
    """
    fd, temporary = _create_temporary(path)
    try:
        try:
            _write_all(fd, data)
            if original is not None:
                copy_xattrs(path, temporary)
                carry_birth_time(fd, original)
                _carry_over(fd, original, keep_times=keep_times)
            os.fsync(fd)
        finally:
            os.close(fd)
        if original is not None:
            _check_unchanged(path, original)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_directory(path.parent)


def append_bytes(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` (created if missing) with a single ``write``, then fsync."""
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_directory(path.parent)


def truncate(path: Path, size: int) -> None:
    """Cut ``path`` to ``size`` bytes (the remains of a killed append), durably."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (its ``.llava-edge.lock``) while the block runs; waits for other
    holders. Where no lock file can be made there (a read-only folder), the block runs unlocked."""
    try:
        release = acquire_lock(folder / FOLDER_LOCK)
    except OSError:
        release = None
    try:
        yield
    finally:
        if release is not None:
            release()


def fsync_directory(folder: Path) -> None:
    """Make a rename or a new file's directory entry durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new hidden file beside ``path``, created with mode 0666 less the umask, like any new file."""
    for _ in range(100):
        name = f".{path.name[:_NAME_ROOM]}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        temporary = os.path.join(path.parent, name)
        try:
            return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temporary
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path.parent))  # pragma: no cover


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _carry_over(fd: int, original: os.stat_result, *, keep_times: bool) -> None:
    os.fchmod(fd, stat.S_IMODE(original.st_mode))
    if hasattr(os, "fchown"):
        with contextlib.suppress(OSError):  # only root (or the owner, for the group) may
            os.fchown(fd, original.st_uid, original.st_gid)
    if keep_times:
        os.utime(fd, ns=(original.st_atime_ns, original.st_mtime_ns))


def _check_unchanged(path: Path, original: os.stat_result) -> None:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        raise FileChangedError(errno.ENOENT, "the file was removed while it was being written", str(path)) from None
    if (now.st_ino, now.st_size, now.st_mtime_ns) != (original.st_ino, original.st_size, original.st_mtime_ns):
        raise FileChangedError(errno.EBUSY, "the file changed while it was being written", str(path))
