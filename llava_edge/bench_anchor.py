"""The anchor: llama.cpp's own ``llama-mtmd-cli`` on the same files, image, prompt and token count.

``benchmarks/build_mtmd_cli.sh`` builds the binary from the llama.cpp vendored in the installed
llama-cpp-python's sdist. The CLI runs with its default settings; only what a caption needs is passed
(model, mmproj, image, prompt, ``-n``, a fixed seed, and the chat template, since the synthetic GGUFs
carry none). Its stage times come from its own log lines, parsed by ``parse_mtmd_output``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .bench_machine import ProcessRun, run_measured

CHAT_TEMPLATE = "llama2"
"""llama.cpp's built-in ``[INST] ... [/INST]`` template: the format llava-edge pins for this model."""
MEDIA_MARKER = "<__media__>"

_MS = r"([0-9]+(?:\.[0-9]+)?) ms"
_PATTERNS = {
    "encode": re.compile(r"mtmd batch encoding done in " + _MS + "|slice encoded in " + _MS),
    "image_decode": re.compile(r"decoded \(batch \d+/\d+\) in " + _MS),
    "image_tokens": re.compile(r"decoding \w+ batch \d+/\d+, n_tokens_batch = (\d+)"),
    "load": re.compile(r"llama_perf_context_print:\s+load time =\s+" + _MS),
    "prompt_eval": re.compile(r"llama_perf_context_print:\s+prompt eval time =\s+" + _MS + r"\s*/\s*(\d+) tokens"),
    "eval": re.compile(r"llama_perf_context_print:\s+eval time =\s+" + _MS + r"\s*/\s*(\d+) runs"),
    "n_ctx": re.compile(r"llama_context: n_ctx\s+= (\d+)"),
    "n_threads": re.compile(r"n_threads = (\d+)"),
    "flash_attn": re.compile(r"llama_context: flash_attn\s+= (\S+)"),
    "n_batch": re.compile(r"llama_context: n_batch\s+= (\d+)"),
    "n_ubatch": re.compile(r"llama_context: n_ubatch\s+= (\d+)"),
}


@dataclass(frozen=True)
class MtmdTimings:
    """Stage seconds and counts parsed from one ``llama-mtmd-cli`` run."""

    image_encode_s: float
    image_prefill_s: float
    text_prefill_s: float
    decode_s: float
    load_s: float
    image_tokens: int
    prompt_tokens: int
    generated_tokens: int
    settings: dict[str, str] = field(default_factory=dict)
    """What the CLI reported it used: n_ctx, n_batch, n_ubatch, n_threads, flash_attn."""

    @property
    def first_token_s(self) -> float:
        return self.image_encode_s + self.image_prefill_s + self.text_prefill_s

    @property
    def total_s(self) -> float:
        """Caption time without model load: encode + prompt evaluation + decode (as llava-edge's total_s)."""
        return self.first_token_s + self.decode_s


def parse_mtmd_output(log: str) -> MtmdTimings:
    """Stage times from ``llama-mtmd-cli``'s log (stderr and stdout together).

    Raises:
        ValueError: the log has no ``llama_perf_context_print`` lines (the run failed or was cut short).
    """
    prompt = _PATTERNS["prompt_eval"].search(log)
    evals = _PATTERNS["eval"].search(log)
    if prompt is None or evals is None:
        raise ValueError("No llama_perf_context_print timings in the llama-mtmd-cli output; did it fail?")
    encode = sum(float(a or b) for a, b in _PATTERNS["encode"].findall(log)) / 1000
    image_prefill = sum(float(ms) for ms in _PATTERNS["image_decode"].findall(log)) / 1000
    prompt_s = float(prompt.group(1)) / 1000
    load = _PATTERNS["load"].search(log)
    settings = {name: m.group(1) for name in ("n_ctx", "n_threads", "flash_attn", "n_batch", "n_ubatch")
                if (m := _PATTERNS[name].search(log))}
    return MtmdTimings(
        image_encode_s=encode,
        image_prefill_s=image_prefill,
        text_prefill_s=max(0.0, prompt_s - image_prefill),
        decode_s=float(evals.group(1)) / 1000,
        load_s=float(load.group(1)) / 1000 if load else 0.0,
        image_tokens=sum(int(n) for n in _PATTERNS["image_tokens"].findall(log)),
        prompt_tokens=int(prompt.group(2)),
        generated_tokens=int(evals.group(2)),  # the CLI evaluates every token it samples, the last one too
        settings=settings,
    )


def mtmd_command(binary: str | Path, model: Path, mmproj: Path, image: Path, prompt: str, n_predict: int,
                 *, seed: int = 0, extra: tuple[str, ...] = ()) -> list[str]:
    """The command line: the CLI's defaults plus the caption's inputs (and ``extra`` flags, if any)."""
    return [
        str(binary), "-m", str(model), "--mmproj", str(mmproj), "--image", str(image),
        "-p", f"{MEDIA_MARKER}\n{prompt}", "-n", str(n_predict), "--seed", str(seed),
        "--chat-template", CHAT_TEMPLATE, *extra,
    ]


def run_mtmd(command: list[str], *, timeout: float | None = None) -> tuple[ProcessRun, MtmdTimings]:
    """Run the CLI once and parse it.

    Raises:
        RuntimeError: it exited with an error (the message carries the end of its log).
    """
    run = run_measured(command, timeout=timeout)
    log = run.stderr + "\n" + run.stdout
    if run.returncode != 0:
        raise RuntimeError(f"llama-mtmd-cli exited with {run.returncode}:\n{log[-2000:]}")
    return run, parse_mtmd_output(log)


def anchor_version(binary: str | Path) -> str:
    """The CLI's ``--version`` line (llama.cpp build number and commit), or "unknown"."""
    import subprocess

    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    except OSError:
        return "unknown"
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.startswith("version")]
    return lines[0] if lines else "unknown"


def probe_anchor(binary: str | Path) -> dict[str, str]:
    """The settings the CLI picks by default on this machine (threads, n_ctx, batch sizes, flash
    attention), read from one short run on the tiny synthetic model."""
    import tempfile

    from PIL import Image

    from .synthetic import build_synthetic_pair

    files = build_synthetic_pair("tiny")
    with tempfile.TemporaryDirectory() as scratch:
        image = Path(scratch) / "probe.png"
        Image.new("RGB", (64, 64), (120, 90, 60)).save(image)
        _, parsed = run_mtmd(mtmd_command(binary, files.model_path, files.mmproj_path, image, "Hi", 2))
    return parsed.settings
