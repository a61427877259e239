"""What the installed llama-cpp-python can do, asked in a child process (``python -m
llava_edge.runtime.probe`` prints it as JSON), so that a broken or missing build (a GPU build without its
driver, say) is reported instead of crashing ``llava-edge info``. Importing this module does not load
llama.cpp; only the child does."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def probe_in_child(timeout: float = 120) -> dict[str, Any]:
    """``backend_info()`` from a child interpreter, or ``{"llama_cpp_python": "unusable (...)"}``."""
    command = [sys.executable, "-m", "llava_edge.runtime.probe"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode == 0:
            facts: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
            return facts
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as err:
        reason = str(err) or type(err).__name__
    return {"llama_cpp_python": f"unusable ({reason}); reinstall llama-cpp-python"}


if __name__ == "__main__":
    from llava_edge.runtime.backend import backend_info

    print(json.dumps(backend_info()))
