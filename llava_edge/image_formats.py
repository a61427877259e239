"""Optional image decoders: HEIC/HEIF through pillow-heif, AVIF through Pillow's own plugin.

Phones write HEIC and the web serves AVIF; Pillow reads neither by itself before 11.3. Pillow 11.3 and later
read AVIF natively (their wheels ship libavif); HEIC needs the opener of pillow-heif (the ``photos`` extra).
Nothing is registered at import: ``register_decoders`` does it once, when a caller first needs it, and says
which Pillow format names it made available. This module sits below ``images`` so the decode path and the
``photos`` wing can both call it.
"""

from __future__ import annotations

import functools
from importlib import import_module

from PIL import features

HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"})
"""``ftyp`` brands of HEIF files (HEVC-coded stills and sequences, and the generic image brands)."""
AVIF_BRANDS = frozenset({b"avif", b"avis"})
INSTALL_HINT = "pip install 'llava-edge[photos]'"


@functools.cache
def register_decoders() -> frozenset[str]:
    """Register the optional decoders that are installed (once per process) and return the Pillow format
    names they add: ``"HEIF"`` when pillow-heif is installed, ``"AVIF"`` when this Pillow reads AVIF."""
    formats: set[str] = set()
    try:
        pillow_heif = import_module("pillow_heif")
    except ImportError:
        pass
    else:
        pillow_heif.register_heif_opener()
        formats.add("HEIF")
    if "avif" in features.modules and features.check_module("avif"):
        formats.add("AVIF")
    return frozenset(formats)


def container_brand(data: bytes) -> str | None:
    """``"HEIF"`` or ``"AVIF"`` when ``data`` starts like an ISO-BMFF image of that kind, else ``None``."""
    if len(data) < 12 or data[4:8] != b"ftyp":
        return None
    major = data[8:12]
    if major in AVIF_BRANDS:
        return "AVIF"
    if major in HEIF_BRANDS:
        return "HEIF"
    return None


def decoder_hint(data: bytes) -> str | None:
    """What to install when ``data`` is a HEIC or AVIF image that no registered decoder reads, else ``None``."""
    brand = container_brand(data)
    if brand is None or brand in register_decoders():
        return None
    if brand == "HEIF":
        return f"HEIC/HEIF images need pillow-heif: {INSTALL_HINT}"
    return "AVIF images need Pillow 11.3 or later: pip install --upgrade pillow"
