"""Image token budgets on the real llama.cpp path (the tiny synthetic model: its greedy answer depends on the
image tokens it is fed): what is fed, the unchanged default, progress, prefix reuse and cancelling."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from llava_edge import Captioner, GenerationOptions, RuntimeOptions, image_token_count
from llava_edge.api import CaptionDone, CaptionEvent, prepare_image
from llava_edge.errors import CaptionCancelledError, InvalidRequestError
from llava_edge.events import ENCODE, PREFILL, Progress
from llava_edge.models.catalog import ModelFiles
from llava_edge.runtime.scoring import score_caption
from llava_edge.token_budget import TokenBudget

PROMPT = "Describe this image."
GREEDY = GenerationOptions(max_tokens=16, temperature=0.0)
SMALL_BATCHES = RuntimeOptions(threads=1, threads_batch=1, n_batch=64, n_ubatch=64)


def noise(width: int = 672, height: int = 672, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def open_captioner(files: ModelFiles, runtime: RuntimeOptions = SMALL_BATCHES) -> Captioner:
    return Captioner(model_path=files.model_path, mmproj_path=files.mmproj_path, runtime=runtime)


def events_of(stream: Iterator[CaptionEvent]) -> tuple[list[Progress], CaptionDone]:
    every = list(stream)
    assert isinstance(every[-1], CaptionDone)
    return [event for event in every if isinstance(event, Progress)], every[-1]


@pytest.mark.parametrize("selection", ["diverse", "pooled", "uniform"])
def test_a_budget_feeds_that_many_image_tokens_and_changes_the_answer(captioner: Captioner, selection: str) -> None:
    full = captioner.describe(noise(), PROMPT, detail="high", options=GREEDY)
    reduced = captioner.describe(noise(), PROMPT, detail="high", options=GREEDY, image_tokens=640,
                                 token_selection=selection)
    assert full.timings.image_tokens == 2880 and reduced.timings.image_tokens == 640
    assert reduced.timings.prompt_tokens == full.timings.prompt_tokens - 2880 + 640
    assert reduced.timings.image_select_s > 0 and full.timings.image_select_s == 0
    assert reduced.text != full.text


def test_selections_feed_different_tokens(captioner: Captioner) -> None:
    texts = {selection: captioner.describe(noise(seed=1), PROMPT, detail="high", options=GREEDY, image_tokens=320,
                                           token_selection=selection).text
             for selection in ("diverse", "pooled", "uniform")}
    assert len(set(texts.values())) == 3


def test_no_budget_and_a_budget_of_all_tokens_are_the_same_caption_byte_for_byte(captioner: Captioner) -> None:
    runtime, picture = captioner.runtime, noise(seed=2)
    plain = score_caption(runtime, picture, PROMPT, "a photo of a cat", max_tokens=8)
    everything = score_caption(runtime, picture, PROMPT, "a photo of a cat", max_tokens=8,
                               budget=TokenBudget(2880, "pooled"))
    assert np.array_equal(plain.logits, everything.logits) and everything.image_tokens == 2880
    texts = {captioner.describe(picture, PROMPT, detail="high", options=GREEDY, image_tokens=tokens).text
             for tokens in (None, 2880, 10_000)}
    assert len(texts) == 1


def test_a_repeated_budgeted_caption_is_deterministic(captioner: Captioner) -> None:
    first = captioner.describe(noise(seed=3), PROMPT, detail="high", options=GREEDY, image_tokens=160)
    captioner.describe(noise(seed=4), PROMPT, detail="high", options=GREEDY)
    again = captioner.describe(noise(seed=3), PROMPT, detail="high", options=GREEDY, image_tokens=160)
    assert again.text == first.text


@pytest.mark.parametrize(
    ("size", "detail", "tokens"),
    [((672, 672), "high", 640), ((672, 672), "high", None), ((336, 672), "high", 1280), ((1008, 336), "high", 100),
     ((900, 700), "low", 2880), ((900, 700), "low", 320), ((400, 300), "auto", 1000), ((1600, 1500), "auto", 7)],
)
def test_the_layout_agrees_with_image_token_count(
    captioner: Captioner, size: tuple[int, int], detail: str, tokens: int | None
) -> None:
    layout = captioner.layout(noise(*size), PROMPT, detail=detail, image_tokens=tokens)
    fed = sum(chunk.n_tokens for chunk in layout if chunk.kind == "image")
    assert fed == image_token_count(*size, detail, tokens)


def test_low_detail_with_a_larger_budget_means_576(captioner: Captioner) -> None:
    result = captioner.describe(noise(900, 700), PROMPT, detail="low", options=GREEDY, image_tokens=2880)
    assert result.timings.image_tokens == 576 and result.timings.image_select_s == 0


def test_every_view_is_encoded_before_the_kept_tokens_are_prefilled(tiny_files: ModelFiles) -> None:
    with open_captioner(tiny_files) as captioner:
        progress, done = events_of(captioner.stream(noise(), PROMPT, detail="high", options=GREEDY, image_tokens=200))
    stages = [(event.stage, event.done, event.total) for event in progress if event.done]
    encodes = [entry for entry in stages if entry[0] == ENCODE]
    assert encodes == [(ENCODE, tile, 5) for tile in range(1, 6)]
    prefilled = [done for stage, done, _ in stages if stage == PREFILL]
    assert prefilled[-1] == done.result.timings.prompt_tokens
    steps = [after - before for before, after in itertools.pairwise(prefilled)]
    assert steps[:4] == [64, 64, 64, 8]  # the 200 kept tokens, in batches of n_batch, after "[INST] "
    assert stages.index(encodes[-1]) < stages.index((PREFILL, prefilled[1], prefilled[-1]))


def test_a_follow_up_about_the_same_image_reuses_the_reduced_prefix(tiny_files: ModelFiles) -> None:
    with open_captioner(tiny_files) as captioner, open_captioner(tiny_files) as fresh:
        first = captioner.describe(noise(seed=5), PROMPT, detail="high", options=GREEDY, image_tokens=320)
        follow = captioner.describe(noise(seed=5), "What colour?", detail="high", options=GREEDY, image_tokens=320)
        assert not first.timings.prefix_cache_hit and follow.timings.prefix_cache_hit
        assert follow.timings.image_encode_s == 0 and follow.timings.image_tokens == 320
        expected = fresh.describe(noise(seed=5), "What colour?", detail="high", options=GREEDY, image_tokens=320)
        assert follow.text == expected.text
        other = captioner.describe(noise(seed=5), "What colour?", detail="high", options=GREEDY, image_tokens=640)
        assert not other.timings.prefix_cache_hit and other.timings.image_tokens == 640
        pooled = captioner.describe(noise(seed=5), "What colour?", detail="high", options=GREEDY, image_tokens=640,
                                    token_selection="pooled")
        assert not pooled.timings.prefix_cache_hit


def test_the_prefix_cache_keeps_reduced_and_full_prefixes_apart(tiny_files: ModelFiles) -> None:
    runtime = replace(SMALL_BATCHES, prefix_cache_bytes=256 * 2**20)
    with open_captioner(tiny_files, runtime) as captioner, open_captioner(tiny_files) as fresh:
        captioner.describe(noise(seed=6), PROMPT, detail="high", options=GREEDY, image_tokens=160)
        captioner.describe(noise(seed=6), PROMPT, detail="high", options=GREEDY)
        restored = captioner.describe(noise(seed=7), PROMPT, detail="high", options=GREEDY)  # evicts the resident
        restored = captioner.describe(noise(seed=6), PROMPT, detail="high", options=GREEDY, image_tokens=160)
        assert restored.timings.prefix_cache_hit and restored.timings.image_tokens == 160
        expected = fresh.describe(noise(seed=6), PROMPT, detail="high", options=GREEDY, image_tokens=160)
        assert restored.text == expected.text


@pytest.mark.parametrize("moment", ["after-encode", "during-prefill"])
def test_cancel_stops_a_budgeted_caption_at_the_next_step(tiny_files: ModelFiles, moment: str) -> None:
    def reached(event: CaptionEvent) -> bool:
        if not isinstance(event, Progress):
            return False
        if moment == "after-encode":
            return event.stage == ENCODE and event.done == event.total
        return event.stage == PREFILL and 64 < event.done < 200

    with open_captioner(tiny_files) as captioner, open_captioner(tiny_files) as fresh:
        seen: list[CaptionEvent] = []
        events = captioner.stream(noise(), PROMPT, detail="high", options=GREEDY, image_tokens=200)
        with closing(events), pytest.raises(CaptionCancelledError):
            for event in events:
                seen.append(event)
                if reached(event):
                    canceller = threading.Thread(target=captioner.runtime.cancel)
                    canceller.start()
                    canceller.join()
        assert reached(seen[-1])
        after = captioner.describe(noise(), PROMPT, detail="high", options=GREEDY, image_tokens=200)
        assert after.text == fresh.describe(noise(), PROMPT, detail="high", options=GREEDY, image_tokens=200).text


def test_budgets_are_checked_before_the_image_is_read(captioner: Captioner) -> None:
    with pytest.raises(InvalidRequestError, match="image_tokens"):
        captioner.describe(b"not an image", PROMPT, image_tokens=0)
    with pytest.raises(InvalidRequestError, match="token_selection"):
        captioner.describe(b"not an image", PROMPT, image_tokens=640, token_selection="random")


def test_prepare_image_still_follows_detail() -> None:
    assert prepare_image(noise(900, 700), "low").size == (336, 261)
    assert prepare_image(noise(500, 400), "auto").size == (336, 269)
    assert prepare_image(noise(504, 400), "auto").size == (504, 400)
