"""A writer killed with SIGKILL at any moment leaves each image either untouched or fully written, and a rerun
completes it. The writer runs in a child process; the parent kills it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.photos import decoded, encode

from llava_edge.photos import exiv2_io
from llava_edge.photos.files import TEMP_SUFFIX
from llava_edge.photos.targets import Targets
from llava_edge.photos.writer import write_caption
from llava_edge.photos.xmp_packet import Marker

pytestmark = [pytest.mark.usefixtures("exiv2_installed"), pytest.mark.slow]

CHILD = r"""
import os, sys, time
from pathlib import Path
from llava_edge.photos.targets import Targets
from llava_edge.photos.writer import write_caption
from llava_edge.photos.xmp_packet import Marker

mode, image, signal_file = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if mode == "stop-before-rename":
    def stop(source, target):
        signal_file.write_text("about to rename")
        time.sleep(600)
    os.replace = stop
else:
    signal_file.write_text("imported")
write_caption(image, "A kite over a field.", ["kite"], targets=Targets(metadata=True), marker=Marker("m", "p"))
"""


def _start(mode: str, image: Path, signal_file: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", CHILD, mode, str(image), str(signal_file)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for(path: Path, child: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if child.poll() is not None:
            raise AssertionError(f"the child exited early: {child.stderr.read().decode() if child.stderr else ''}")
        assert time.monotonic() < deadline, "the child never got there"
        time.sleep(0.005)


def _kill(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    if child.stderr:
        child.stderr.close()


def _described(path: Path) -> bool:
    opened = exiv2_io.open_bytes(path.read_bytes(), str(path))
    existing = exiv2_io.read_existing(opened, iim=True, exif=True)
    return existing.caption() == "A kite over a field." and existing.marker is not None


def test_a_kill_just_before_the_rename_leaves_the_image_untouched(tmp_path: Path) -> None:
    image = tmp_path / "kite.jpg"
    image.write_bytes(encode("JPEG", width=640, height=480))
    original = image.read_bytes()
    child = _start("stop-before-rename", image, tmp_path / "signal")

    _wait_for(tmp_path / "signal", child)
    _kill(child)

    assert image.read_bytes() == original
    leftovers = [path for path in tmp_path.iterdir() if path.name.endswith(TEMP_SUFFIX)]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".kite.jpg.")
    record = write_caption(image, "A kite over a field.", ["kite"], targets=Targets(metadata=True),
                           marker=Marker("m", "p"))
    assert record.results[0].action == "written" and _described(image)


def test_kills_at_random_moments_leave_each_image_untouched_or_fully_written(tmp_path: Path) -> None:
    chance = random.Random(14)
    outcomes = set()
    for round_ in range(8):
        image = tmp_path / f"kite{round_}.tif"
        image.write_bytes(encode("TIFF", width=1200, height=900, seed=round_))
        original, pixels = image.read_bytes(), decoded(image)
        signal_file = tmp_path / f"signal{round_}"
        child = _start("run", image, signal_file)
        _wait_for(signal_file, child)
        time.sleep(chance.uniform(0, 0.4))
        _kill(child)

        if image.read_bytes() == original:
            outcomes.add("untouched")
        else:
            assert _described(image), "a half-written image"
            outcomes.add("written")
        np.testing.assert_array_equal(decoded(image), pixels)
        write_caption(image, "A kite over a field.", ["kite"], targets=Targets(metadata=True), marker=Marker("m", "p"))
        assert _described(image)
    assert outcomes  # which ones occur depends on the machine's speed; both are fine
