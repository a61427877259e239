"""Draw the five synthetic pictures of the eval set (llava_edge/evaluation/eval_set/drawn-*.jpg).

They are made here, by this script, and dedicated to the public domain (CC0) with the rest of the set's
own files. Run from the repository root: ``python benchmarks/make_eval_drawings.py``.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

OUT = Path(__file__).resolve().parent.parent / "llava_edge" / "evaluation" / "eval_set"
SIZE = (640, 480)


def shapes(draw: ImageDraw.ImageDraw) -> None:
    draw.ellipse((80, 120, 300, 340), fill=(220, 30, 30))
    draw.rectangle((360, 130, 560, 330), fill=(30, 60, 210))


def landscape(draw: ImageDraw.ImageDraw) -> None:
    draw.rectangle((0, 0, 640, 480), fill=(110, 170, 240))
    draw.ellipse((470, 50, 570, 150), fill=(255, 215, 0))
    draw.ellipse((-200, 280, 380, 720), fill=(60, 150, 60))
    draw.ellipse((220, 300, 860, 760), fill=(40, 120, 45))


def traffic_light(draw: ImageDraw.ImageDraw) -> None:
    draw.rectangle((0, 0, 640, 480), fill=(150, 150, 150))
    draw.rectangle((310, 330, 330, 480), fill=(40, 40, 40))
    draw.rounded_rectangle((250, 40, 390, 340), radius=20, fill=(25, 25, 25))
    for top, colour in ((60, (235, 20, 20)), (150, (70, 60, 10)), (240, (10, 60, 20))):
        draw.ellipse((280, top, 360, top + 80), fill=colour)


def stop_sign(draw: ImageDraw.ImageDraw) -> None:
    draw.rectangle((0, 0, 640, 480), fill=(200, 225, 240))
    centre, radius = (320, 240), 200
    draw.regular_polygon((centre, radius), 8, rotation=22.5, fill=(200, 20, 20))
    font = ImageFont.load_default(size=110)
    draw.text(centre, "STOP", fill="white", font=font, anchor="mm")


def house(draw: ImageDraw.ImageDraw) -> None:
    draw.rectangle((0, 0, 640, 480), fill=(235, 240, 245))
    draw.rectangle((170, 220, 470, 430), fill=(240, 220, 170))
    draw.polygon([(140, 220), (320, 80), (500, 220)], fill=(190, 40, 35))
    draw.rectangle((290, 320, 350, 430), fill=(110, 70, 40))
    for left in (200, 390):
        draw.rectangle((left, 260, left + 50, 310), fill=(150, 200, 240))
    draw.rectangle((0, 430, 640, 480), fill=(90, 160, 70))


DRAWINGS = {"drawn-shapes": shapes, "drawn-landscape": landscape, "drawn-traffic-light": traffic_light,
            "drawn-stop-sign": stop_sign, "drawn-house": house}


def main() -> None:
    for name, draw_it in DRAWINGS.items():
        image = Image.new("RGB", SIZE, "white")
        draw_it(ImageDraw.Draw(image))
        image.save(OUT / f"{name}.jpg", quality=85, optimize=True)


if __name__ == "__main__":
    main()
