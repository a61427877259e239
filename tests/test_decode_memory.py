"""Decode memory is bounded by bytes: estimated from the header before any pixel is read, and 16/32-bit images
are scaled to 8 bits in strips, never through full-size float64 copies. The pixels are the ones the former
full-size conversion gave (``_reference_to_rgb`` below is that conversion, kept as the oracle)."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from llava_edge import images
from llava_edge.errors import InvalidImageError
from llava_edge.images import ImageLimits, decode_image_bytes, decode_memory, to_rgb

WIDTH, HEIGHT = 7300, 5470  # 39.9 MP, under the default max_pixels
PEAK_LIMIT_MB = 500


def _reference_to_rgb(image: Image.Image) -> Image.Image:
    """The conversion as it was before decode memory was bounded (float64 copies of the whole image)."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = np.zeros_like(values) if high <= low else (values - low) * (255.0 / (high - low))
        image = Image.fromarray(scaled.round().astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode in ("RGB", "L") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _gray16_png(width: int, height: int, *, idat: bytes | None = None) -> bytes:
    """A 16-bit grayscale PNG of value ``(8x + 3y) % 65536``, row-filtered (Sub) so it compresses to a few
    hundred kB; or, given ``idat``, that as its pixel data."""
    if idat is None:
        base = np.arange(width, dtype=np.int64) * 8
        compressor = zlib.compressobj(6)
        parts = []
        for y in range(height):
            raw = np.frombuffer(((base + y * 3) % 65536).astype(">u2").tobytes(), dtype=np.uint8)
            sub = raw.copy()
            sub[2:] = raw[2:] - raw[:-2]  # filter 1: each byte minus the same byte of the pixel before
            parts.append(compressor.compress(b"\x01" + sub.tobytes()))
        idat = b"".join(parts) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


_PROBE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    def high_water_kib():
        # VmHWM belongs to this process's own memory map: unlike ru_maxrss it does not carry the parent's
        # resident size over fork and exec (a big pytest process would otherwise set the floor).
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise SystemExit("no VmHWM in /proc/self/status")

    import numpy as np
    from llava_edge.errors import InvalidImageError
    from llava_edge.images import ImageLimits, decode_image_bytes

    data = Path(sys.argv[1]).read_bytes()
    budget = int(sys.argv[2])
    before = high_water_kib()
    try:
        image = decode_image_bytes(data, ImageLimits(max_decode_bytes=budget))
    except InvalidImageError as error:
        outcome = {"error": str(error)}
    else:
        pixels = np.asarray(image.getchannel(0).crop((0, 0, 16, 4))).tolist()
        corner = list(image.getpixel((image.width - 1, image.height - 1)))
        outcome = {"mode": image.mode, "size": list(image.size), "pixels": pixels, "corner": corner}
    peak = high_water_kib()
    print(json.dumps({**outcome, "before_mb": before * 1024 / 1e6, "peak_mb": peak * 1024 / 1e6}))
    """
)


def _decode_in_child(path: Path, budget: int) -> dict[str, object]:
    child = subprocess.run([sys.executable, "-c", _PROBE, str(path), str(budget)], check=False,
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    result: dict[str, object] = json.loads(child.stdout)
    return result


@pytest.fixture(scope="module")
def big_gray16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("decode") / "gray16-40mp.png"
    path.write_bytes(_gray16_png(WIDTH, HEIGHT))
    return path


@pytest.mark.skipif(sys.platform != "linux", reason="reads VmHWM from /proc/self/status (Linux)")
def test_a_40_megapixel_16_bit_png_decodes_under_500_mb(big_gray16: Path) -> None:
    assert big_gray16.stat().st_size < 1_000_000  # small on the wire, 80 MB of 16-bit pixels once decoded
    result = _decode_in_child(big_gray16, ImageLimits().max_decode_bytes)
    assert result["mode"] == "RGB" and result["size"] == [WIDTH, HEIGHT], result
    assert isinstance(result["peak_mb"], float) and result["peak_mb"] < PEAK_LIMIT_MB, result
    values = (np.arange(16)[None, :] * 8 + np.arange(4)[:, None] * 3) % 65536  # min 0, max 65535: the full range
    assert result["pixels"] == (values * (255.0 / 65535)).round().astype(np.uint8).tolist()
    corner = round(((WIDTH - 1) * 8 + (HEIGHT - 1) * 3) % 65536 * 255 / 65535)
    assert result["corner"] == [corner] * 3


@pytest.mark.skipif(sys.platform != "linux", reason="reads VmHWM from /proc/self/status (Linux)")
def test_a_decode_over_the_byte_budget_is_refused_before_its_pixels_are_read(big_gray16: Path) -> None:
    result = _decode_in_child(big_gray16, 100 * 2**20)
    assert "would take about 190 MiB; the limit is 100 MiB" in str(result["error"]), result
    assert isinstance(result["peak_mb"], float) and isinstance(result["before_mb"], float)
    assert result["peak_mb"] - result["before_mb"] < 20, result  # no 80 MB of decoded pixels


def test_the_budget_is_checked_from_the_header_alone() -> None:
    """Pixel data that is not zlib behind a 40 MP header: over the budget it is refused as too large, not as
    corrupt, so the pixels were never read; within the budget the decoder does read them (and fails)."""
    garbage = _gray16_png(WIDTH, HEIGHT, idat=b"not zlib data" * 4)
    with pytest.raises(InvalidImageError, match=r"Downscale it or convert it to 8-bit first"):
        decode_image_bytes(garbage, ImageLimits(max_decode_bytes=100 * 2**20))
    with pytest.raises(InvalidImageError, match="corrupt or truncated"):
        decode_image_bytes(garbage, ImageLimits())


def test_a_pil_image_over_the_budget_is_refused() -> None:
    with pytest.raises(InvalidImageError, match="would take about"):
        images.load_image(Image.new("RGBA", (1000, 1000)), limits=ImageLimits(max_decode_bytes=4_000_000))


def test_decode_memory_per_mode() -> None:
    megapixel = (1000, 1000)
    assert decode_memory("I;16", megapixel) == 5_000_000  # 16-bit + 8-bit, then 8-bit + RGB (4 bytes)
    assert decode_memory("L", megapixel) == 5_000_000
    assert decode_memory("F", megapixel) == 8_000_000  # the upright copy of 4-byte pixels
    assert decode_memory("RGB", megapixel) == decode_memory("RGBA", megapixel) == 8_000_000
    assert decode_memory("P", megapixel) == decode_memory("LA", megapixel) == 8_000_000
    assert decode_memory("L", megapixel, transparent=True) == 8_000_000
    for mode in ("RGBA", "RGB", "CMYK", "I", "F", "I;16", "P", "LA", "1"):  # the default admits 40 MP of any mode
        assert decode_memory(mode, (WIDTH, HEIGHT)) <= ImageLimits().max_decode_bytes


def _samples() -> dict[str, Image.Image]:
    rng = np.random.default_rng(7)
    u16 = rng.integers(100, 60000, (48, 64), dtype=np.uint16)
    rgba = rng.integers(0, 256, (48, 64, 4), dtype=np.uint8)
    palette = Image.fromarray(rgba[..., :3]).convert("P")
    palette.info["transparency"] = 5
    gray = Image.fromarray(rgba[..., 0])
    gray.info["transparency"] = 3
    return {
        "I;16": Image.frombuffer("I;16", (64, 48), u16.tobytes(), "raw", "I;16", 0, 1),
        "I;16B": Image.frombuffer("I;16B", (64, 48), u16.byteswap().tobytes(), "raw", "I;16B", 0, 1),
        "I": Image.fromarray(rng.integers(-2**31, 2**31 - 1, (48, 64), dtype=np.int32)),
        "F": Image.fromarray((rng.standard_normal((48, 64)) * 1e6).astype(np.float32)),
        "flat I": Image.fromarray(np.full((48, 64), 7, dtype=np.int32)),
        "RGBA": Image.fromarray(rgba),
        "LA": Image.fromarray(rgba).convert("LA"),
        "P transparent": palette,
        "L transparent": gray,
        "RGB": Image.fromarray(rgba[..., :3]),
        "CMYK": Image.fromarray(rgba[..., :3]).convert("CMYK"),
        "1": gray.convert("1"),
    }


@pytest.mark.parametrize("strip_pixels", [images._STRIP_PIXELS, 200])  # one strip, and 3-row strips
@pytest.mark.parametrize("name", list(_samples()))
def test_pixels_are_those_of_the_full_size_conversion(
    name: str, strip_pixels: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images, "_STRIP_PIXELS", strip_pixels)
    source = _samples()[name]
    before = source.tobytes()
    expected = np.asarray(_reference_to_rgb(source.copy()))
    assert np.array_equal(np.asarray(to_rgb(source)), expected)
    assert source.tobytes() == before  # to_rgb leaves the caller's image as it was
    if source.mode in ("I", "F"):
        return  # PNG cannot hold 32-bit pixels
    buffer = io.BytesIO()
    source.save(buffer, format="JPEG" if name == "CMYK" else "PNG")
    from_bytes = decode_image_bytes(buffer.getvalue(), ImageLimits())
    assert np.array_equal(np.asarray(from_bytes), np.asarray(_reference_to_rgb(Image.open(buffer))))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_the_same_pixels(orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    _samples()["I;16"].save(buffer, format="PNG", exif=exif.tobytes())
    decoded = decode_image_bytes(buffer.getvalue(), ImageLimits())
    assert np.array_equal(np.asarray(decoded), np.asarray(_reference_to_rgb(Image.open(buffer))))
