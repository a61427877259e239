"""Writing files so that a crash, a kill or a full disk leaves the old file or the new one, never a mix.

A replacement is written to a hidden temporary file in the same folder (``.photo.jpg.<random>.llava-edge.tmp``),
given the original's permission bits, owner (where allowed), extended attributes (Finder tags, labels and
comments on macOS), birth time (macOS) and, on request, its access and modification times, fsynced, and
renamed over the original; then the folder is fsynced. A kill before the rename leaves the original untouched
and at most that temporary file. Appends are one ``write`` each, fsynced. Read-modify-write cycles on shared
files (``metadata.jsonl``, kohya JSON, sidecars) hold an exclusive lock on the folder (a hidden
``.llava-edge.lock`` there while it is held), so two writers on one machine do not lose each other's entries.

No output or dataset file is read or written through a symbolic link (``open_own``, ``read_own``, ``stat_own``):
a link planted in a dataset folder (``metadata.jsonl -> ~/.bashrc``) could otherwise make an append, a
truncation or a merge reach a file outside it. ``O_NOFOLLOW`` refuses a link at the last component in the same
call that opens the file, so there is no window between a check and the open; a replacement is a rename,
which replaces a link itself, never the file it points to.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from llava_edge.errors import OutputFileError
from llava_edge.host.files import acquire_lock, carry_birth_time, copy_xattrs

TEMP_SUFFIX = ".llava-edge.tmp"
FOLDER_LOCK = ".llava-edge.lock"
_NAME_ROOM = 200
"""Characters of the target's name kept in its temporary file's name (file names are at most 255 bytes)."""
_OWN = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
"""Flags of every open of an output file: no link at the last component, and no wait on a FIFO planted there
(``O_NONBLOCK`` changes nothing for a regular file)."""


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


def open_own(path: Path, flags: int, *, parameter: str = "out", mode: int = 0o666) -> int:
    """``os.open(path, flags, mode)`` (new files: ``mode`` less the umask) for a file that must be the folder's own: a
    symbolic link at its last component is refused, and so is anything but a regular file (a FIFO, a device).
    ``parameter`` names the option that chose the file, for the error.

    Raises:
        OutputFileError: ``path`` is a link or not a regular file; nothing was opened.
        OSError: as ``os.open`` (``FileNotFoundError`` without ``os.O_CREAT``).
    """
    try:
        fd = os.open(path, flags | _OWN, mode)
    except OSError as err:
        if os.path.islink(path):
            raise OutputFileError(_link_message(path), parameter=parameter) from err
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OutputFileError(f"{path} is not a regular file; move it aside or choose another file name.",
                                  parameter=parameter)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_own(path: Path, *, parameter: str = "out") -> tuple[os.stat_result, bytes] | None:
    """The stat and bytes of the file at ``path`` (``open_own``), or ``None`` when there is none.

    Raises:
        OutputFileError: ``path`` is a link or not a regular file.
        OSError: it cannot be read.
    """
    try:
        fd = open_own(path, os.O_RDONLY, parameter=parameter)
    except FileNotFoundError:
        return None
    try:
        return os.fstat(fd), read_all(fd)
    finally:
        os.close(fd)


def read_all(fd: int) -> bytes:
    """Everything in the open file ``fd``, from its start (its offset is left as it was)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := os.pread(fd, 1 << 20, size):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def stat_own(path: Path, *, parameter: str = "out") -> os.stat_result | None:
    """The stat of the file at ``path`` itself (a link is not followed), or ``None`` when there is none.

    Raises:
        OutputFileError: ``path`` is a symbolic link.
    """
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(found.st_mode):
        raise OutputFileError(_link_message(path), parameter=parameter)
    return found


def append_bytes(path: Path, data: bytes, *, parameter: str = "out") -> None:
    """Append ``data`` to ``path`` (created if missing) with a single ``write``, then fsync.

    Raises:
        OutputFileError: ``path`` is a link or not a regular file (``open_own``).
    """
    created = not os.path.lexists(path)
    fd = open_own(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, parameter=parameter)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_directory(path.parent)


def truncate(path: Path, size: int, *, parameter: str = "out") -> None:
    """Cut ``path`` to ``size`` bytes (the remains of a killed append), durably.

    Raises:
        OutputFileError: ``path`` is a link or not a regular file (``open_own``).
    """
    fd = open_own(path, os.O_WRONLY, parameter=parameter)
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


def _link_message(path: Path) -> str:
    return (f"{path} is a symbolic link, and llava-edge never writes its output and dataset files through a link "
            "(it could lead outside the folder). Replace the link with the file itself, or name the real file.")


def _check_unchanged(path: Path, original: os.stat_result) -> None:
    try:
        now = os.lstat(path)  # a link put in its place is a change
    except FileNotFoundError:
        raise FileChangedError(errno.ENOENT, "the file was removed while it was being written", str(path)) from None
    if (now.st_ino, now.st_size, now.st_mtime_ns) != (original.st_ino, original.st_size, original.st_mtime_ns):
        raise FileChangedError(errno.EBUSY, "the file changed while it was being written", str(path))
