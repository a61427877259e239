"""Run the command line in a fresh interpreter and see which modules it imported on the way."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# Runs the command line in this interpreter, then reports whether llama_cpp was imported on the way.
CLI_PROBE = """
import json, runpy, sys
sys.argv = ["llava-edge", *json.loads(sys.argv[1])]
code = 0
if sys.argv[1:] == ["<import>"]:
    import llava_edge
else:
    try:
        runpy.run_module("llava_edge", run_name="__main__")
    except SystemExit as exit:
        code = exit.code or 0
print(json.dumps({"code": code, "llama_cpp": "llama_cpp" in sys.modules}))
"""


def run_cli_probe(*args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    """Run ``llava-edge ARGS`` in a fresh interpreter; its exit code and whether it imported llama_cpp."""
    done = subprocess.run(
        [sys.executable, "-c", CLI_PROBE, json.dumps(list(args))],
        capture_output=True, text=True, timeout=180, check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return report
