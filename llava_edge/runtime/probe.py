"""``python -m llava_edge.runtime.probe``: print what the installed llama-cpp-python can do, as JSON.

``llava-edge info`` runs this in a child process, so a broken or missing build is reported, not fatal."""

from __future__ import annotations

import json

from llava_edge.runtime.backend import backend_info

if __name__ == "__main__":
    print(json.dumps(backend_info()))
