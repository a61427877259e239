"""Parking: a caption steps aside between two steps for other work and goes on where it was, giving the same
answer, token for token, as when it runs alone."""

from __future__ import annotations

from dataclasses import dataclass, field

import llama_cpp
import pytest
from PIL import Image

from llava_edge import GenerationOptions, RuntimeOptions
from llava_edge.errors import CaptionCancelledError, RuntimeBackendError
from llava_edge.generation import Generation
from llava_edge.models.catalog import ModelFiles
from llava_edge.prefix_cache import PrefixCache, PrefixState
from llava_edge.runtime import parking
from llava_edge.runtime.engine import LlavaRuntime
from llava_edge.token_budget import TokenBudget

OPTIONS = GenerationOptions(max_tokens=12, seed=5, temperature=0.8)
SMALL_BATCHES = RuntimeOptions(n_batch=256, prefix_cache_bytes=256 << 20)


def picture(colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (672, 672), colour)


@dataclass
class OtherWork:
    """Runs another caption when asked, at the ``at``-th step of the parked one (every step with ``every``)."""

    runtime: LlavaRuntime
    at: int = 0
    every: bool = False
    asked: int = 0
    answers: list[Generation] = field(default_factory=list)
    raise_after: bool = False

    def wanted(self) -> bool:
        self.asked += 1
        return self.every or self.asked == self.at

    def run(self) -> None:
        self.answers.append(self.runtime.generate(picture((200, 30, 90)), "Other?", OPTIONS))
        if self.raise_after:
            raise CaptionCancelledError("the parked caption's client left")


@pytest.mark.parametrize("at", [1, 2, 5, 9, 14])
def test_a_parked_caption_answers_as_it_would_alone(tiny_files: ModelFiles, at: int) -> None:
    """Parked before its first encode, in its image prefill, in its text prefill or between two tokens."""
    with LlavaRuntime(tiny_files, SMALL_BATCHES) as runtime, LlavaRuntime(tiny_files, SMALL_BATCHES) as alone:
        other = OtherWork(runtime, at=at)
        with runtime.interleaving(other):
            parked = runtime.generate(picture((10, 120, 40)), "Describe it.", OPTIONS)
        reference = alone.generate(picture((10, 120, 40)), "Describe it.", OPTIONS)
        other_alone = alone.generate(picture((200, 30, 90)), "Other?", OPTIONS)
        assert other.asked >= at and len(other.answers) == 1
        assert parked.text == reference.text
        assert other.answers[0].text == other_alone.text
        assert runtime.prefix_cache._reserved == 0  # the parked state's bytes are given back


def test_a_budgeted_and_a_text_only_caption_park_at_every_step(tiny_files: ModelFiles) -> None:
    budget = TokenBudget(300, "diverse")
    with LlavaRuntime(tiny_files, SMALL_BATCHES) as runtime, LlavaRuntime(tiny_files, SMALL_BATCHES) as alone:
        every = OtherWork(runtime, every=True)
        with runtime.interleaving(every):
            reduced = runtime.generate(picture((90, 90, 10)), "Describe it.", OPTIONS, budget)
            text_only = runtime.generate([], "Say something.", OPTIONS)
        assert len(every.answers) > 10  # every encode, batch and token stepped aside
        assert reduced.text == alone.generate(picture((90, 90, 10)), "Describe it.", OPTIONS, budget).text
        assert text_only.text == alone.generate([], "Say something.", OPTIONS).text


def test_a_follow_up_after_a_parked_caption_still_reuses_its_prefix(tiny_files: ModelFiles) -> None:
    with LlavaRuntime(tiny_files, SMALL_BATCHES) as runtime:
        with runtime.interleaving(OtherWork(runtime, at=3)):
            runtime.generate(picture((1, 2, 3)), "First?", OPTIONS)
        follow_up = runtime.generate(picture((1, 2, 3)), "Second?", OPTIONS)
    assert follow_up.timings.prefix_cache_hit and follow_up.timings.image_encode_s == 0


def test_parked_work_that_raises_stops_the_parked_caption_and_leaves_the_model_usable(
    tiny_files: ModelFiles,
) -> None:
    with LlavaRuntime(tiny_files, SMALL_BATCHES) as runtime, LlavaRuntime(tiny_files) as alone:
        with runtime.interleaving(OtherWork(runtime, at=4, raise_after=True)), pytest.raises(CaptionCancelledError):
            runtime.generate(picture((5, 5, 5)), "Describe it.", OPTIONS)
        after = runtime.generate(picture((7, 7, 7)), "And this?", OPTIONS)
        assert after.text == alone.generate(picture((7, 7, 7)), "And this?", OPTIONS).text


def test_without_room_in_the_prefix_cache_budget_a_caption_does_not_step_aside(tiny_files: ModelFiles) -> None:
    with LlavaRuntime(tiny_files, RuntimeOptions(n_batch=256, prefix_cache_bytes=0)) as runtime:
        other = OtherWork(runtime, every=True)
        with runtime.interleaving(other):
            runtime.generate(picture((3, 3, 3)), "Describe it.", OPTIONS)
    assert other.asked > 10 and other.answers == []


def test_a_state_that_cannot_be_put_back_fails_that_caption_and_leaves_no_stale_prefix(
    tiny_files: ModelFiles, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """llama.cpp refusing the parked state clears the context: the next caption of the same image must not
    believe its prefix is still there."""
    real_restore = parking.restore

    def refused(context: object, state: object) -> bool:
        real_restore(context, state)
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(context), True)
        return False

    with LlavaRuntime(tiny_files, SMALL_BATCHES) as runtime, LlavaRuntime(tiny_files) as alone:
        monkeypatch.setattr(parking, "restore", refused)
        with runtime.interleaving(OtherWork(runtime, at=12)), pytest.raises(RuntimeBackendError):
            runtime.generate(picture((60, 60, 60)), "Describe it.", OPTIONS)
        monkeypatch.setattr(parking, "restore", real_restore)
        again = runtime.generate(picture((60, 60, 60)), "Describe it again.", OPTIONS)
        assert again.text == alone.generate(picture((60, 60, 60)), "Describe it again.", OPTIONS).text
        assert runtime.prefix_cache._reserved == 0


def test_a_failed_snapshot_gives_its_reserved_bytes_back(
    tiny_files: ModelFiles, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_memory(context: object, n_past: int) -> object:
        raise MemoryError

    monkeypatch.setattr(parking, "snapshot", no_memory)
    with LlavaRuntime(tiny_files, SMALL_BATCHES) as runtime:
        with runtime.interleaving(OtherWork(runtime, at=3)), pytest.raises(MemoryError):
            runtime.generate(picture((9, 9, 9)), "Describe it.", OPTIONS)
        assert runtime.prefix_cache._reserved == 0


def test_room_for_a_parked_state_is_made_from_the_caption_s_own_prefix_first() -> None:
    cache = PrefixCache(300)
    for key in ("oldest", "own", "newest"):
        cache.put(key, PrefixState(1, bytearray(100)))
    assert cache.reserve(100, evict_first="own")
    assert cache.get("own") is None and cache.get("oldest") is not None and cache.get("newest") is not None
    cache.release(100)
    assert not cache.reserve(301)
