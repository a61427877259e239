"""``llava-edge caption`` in a real terminal (a pty) and through pipes: the live line, the streamed caption,
clean output for scripts, the stage beside a batch bar, and Ctrl-C during prefill.

A caption on the tiny model takes milliseconds, too fast to watch or interrupt, so the command runs in a
wrapper that makes every ``llama_decode`` call sleep a little and evaluates the prompt in small batches:
the prefill then lasts long enough to be seen and stopped, and the outputs are the same as without it.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from support.images import ImageFactory

TINY = ("--model", "synthetic-tiny", "--max-tokens", "12", "--seed", "1", "--threads", "1")
CLEAR_LINE = b"\r\x1b[K"

SLOW_CLI = """
import atexit, os, signal, sys, time
import llama_cpp
import llava_edge.cli as cli
from llava_edge.command_options import ModelLoad

delay, n_batch = float(os.environ["SLOW_DECODE_S"]), int(os.environ["SLOW_N_BATCH"])
calls, at_signal = [0], []
real_decode = llama_cpp.llama_decode

def slow_decode(context, batch):
    calls[0] += 1
    time.sleep(delay)
    return real_decode(context, batch)

llama_cpp.llama_decode = slow_decode
real_signal = signal.signal

def counted_signal(number, handler):
    if number == signal.SIGINT and callable(handler):
        def counting(signum, frame):
            at_signal.append(calls[0])
            handler(signum, frame)
        return real_signal(number, counting)
    return real_signal(number, handler)

signal.signal = counted_signal
atexit.register(lambda: at_signal and sys.stderr.write(f"\\nDECODES AFTER SIGINT {calls[0] - at_signal[0]}\\n"))
load = ModelLoad.load
ModelLoad.load = lambda self: load(self.with_runtime(n_batch=n_batch, n_ubatch=n_batch))
sys.argv = ["llava-edge", *sys.argv[1:]]
cli.main()
"""


def slow_command(*args: str) -> list[str]:
    return [sys.executable, "-c", SLOW_CLI, *args]


def slow_env(delay_s: float, n_batch: int) -> dict[str, str]:
    return {**os.environ, "SLOW_DECODE_S": str(delay_s), "SLOW_N_BATCH": str(n_batch)}


def in_terminal(command: list[str], env: dict[str, str], *, interrupt_at: bytes | None = None,
                timeout_s: float = 180) -> tuple[int, bytes, float | None]:
    """Run ``command`` with stdin, stdout and stderr on a 160-column pty; what it wrote to the terminal, its
    exit status and, with ``interrupt_at``, the seconds from the SIGINT sent when that text appeared to
    the exit."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    output, sent_at, deadline = b"", None, time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1.0)[0]:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            output += data
            if interrupt_at is not None and sent_at is None and re.search(interrupt_at, output):
                process.send_signal(signal.SIGINT)
                sent_at = time.monotonic()
        status = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return status, output, None if sent_at is None else time.monotonic() - sent_at


def after_live_line(output: bytes) -> bytes:
    """What the terminal shows once the live line is cleared for good."""
    return output.rsplit(CLEAR_LINE, 1)[-1]


@pytest.fixture
def big_image(tmp_path: Path, make_image: ImageFactory) -> Path:
    """672x672: five CLIP tiles, 2,880 image tokens."""
    path = tmp_path / "view.png"
    path.write_bytes(make_image(672, 672))
    return path


@pytest.mark.slow
def test_one_caption_on_a_terminal_shows_the_live_line_then_streams_the_caption(big_image: Path) -> None:
    piped = subprocess.run(slow_command("caption", str(big_image), *TINY), env=slow_env(0.0, 64),
                           capture_output=True, check=False, timeout=180)
    assert piped.returncode == 0, piped.stderr
    caption = piped.stdout
    assert caption.endswith(b"\n") and caption.count(b"\n") == 1 and caption.strip()
    assert b"\r" not in piped.stdout + piped.stderr and b"\x1b" not in piped.stdout + piped.stderr

    status, output, _ = in_terminal(slow_command("caption", str(big_image), *TINY), slow_env(0.01, 64))
    assert status == 0, output
    frames = output.split(CLEAR_LINE)[0].decode().split("\r")
    assert "CLIP 0/5 tiles" in frames[1]
    prefilled = [frame for frame in frames if re.search(r"prefill \[#*\.*\] [\d,]+/2,892 tokens", frame)]
    assert prefilled and any("ETA " in frame for frame in prefilled)
    assert any(re.search(r"CLIP [1-5]/5 tiles", frame) for frame in prefilled)
    assert after_live_line(output) == caption.replace(b"\n", b"\r\n")


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--json", "--quiet"])
def test_json_and_quiet_stay_clean_on_a_terminal(big_image: Path, flag: str) -> None:
    status, output, _ = in_terminal(slow_command("caption", str(big_image), *TINY, flag), slow_env(0.002, 64))
    assert status == 0, output
    assert b"\x1b" not in output and b"\r" not in output.replace(b"\r\n", b"\n") and b"CLIP " not in output
    lines = output.decode().split("\r\n")
    assert len(lines) == 2 and lines[1] == ""
    if flag == "--json":
        record = json.loads(lines[0])
        assert record["text"] and record["timings"]["image_tokens"] == 2880


@pytest.mark.slow
def test_ctrl_c_during_prefill_stops_within_one_batch_and_exits_130(big_image: Path) -> None:
    status, output, stopped_in = in_terminal(slow_command("caption", str(big_image), *TINY), slow_env(0.02, 16),
                                             interrupt_at=rb"prefill \[[#.]+\] [1-9]")
    assert status == 130, output
    assert stopped_in is not None  # the run ended after the interrupt; the count below says how soon
    decodes_after = int(re.search(rb"DECODES AFTER SIGINT (\d+)", output).group(1))  # type: ignore[union-attr]
    assert decodes_after <= 1
    assert after_live_line(output).strip().startswith(b"DECODES AFTER SIGINT")  # no caption, the line cleared


@pytest.mark.slow
def test_a_batch_run_shows_the_image_in_hand_and_ctrl_c_keeps_only_complete_records(
    tmp_path: Path, make_image: ImageFactory
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(3):
        (folder / f"img{index}.png").write_bytes(make_image(672, 600 + index))
    out = tmp_path / "captions.jsonl"
    command = slow_command("caption", str(folder), "--out", str(out), *TINY)
    status, output, _ = in_terminal(command, slow_env(0.01, 64), interrupt_at=rb"img1\.png: CLIP [1-4]/5 tiles")
    assert status == 130, output
    shown = output.decode()
    assert re.search(r"img0\.png: CLIP \d/5 tiles · prefill [\d,]+/[\d,]+ tokens.*\d/3 \[", shown)
    assert re.search(r"img1\.png: CLIP [1-4]/5 tiles", shown) and "Interrupted: 1 captioned" in shown
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(record["image"]).name for record in records] == ["img0.png"]

    again = subprocess.run([sys.executable, "-m", "llava_edge", *command[3:]], capture_output=True, text=True,
                           check=False, timeout=180)
    assert again.returncode == 0 and "Done: 2 captioned, 0 failed, 1 already done" in again.stderr
    assert sorted(Path(json.loads(line)["image"]).name for line in out.read_text().splitlines()) == [
        "img0.png", "img1.png", "img2.png"]
