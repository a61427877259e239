"""Take the docs' screenshots of the captioning page (light, dark, phone width) with the system's Chromium.

    python tests/support/page_screenshots.py [OUT_DIR]      # default: docs/images

The page runs against the real server on 127.0.0.1 with a synthetic model (random weights, so its captions are
noise): two crops of ``examples/house.jpg`` are captioned, one gets a follow-up question, and a third image is
shot in the middle of its prefill. The PNGs are reduced to a small palette to keep them small.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))

from PIL import Image  # noqa: E402

from llava_edge.server.settings import ServerSettings  # noqa: E402
from support.browser import chromium  # noqa: E402
from support.servers import LiveServer  # noqa: E402
from support.slow_prefill import RUNTIME, anyres_picture, slow_prefill_captioner  # noqa: E402

SHOTS = {"page-light.png": {"color_scheme": "light", "viewport": {"width": 960, "height": 900}},
         "page-dark.png": {"color_scheme": "dark", "viewport": {"width": 960, "height": 900}},
         "page-phone.png": {"color_scheme": "light", "viewport": {"width": 390, "height": 844}, "is_mobile": True,
                            "has_touch": True}}


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    runtime = replace(RUNTIME, prefix_cache_bytes=256 * 2**20)  # follow-ups answered from the cached image
    with tempfile.TemporaryDirectory() as scratch, chromium() as browser:
        images = _pictures(Path(scratch))
        for name, options in SHOTS.items():
            with slow_prefill_captioner(20, runtime) as captioner:  # a fresh model: nothing cached yet
                server = LiveServer(captioner, ServerSettings())
                try:
                    _shoot(browser, server, images, options, out_dir / name)
                finally:
                    server.stop()


def _pictures(folder: Path) -> list[Path]:
    house = Image.open(REPO / "examples" / "house.jpg").convert("RGB")
    left, right = folder / "house-left.jpg", folder / "house-right.jpg"
    house.crop((0, 0, 420, 480)).save(left, quality=90)
    house.crop((220, 0, 640, 480)).save(right, quality=90)
    wide = folder / "street.png"
    anyres_picture().save(wide)
    return [left, right, wide]


def _shoot(browser: Any, server: LiveServer, images: list[Path], options: dict[str, Any], target: Path) -> None:
    context = browser.new_context(**options)
    page = context.new_page()
    page.goto(f"{server.http}/")
    page.check("input[name=detail][value=low]")
    page.set_input_files("#files", [str(path) for path in images[:2]])
    first = page.locator("li.card").first
    first.locator(".meta").first.wait_for(timeout=60_000)
    page.locator("li.card").nth(1).locator(".meta").first.wait_for(timeout=60_000)
    first.locator(".follow-input").fill("What is the weather like?")
    first.locator(".follow-input").press("Enter")
    first.locator(".meta").nth(1).wait_for(timeout=60_000)
    page.check("input[name=detail][value=high]")
    page.set_input_files("#files", [str(images[2])])
    page.locator("li.card").nth(2).locator(".stage", has_text="prefill").wait_for(timeout=60_000)
    page.wait_for_timeout(1500)  # some way into the prefill, so the bar shows
    page.screenshot(path=str(target), full_page=True)
    page.locator("li.card").nth(2).locator(".stop").click()
    context.close()
    Image.open(target).convert("RGB").quantize(colors=96).save(target, optimize=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "images")
