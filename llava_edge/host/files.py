"""Files: exclusive locks, and the extended attributes and birth time a rewritten file keeps.

Locks are ``filelock`` lock files (``flock`` on Linux and macOS): a lock file is created beside what it
guards and removed by its holder on release; a killed holder's lock ends with the process (its empty file
stays until the next holder releases it).

A file replaced by a rename is a new file, so what the old one carried is copied onto the new one before
the rename: on Linux its extended attributes (``user.*`` notes, SELinux labels, what the caller may set)
through ``os.listxattr``/``os.setxattr``; on macOS every extended attribute (Finder tags
``com.apple.metadata:_kMDItemUserTags``, colour labels in ``com.apple.FinderInfo``, Finder comments,
quarantine) through ``copyfile(3)`` with ``COPYFILE_XATTR``, and the birth time, which HFS+ and APFS move
back when a modification time before it is set. All of it is best effort: a file system that refuses an
attribute loses that attribute, never the write.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import filelock

COPYFILE_XATTR = 1 << 2
"""``copyfile.h``: copy the extended attributes only."""
CopyFile = Callable[[bytes, bytes, None, int], int]
"""``copyfile(from, to, state, flags)`` of macOS's libSystem."""


def acquire_lock(lock_path: Path, *, wait: bool = True) -> Callable[[], None] | None:
    """Take the exclusive lock ``lock_path``; returns the function that releases it (and removes the lock
    file), or ``None`` when ``wait`` is False and another process holds it.

    Raises:
        OSError: the lock file cannot be made or locked (a read-only folder, a file system without locks).
    """
    lock = filelock.FileLock(str(lock_path), timeout=-1 if wait else 0, thread_local=False, fallback_to_soft=False)
    try:
        lock.acquire()
    except filelock.Timeout:
        return None
    except NotImplementedError as err:  # a file system without flock
        raise OSError(str(err)) from err

    def release() -> None:
        # Removed while still held: a waiter that locks the old file sees it unlinked and retries (filelock
        # checks st_nlink), so the lock file never outlives its holder.
        with contextlib.suppress(OSError):
            lock_path.unlink()
        lock.release(force=True)

    return release


@contextlib.contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """Hold the exclusive lock ``lock_path`` while the block runs, waiting for other holders.

    Raises:
        OSError: the lock file cannot be created.
    """
    release = acquire_lock(lock_path)
    assert release is not None  # waiting always ends holding the lock
    try:
        yield
    finally:
        release()


def copy_xattrs(source: Path, destination: str | Path, platform: str = sys.platform,
                copyfile: CopyFile | None = None) -> None:
    """Give ``destination`` the extended attributes of ``source``, best effort (see the module docstring).
    ``copyfile``: macOS's function, found in libSystem when not given."""
    if platform == "darwin":
        with contextlib.suppress(OSError, AttributeError):
            (copyfile or _libsystem_copyfile())(os.fsencode(source), os.fsencode(destination), None, COPYFILE_XATTR)
    elif hasattr(os, "listxattr"):
        _copy_linux_xattrs(source, destination)


def carry_birth_time(fd: int, original: os.stat_result, platform: str = sys.platform) -> None:
    """Give the open file ``fd`` the birth (creation) time of ``original`` on macOS, keeping its access and
    modification times; a no-op elsewhere (Linux cannot set a birth time)."""
    birth = getattr(original, "st_birthtime_ns", None) or _seconds_to_ns(getattr(original, "st_birthtime", None))
    if platform != "darwin" or not birth:
        return
    now = os.fstat(fd)
    with contextlib.suppress(OSError):
        os.utime(fd, ns=(now.st_atime_ns, birth))  # an mtime before the birth time pulls the birth time back
        os.utime(fd, ns=(now.st_atime_ns, now.st_mtime_ns))


def _copy_linux_xattrs(source: Path, destination: str | Path) -> None:
    try:
        names = os.listxattr(source)
    except OSError:
        return
    for name in names:
        with contextlib.suppress(OSError):
            os.setxattr(destination, name, os.getxattr(source, name))


def _libsystem_copyfile() -> CopyFile:
    function = ctypes.CDLL(None, use_errno=True).copyfile
    function.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_uint32]
    function.restype = ctypes.c_int
    copyfile: CopyFile = function
    return copyfile


def _seconds_to_ns(seconds: float | None) -> int | None:
    return int(seconds * 1e9) if seconds else None
