"""The anchor: llama.cpp's own ``llama-mtmd-cli`` on the same files, image, prompt and token count.

``benchmarks/build_mtmd_cli.sh`` builds the binary from the llama.cpp vendored in the installed
llama-cpp-python's sdist. The CLI runs with its default settings; only what a caption needs is passed
(model, mmproj, image, prompt, ``-n``, a fixed seed, the chat template, since the synthetic GGUFs carry
none, and a log level). Its stage times come from its log lines and output, see ``parse_mtmd_output``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from llava_edge.bench.machine_facts import ProcessRun, run_streaming
from llava_edge.errors import BenchmarkError

CHAT_TEMPLATE = "llama2"
"""llama.cpp's built-in ``[INST] ... [/INST]`` template: the format llava-edge pins for this model."""
MEDIA_MARKER = "<__media__>"
LOG_ARGS = ("-lv", "4")
"""Log level "trace": adds the per-image-batch and context lines. Logging only, no setting changes."""

_LOG_LINE = re.compile(r"^\d+\.\d+\.\d+\.\d+ [IWED] ")
_MS = r"([0-9]+(?:\.[0-9]+)?) ms"
_PATTERNS = {
    "encode": re.compile(r"mtmd batch encoding done in " + _MS),
    "image_decode": re.compile(r"decoded \(batch \d+/\d+\) in " + _MS),
    "image_tokens": re.compile(r"decoding \w+ batch \d+/\d+, n_tokens_batch = (\d+)"),
    "n_ctx": re.compile(r"llama_context: n_ctx\s+= (\d+)"),
    "n_threads": re.compile(r"threadpool init, n_threads = (\d+)"),
    "flash_attn": re.compile(r"llama_context: flash_attn\s+= (\S+)"),
    "n_batch": re.compile(r"llama_context: n_batch\s+= (\d+)"),
    "n_ubatch": re.compile(r"llama_context: n_ubatch\s+= (\d+)"),
}
_CAPTION_START = "WARN: This is an experimental CLI"


@dataclass(frozen=True)
class MtmdTimings:
    """Stage seconds and counts of one ``llama-mtmd-cli`` caption.

    The CLI's closing ``llama_perf`` lines are often lost at exit (its logger is asynchronous), so the
    stages come from its per-batch log lines and from when its output arrived: the caption starts at the
    line it logs just before reading the image, prefill ends when the answer starts, and decode runs to the
    last token (n - 1 steps observed, scaled to the n steps llava-edge's ``decode_s`` covers)."""

    image_encode_s: float
    image_prefill_s: float
    text_prefill_s: float
    """Everything else before the first token: preprocessing, text chunks, first sample."""
    first_token_s: float
    decode_s: float
    image_tokens: int
    generated_tokens: int
    settings: dict[str, str] = field(default_factory=dict)
    """What the CLI reported it used: n_ctx, n_batch, n_ubatch, n_threads, flash_attn."""

    @property
    def total_s(self) -> float:
        """Caption time without model load, as llava-edge's ``total_s``."""
        return self.first_token_s + self.decode_s


def parse_mtmd_output(chunks: list[tuple[float, str]], n_predict: int) -> MtmdTimings:
    """Stage times from the CLI's merged output, as (arrival seconds, text) chunks.

    Raises:
        BenchmarkError: the output has no caption start, no image or no answer (the run failed).
    """
    lines = _timed_lines(chunks)
    log = "\n".join(line.text for line in lines)
    started = next((line.start for line in lines if _CAPTION_START in line.text), None)
    images = [index for index, line in enumerate(lines) if _PATTERNS["image_decode"].search(line.text)]
    answer = [line for line in lines[images[-1] + 1 :] if not _LOG_LINE.match(line.text) and line.text.strip()] \
        if images else []
    if started is None or not answer:
        raise BenchmarkError(
            "The llama-mtmd-cli output has no caption start, image batch or answer. Run the anchor binary by hand "
            "to see why, and rebuild it with benchmarks/build_mtmd_cli.sh if it is from another llama.cpp."
        )
    encode = sum(float(ms) for ms in _PATTERNS["encode"].findall(log)) / 1000
    image_prefill = sum(float(ms) for ms in _PATTERNS["image_decode"].findall(log)) / 1000
    first = answer[0].first_visible - started
    steps = max(n_predict - 1, 1)
    return MtmdTimings(
        image_encode_s=encode, image_prefill_s=image_prefill,
        text_prefill_s=max(0.0, first - encode - image_prefill), first_token_s=first,
        decode_s=(answer[-1].last_visible - answer[0].first_visible) * n_predict / steps,
        image_tokens=sum(int(n) for n in _PATTERNS["image_tokens"].findall(log)),
        generated_tokens=n_predict,
        settings={name: m.group(1) for name in ("n_ctx", "n_threads", "flash_attn", "n_batch", "n_ubatch")
                  if (m := _PATTERNS[name].search(log))},
    )


@dataclass
class _Line:
    """A line of output: when it started, when its first and last visible characters arrived."""

    start: float
    text: str = ""
    first_visible: float = 0.0
    last_visible: float = 0.0


def _timed_lines(chunks: list[tuple[float, str]]) -> list[_Line]:
    """Split the output into lines stamped with arrival times (a trailing newline may come only at exit)."""
    lines: list[_Line] = []
    current: _Line | None = None
    for at, text in chunks:
        for piece in text.splitlines(keepends=True):
            current = current or _Line(at)
            current.text += piece
            if piece.strip():
                current.first_visible = current.first_visible or at
                current.last_visible = at
            if piece.endswith("\n"):
                current.text = current.text.rstrip("\n")
                lines.append(current)
                current = None
    return lines + ([current] if current else [])


def mtmd_command(binary: str | Path, model: Path, mmproj: Path, image: Path, prompt: str, n_predict: int,
                 *, seed: int = 0, extra: tuple[str, ...] = ()) -> list[str]:
    """The command line: the CLI's defaults plus the caption's inputs (and ``extra`` flags, if any)."""
    return [
        str(binary), "-m", str(model), "--mmproj", str(mmproj), "--image", str(image),
        "-p", f"{MEDIA_MARKER}\n{prompt}", "-n", str(n_predict), "--seed", str(seed),
        "--chat-template", CHAT_TEMPLATE, *LOG_ARGS, *extra,
    ]


def run_mtmd(command: list[str], n_predict: int, *, timeout: float | None = None) -> tuple[ProcessRun, MtmdTimings]:
    """Run the CLI once and parse its output.

    Raises:
        BenchmarkError: it could not start or exited with an error (the message carries the end of its log).
    """
    try:
        run, chunks = run_streaming(command, timeout=timeout)
    except OSError as err:
        raise BenchmarkError(
            f"Cannot run llama-mtmd-cli at {command[0]}: {err.strerror or err}. Pass --anchor with the path of a "
            "built llama-mtmd-cli (benchmarks/build_mtmd_cli.sh builds one)."
        ) from err
    if run.returncode != 0:
        raise BenchmarkError(
            f"llama-mtmd-cli exited with status {run.returncode}. Check that the anchor binary runs and that the "
            f"model files exist; the end of its output:\n{run.stdout[-2000:]}"
        )
    return run, parse_mtmd_output(chunks, n_predict)


def anchor_version(binary: str | Path) -> str:
    """The CLI's ``--version`` line (llama.cpp build number and commit), or "unknown"."""
    import subprocess

    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60,
                              check=False)
    except OSError:
        return "unknown"
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.startswith("version")]
    return lines[0] if lines else "unknown"


def probe_anchor(binary: str | Path) -> dict[str, str]:
    """The settings the CLI picks by default on this machine (threads, n_ctx, batch sizes, flash
    attention), read from one short run on the tiny synthetic model."""
    import tempfile

    from PIL import Image

    from llava_edge.models.synthetic import build_synthetic_pair

    files = build_synthetic_pair("tiny")
    with tempfile.TemporaryDirectory() as scratch:
        image = Path(scratch) / "probe.png"
        Image.new("RGB", (64, 64), (120, 90, 60)).save(image)
        _, parsed = run_mtmd(mtmd_command(binary, files.model_path, files.mmproj_path, image, "Hi", 2), 2)
    return parsed.settings
