"""Loading, captioning with and closing a model many times does not grow the process.

Users report that llama-cpp-python's multimodal contexts leak on reload. The runtime frees the libmtmd
context, the llama context and the model itself on ``close()``; this test holds it to that, in a fresh
interpreter so no other test's memory is counted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from llava_edge.models.catalog import ModelFiles

ROUNDS = 30
BOUND_MIB = 40
"""Growth over all 30 rounds, from the first. The allocator grows its arenas once, by up to ~18 MiB, at a
round that varies from run to run (measured 67 -> 85 MiB, then flat to 0.3 MiB), so a one-time step fits.
One round allocates about 10 MiB (model, KV cache, compute buffers, CLIP context): leaking it (forgetting
mtmd_free alone grew 286 MiB) or even 2 MiB of it per round breaks this."""

_ROUNDS = textwrap.dedent(
    """
    import gc, json, sys
    import psutil
    from PIL import Image
    from llava_edge import Captioner, GenerationOptions

    model, mmproj, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    image = Image.new("RGB", (64, 48), (120, 30, 200))
    process, rss = psutil.Process(), []
    for _ in range(rounds):
        captioner = Captioner(model_path=model, mmproj_path=mmproj, generation=GenerationOptions(max_tokens=4, seed=1))
        assert captioner.describe(image, "What is this?").timings.image_tokens == 576
        captioner.close()
        del captioner
        gc.collect()
        rss.append(process.memory_info().rss / 2**20)
    print(json.dumps(rss))
    """
)


@pytest.mark.slow
def test_rss_stays_flat_over_repeated_load_caption_close(tiny_files: ModelFiles) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _ROUNDS, str(tiny_files.model_path), str(tiny_files.mmproj_path), str(ROUNDS)],
        check=False, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rss: list[float] = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(rss) == ROUNDS
    growth = max(rss) - rss[0]
    assert growth < BOUND_MIB, [round(value, 1) for value in rss]
