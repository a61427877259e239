"""The image store: named by content (one file per distinct image), within a byte and a file quota that
removes the least recently used first, and refusing uploads that would fill the disk, leaving nothing partial."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from support.images import ImageFactory

from llava_edge.errors import ImageStoreError, InvalidImageError, ServerConfigError
from llava_edge.image_store import ImageStore, content_uuid
from llava_edge.schema import is_uuid4


def _aged(store: ImageStore, image_uuid: str, seconds_ago: float) -> None:
    """Backdate an image's last use (the mtime the store orders its removals by)."""
    when = time.time() - seconds_ago
    os.utime(store.root / store.path(image_uuid).name, (when, when))


def test_the_same_bytes_are_one_file_under_one_uuid(tmp_path: Path, make_image: ImageFactory) -> None:
    store = ImageStore(tmp_path / "images")
    picture, other = make_image(20, 10), make_image(10, 20)
    first, again = store.put(picture), store.put(picture)
    assert first == again == content_uuid(picture) and is_uuid4(first)
    assert store.put(other) != first
    assert sorted(path.name for path in store.root.iterdir()) == sorted([f"{first}.png", f"{store.put(other)}.png"])
    assert store.read(first) == picture


def test_content_uuids_are_canonical_version_4() -> None:
    for size in range(0, 300, 7):
        value = content_uuid(os.urandom(size))
        assert is_uuid4(value) and uuid.UUID(value).variant == uuid.RFC_4122
    assert content_uuid(b"abc") == content_uuid(b"abc") != content_uuid(b"abd")


def test_a_file_quota_removes_the_least_recently_used(tmp_path: Path, make_image: ImageFactory) -> None:
    store = ImageStore(tmp_path / "images", max_files=3)
    a, b, c = (store.put(make_image(8 + n, 8)) for n in range(3))
    for image_uuid, age in ((a, 300), (b, 200), (c, 100)):
        _aged(store, image_uuid, age)
    store.read(a)  # a lookup marks a used now: b is the least recently used
    d = store.put(make_image(20, 8))
    assert {path.name.split(".")[0] for path in store.root.iterdir()} == {a, c, d}
    with pytest.raises(InvalidImageError, match="Upload it first"):
        store.read(b)
    _aged(store, a, 400)
    store.put(make_image(8, 8))  # storing bytes already kept also marks them used: now c goes first
    e = store.put(make_image(21, 8))
    assert {path.name.split(".")[0] for path in store.root.iterdir()} == {a, d, e}


def test_a_byte_quota_keeps_the_total_under_it(tmp_path: Path, make_image: ImageFactory) -> None:
    pictures = [make_image(16 + n, 16) for n in range(6)]
    store = ImageStore(tmp_path / "images", max_bytes=len(pictures[0]) * 3)
    for age, picture in enumerate(pictures):
        _aged(store, store.put(picture), 100 - age)  # each one older than the next
        total, files = store.usage()
        assert total <= store.max_bytes and files <= 3
    kept = {path.name.split(".")[0] for path in store.root.iterdir()}
    assert content_uuid(pictures[-1]) in kept and content_uuid(pictures[0]) not in kept


def test_an_image_larger_than_the_whole_quota_is_refused(tmp_path: Path, make_image: ImageFactory) -> None:
    store = ImageStore(tmp_path / "images", max_bytes=100)
    with pytest.raises(InvalidImageError, match="Send the image inline"):
        store.put(make_image(32, 32))
    assert not store.root.exists() or not list(store.root.iterdir())


def test_too_little_free_disk_is_refused_and_nothing_is_left(tmp_path: Path, make_image: ImageFactory) -> None:
    store = ImageStore(tmp_path / "images")
    kept = store.put(make_image(12, 12))
    full = ImageStore(store.root, min_free_bytes=shutil.disk_usage(tmp_path).total)  # more than any disk has free
    with pytest.raises(ImageStoreError) as caught:
        full.put(make_image(13, 13))
    assert "Not enough free disk space" in str(caught.value) and "Nothing was stored" in str(caught.value)
    assert isinstance(caught.value, OSError) and caught.value.code == "storageUnavailable"
    assert [path.name for path in store.root.iterdir()] == [f"{kept}.png"]  # no temporary file either
    assert full.put(make_image(12, 12)) == kept  # bytes already kept need no space


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_write_that_fills_the_disk_leaves_no_partial_file(tmp_path: Path) -> None:
    """The child may write at most 4,096 bytes per file (RLIMIT_FSIZE: writes past it fail as on a full disk)."""
    root = tmp_path / "images"
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "from llava_edge.errors import ImageStoreError\n"
        "from llava_edge.image_store import ImageStore\n"
        "store = ImageStore(sys.argv[1])\n"
        "print(store.put(b'small'))\n"
        "try:\n"
        "    store.put(b'x' * 100_000)\n"
        "except ImageStoreError as err:\n"
        "    print('ImageStoreError:', err)\n"
        "    sys.exit(3)\n"
    )
    child = subprocess.run([sys.executable, "-c", code, str(root)], check=False, capture_output=True, text=True,
                           timeout=60)
    assert child.returncode == 3, child.stdout + child.stderr
    small, message = child.stdout.splitlines()
    assert "Nothing was stored. Free disk space" in message
    assert [path.name for path in root.iterdir()] == [f"{small}.bin"]


def test_only_the_store_s_own_files_are_removed(tmp_path: Path, make_image: ImageFactory) -> None:
    store = ImageStore(tmp_path / "images", max_files=1)
    store.root.mkdir(parents=True)
    foreign = store.root / "notes.txt"
    foreign.write_text("not an image of the store")
    stale, fresh = store.root / ".upload-dead", store.root / ".upload-writing"
    stale.write_bytes(b"left by a crash")
    fresh.write_bytes(b"being written")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    first = store.put(make_image(9, 9))
    second = store.put(make_image(10, 9))
    names = {path.name for path in store.root.iterdir()}
    assert names == {"notes.txt", ".upload-writing", f"{second}.png"} and first != second


def test_impossible_quotas_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ServerConfigError, match="image store"):
        ImageStore(tmp_path, max_bytes=0)
    with pytest.raises(ServerConfigError, match="image store"):
        ImageStore(tmp_path, max_files=0)
    with pytest.raises(ServerConfigError, match="image store"):
        ImageStore(tmp_path, min_free_bytes=-1)
