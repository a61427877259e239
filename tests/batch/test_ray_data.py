"""Captioning on Ray: a local Ray instance started by the test (loopback only), the tiny model in each
actor, and results equal to the single-process path with the same seed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from support.images import ImageFactory
from support.ray_local import local_ray
from support.servers import wait_until

from llava_edge import Captioner, GenerationOptions, RuntimeOptions, caption_many
from llava_edge.batch.ray_data import caption_dataset  # imports ray only when called, so no skip is needed first
from llava_edge.models.catalog import ModelFiles

ray = pytest.importorskip("ray", reason='Ray tests need ray[data]: pip install "llava-edge[ray]"')
pytest.importorskip("ray.data", reason='Ray tests need ray[data]: pip install "llava-edge[ray]"')

GENERATION = GenerationOptions(max_tokens=8, seed=11)
RUNTIME = RuntimeOptions(threads=1, threads_batch=1, prefix_cache_bytes=0)
"""One thread on both sides, so that Ray actors and the local model do the same arithmetic."""

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Ray instance for this module; its GCS address lets a CLI process join it."""
    with local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False) as address:
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield address


@pytest.fixture
def photos(tmp_path: Path, make_image: ImageFactory) -> list[str]:
    root = tmp_path / "photos"
    root.mkdir()
    for index in range(6):
        (root / f"p{index}.png").write_bytes(make_image(40 + 9 * index, 36))
    (root / "bad.png").write_bytes(b"not a png")
    return sorted(str(path) for path in root.iterdir())


def local_records(photos: list[str], files: ModelFiles) -> dict[str, dict[str, Any]]:
    """The single-process result, keyed by image, without timings (they differ run to run)."""
    with Captioner(model_path=files.model_path, mmproj_path=files.mmproj_path, runtime=RUNTIME) as captioner:
        records = caption_many(photos, "Caption it.", captioner=captioner, options=GENERATION)
        return {record.image: _without_timings(record.to_json()) for record in records}


def test_ray_dataset_captions_equal_the_single_process_path(
    cluster: str, photos: list[str], tiny_files: ModelFiles
) -> None:
    dataset = ray.data.from_items([{"path": path} for path in photos])
    captioned = caption_dataset(
        dataset, model_path=tiny_files.model_path, mmproj_path=tiny_files.mmproj_path, runtime=RUNTIME,
        generation=GENERATION, prompt="Caption it.", cpus_per_actor=1, max_actors=2, batch_size=2,
    )
    rows = captioned.take_all()

    expected = local_records(photos, tiny_files)
    assert sorted(row["image"] for row in rows) == photos
    assert {row["image"]: _without_timings(json.loads(row["record"])) for row in rows} == expected
    by_image = {row["image"]: row for row in rows}
    bad, good = photos[0], photos[1:]
    assert Path(bad).name == "bad.png" and not by_image[bad]["ok"] and by_image[bad]["text"] == ""
    assert all(by_image[path]["ok"] and by_image[path]["text"] == expected[path]["response"]["text"]
               for path in good)


def test_cli_on_the_ray_cluster_writes_the_same_jsonl_and_resumes(
    cluster: str, photos: list[str], tiny_files: ModelFiles, tmp_path: Path
) -> None:
    out = tmp_path / "captions.jsonl"
    command = [
        sys.executable, "-m", "llava_edge", "caption", str(Path(photos[0]).parent), "--out", str(out),
        "--ray", cluster, "--model-path", str(tiny_files.model_path), "--mmproj-path", str(tiny_files.mmproj_path),
        "--prompt", "Caption it.", "--max-tokens", "8", "--seed", "11", "--threads", "1",
    ]
    first = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    assert first.returncode == 1, first.stderr  # bad.png failed
    assert "Done: 6 captioned, 1 failed, 0 already done" in first.stderr
    lines = out.read_text().splitlines()
    written = {record["image"]: _without_timings(record) for record in map(json.loads, lines)}
    assert len(lines) == len(photos) and written == local_records(photos, tiny_files)

    again = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "Done: 0 captioned, 0 failed, 7 already done" in again.stderr
    assert out.read_text().splitlines() == lines


def test_cli_on_the_ray_cluster_passes_the_image_token_budget(
    cluster: str, photos: list[str], tiny_files: ModelFiles, tmp_path: Path
) -> None:
    out = tmp_path / "captions.jsonl"
    command = [
        sys.executable, "-m", "llava_edge", "caption", *photos[1:3], "--out", str(out), "--ray", cluster,
        "--model-path", str(tiny_files.model_path), "--mmproj-path", str(tiny_files.mmproj_path),
        "--prompt", "Caption it.", "--max-tokens", "8", "--seed", "11", "--threads", "1", "--detail", "high",
        "--image-tokens", "300", "--token-selection", "uniform",
    ]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    written = {record["image"]: record for record in map(json.loads, out.read_text().splitlines())}
    with Captioner(model_path=tiny_files.model_path, mmproj_path=tiny_files.mmproj_path, runtime=RUNTIME) as captioner:
        expected = {record.image: record for record in caption_many(
            photos[1:3], "Caption it.", captioner=captioner, options=GENERATION, detail="high", image_tokens=300,
            token_selection="uniform")}
    assert set(written) == set(expected)
    for image, record in written.items():
        assert record["timings"]["image_tokens"] == 300
        assert record["response"]["text"] == expected[image].text


def _without_timings(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key != "timings"}


RAY_THEN_SLEEP = '''
import os, pathlib, time
import pytest
from support.ray_local import local_ray

@pytest.fixture(scope="module")
def cluster():
    with local_ray(num_cpus=1, include_dashboard=False, log_to_driver=False) as address:
        yield address

def test_uses_ray(cluster):
    import ray
    assert ray.get(ray.put(7)) == 7

def test_waits_to_be_stopped(cluster):
    import psutil
    helpers = [str(child.pid) for child in psutil.Process().children(recursive=True)]
    pathlib.Path(os.environ["READY_FILE"]).write_text(" ".join(helpers))
    time.sleep(600)

def test_would_run_next(cluster):
    time.sleep(600)
'''


def test_sigterm_stops_a_test_run_while_ray_is_up(tmp_path: Path) -> None:
    """With a Ray instance up, SIGTERM stops pytest, whose teardown shuts Ray down. Ray's own handler would
    turn it into ``SystemExit`` in the running test: one failed test, then the run goes on (or aborts)."""
    script, ready, log = tmp_path / "test_ray_then_sleep.py", tmp_path / "ready", tmp_path / "pytest.log"
    script.write_text(RAY_THEN_SLEEP)
    tests = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "READY_FILE": str(ready),
           "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))}
    with log.open("w") as output:
        process = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(script)],
                                   cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: ready.exists() or process.poll() is not None, timeout=300)
        assert ready.exists(), log.read_text()
        helpers = [psutil.Process(int(pid)) for pid in ready.read_text().split()]
        process.send_signal(signal.SIGTERM)
        assert process.wait(120) == pytest.ExitCode.INTERRUPTED, log.read_text()  # the tests left sleep 20 min
        assert "KeyboardInterrupt" in log.read_text() and "1 passed" in log.read_text()
        wait_until(lambda: not any(_running(helper) for helper in helpers), timeout=60)  # Ray was shut down
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(15)


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
