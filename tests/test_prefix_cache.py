"""The image prefix: a follow-up question skips encode and prefill, and answers stay identical."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from llava_edge import GenerationOptions, RuntimeOptions
from llava_edge.models.catalog import ModelFiles
from llava_edge.prefix_cache import PrefixCache, PrefixState
from llava_edge.runtime.engine import LlavaRuntime

OPTIONS = GenerationOptions(max_tokens=12, seed=21, temperature=0.7)
CACHED = RuntimeOptions(prefix_cache_bytes=64 << 20)


def image(colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (672, 672), colour)


def test_follow_up_on_the_last_image_reuses_it_in_place(tiny_files: ModelFiles) -> None:
    with LlavaRuntime(tiny_files) as runtime, LlavaRuntime(tiny_files) as fresh:
        first = runtime.generate(image((10, 20, 30)), "Describe it.", OPTIONS)
        follow_up = runtime.generate(image((10, 20, 30)), "What colour is it?", OPTIONS)
        reference = fresh.generate(image((10, 20, 30)), "What colour is it?", OPTIONS)
        assert runtime.prefix_cache.size == 0  # the default keeps no copies
    assert not first.timings.prefix_cache_hit and first.timings.image_encode_s > 0
    assert follow_up.timings.prefix_cache_hit and follow_up.timings.image_encode_s == 0
    assert follow_up.timings.image_prefill_s == 0 and follow_up.timings.image_tokens == 2880
    assert not reference.timings.prefix_cache_hit
    assert follow_up.text == reference.text


def test_another_image_in_between_is_served_from_the_cache(tiny_files: ModelFiles) -> None:
    with LlavaRuntime(tiny_files, CACHED) as runtime, LlavaRuntime(tiny_files) as fresh:
        runtime.generate(image((1, 2, 3)), "A?", OPTIONS)
        other = runtime.generate(image((3, 2, 1)), "A?", OPTIONS)
        back = runtime.generate(image((1, 2, 3)), "B?", OPTIONS)
        reference = fresh.generate(image((1, 2, 3)), "B?", OPTIONS)
        assert (runtime.prefix_cache.hits, runtime.prefix_cache.misses) == (1, 2)
    assert not other.timings.prefix_cache_hit
    assert back.timings.prefix_cache_hit and back.timings.image_encode_s == 0
    assert back.text == reference.text


def test_without_a_cache_another_image_in_between_means_a_new_encode(tiny_files: ModelFiles) -> None:
    with LlavaRuntime(tiny_files) as runtime:
        runtime.generate(image((1, 2, 3)), "A?", OPTIONS)
        runtime.generate(image((3, 2, 1)), "A?", OPTIONS)
        back = runtime.generate(image((1, 2, 3)), "B?", OPTIONS)
    assert not back.timings.prefix_cache_hit and back.timings.image_encode_s > 0


def test_prefixes_persist_on_disk_across_loads(tiny_files: ModelFiles, tmp_path: Path) -> None:
    options = RuntimeOptions(prefix_cache_dir=str(tmp_path / "kv"))
    with LlavaRuntime(tiny_files, options) as runtime:
        first = runtime.generate(image((9, 9, 9)), "Q?", OPTIONS)
    assert len(list((tmp_path / "kv").glob("*.kv"))) == 1
    with LlavaRuntime(tiny_files, options) as reloaded:
        second = reloaded.generate(image((9, 9, 9)), "Q?", OPTIONS)
    assert second.timings.prefix_cache_hit and second.text == first.text


def test_lru_keeps_within_its_budget_and_drops_damaged_files(tmp_path: Path) -> None:
    cache = PrefixCache(max_bytes=250, directory=tmp_path)
    for key in ("a", "b", "c"):
        cache.put(key, PrefixState(5, bytearray(100)))
    assert cache.size <= 250
    assert "a" not in cache._entries and "c" in cache._entries
    assert cache.get("a") == PrefixState(5, bytearray(100))  # evicted from memory, still on disk
    (tmp_path / "b.kv").write_bytes(b"garbage")
    cache.clear()
    assert cache.get("b") is None and not (tmp_path / "b.kv").exists()
    cache.put("huge", PrefixState(1, bytearray(1000)))
    assert "huge" not in cache._entries
