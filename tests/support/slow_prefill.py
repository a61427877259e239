"""A synthetic model whose prefill lasts seconds, for stopping a caption in the middle of it.

The tiny model prefills a whole anyres image in a fraction of a second, too fast to aim at. This one keeps the
tiny vision tower but has a wider, deeper text model (n_embd 768, 8 layers, about 100 MB, built in about a
second and cached like the others): on one thread and ``n_batch`` 64 its prefill of a five-tile image
(2,888 tokens) takes several seconds, reported in some 45 progress steps.
"""

from __future__ import annotations

from PIL import Image

from llava_edge import Captioner, GenerationOptions, RuntimeOptions
from llava_edge.models import synthetic
from llava_edge.models.catalog import ModelFiles

PRESET = synthetic.SyntheticPreset(
    "slow-prefill",
    synthetic.TextShape(n_embd=768, n_layer=8, n_head=12, n_head_kv=4, n_ff=2048, n_vocab=1024),
    synthetic.PRESETS["tiny"].vision,
    None,
    "test only: a text model slow enough that an image's prefill lasts seconds",
)
RUNTIME = RuntimeOptions(threads=1, threads_batch=1, n_batch=64, n_ubatch=64, prefix_cache_bytes=0)
"""One thread and small batches: a long prefill with a progress event (and a chance to stop) every 64 tokens."""
ANYRES_SIZE = (1008, 672)
"""An image size that takes LLaVA-1.6's full anyres grid at ``detail="high"`` (overview + four tiles)."""


def slow_prefill_files() -> ModelFiles:
    """Build (or find in the synthetic cache) the slow-prefill pair. The preset is registered only while it
    is built, so the package's own list of presets is left as it was."""
    registered = PRESET.name in synthetic.PRESETS
    synthetic.PRESETS[PRESET.name] = PRESET
    try:
        return synthetic.build_synthetic_pair(PRESET.name)
    finally:
        if not registered:
            del synthetic.PRESETS[PRESET.name]


def slow_prefill_captioner(max_tokens: int = 4, runtime: RuntimeOptions = RUNTIME) -> Captioner:
    files = slow_prefill_files()
    return Captioner(model_path=files.model_path, mmproj_path=files.mmproj_path, runtime=runtime,
                     generation=GenerationOptions(max_tokens=max_tokens, temperature=0.0))


def anyres_picture() -> Image.Image:
    """A picture with some structure, large enough for the full anyres grid."""
    width, height = ANYRES_SIZE
    image = Image.new("RGB", ANYRES_SIZE, (40, 120, 200))
    for x in range(0, width, 17):
        for y in range(0, height, 29):
            image.putpixel((x, y), (x % 256, 255 - y % 256, 90))
    return image
