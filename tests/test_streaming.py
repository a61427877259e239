"""Streaming on the real llama.cpp path (tiny and K-quant synthetic models): event order, per-tile and
per-batch progress, deltas that join to the text, outputs identical to libmtmd's own image decoding, and
cancellation in every stage leaving the model as good as fresh."""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import replace

import llama_cpp.mtmd_cpp as mtmd_cpp
import pytest
from PIL import Image
from support.runtime_lock import model_free

from llava_edge import Captioner, GenerationOptions, RuntimeOptions
from llava_edge.api import CaptionDone, CaptionEvent
from llava_edge.errors import CaptionCancelledError
from llava_edge.events import ENCODE, PREFILL, Progress, TextDelta
from llava_edge.models.catalog import ModelFiles
from llava_edge.models.synthetic import build_synthetic_pair
from llava_edge.runtime.quantize import quantize_gguf

PROMPT = "Describe this image in detail."
GREEDY = GenerationOptions(max_tokens=24, temperature=0.0)
SEEDED = GenerationOptions(max_tokens=32, temperature=0.9, seed=3)
ONE_THREAD = RuntimeOptions(threads=1, threads_batch=1)
"""Kind to a shared machine (llama.cpp's threads spin while they wait for one another)."""
SMALL_BATCHES = replace(ONE_THREAD, n_batch=64, n_ubatch=64)
"""Many prefill batches per tile, so there is a "between two batches" to stop at."""


@pytest.fixture(scope="module", params=["tiny", pytest.param("kquant-small", marks=pytest.mark.slow)])
def model_files(request: pytest.FixtureRequest) -> ModelFiles:
    return build_synthetic_pair(request.param, quantize=quantize_gguf)


def open_captioner(files: ModelFiles, runtime: RuntimeOptions = SMALL_BATCHES) -> Captioner:
    return Captioner(model_path=files.model_path, mmproj_path=files.mmproj_path, runtime=runtime)


def picture(width: int = 672, height: int = 672, colour: tuple[int, int, int] = (40, 120, 200)) -> Image.Image:
    image = Image.new("RGB", (width, height), colour)
    for x in range(0, width, 23):
        image.putpixel((x, (x * 7) % height), (x % 256, 255 - x % 256, 90))
    return image


def run(events: Iterator[CaptionEvent]) -> tuple[list[Progress], list[TextDelta], CaptionDone, list[object]]:
    every = list(events)
    progress = [event for event in every if isinstance(event, Progress)]
    deltas = [event for event in every if isinstance(event, TextDelta)]
    done = every[-1]
    assert isinstance(done, CaptionDone)
    return progress, deltas, done, every


@pytest.mark.parametrize("options", [GREEDY, SEEDED], ids=["greedy", "seeded"])
def test_events_come_in_stage_order_and_the_deltas_join_to_the_text(
    model_files: ModelFiles, options: GenerationOptions
) -> None:
    with open_captioner(model_files) as captioner:
        progress, deltas, done, every = run(captioner.stream(picture(), PROMPT, detail="high", options=options,
                                                             task_uuid="0b3e1f7c-8c55-4a59-9a57-1b7e4f6c2d11"))
        described = captioner.describe(picture(), "Another question.", detail="high", options=options)
    first_delta = every.index(deltas[0]) if deltas else len(every) - 1
    assert all(isinstance(event, Progress) for event in every[:first_delta])
    assert all(isinstance(event, TextDelta) for event in every[first_delta:-1])
    assert "".join(delta.text for delta in deltas) == done.result.text == done.response["text"]
    assert done.response["taskUUID"] == "0b3e1f7c-8c55-4a59-9a57-1b7e4f6c2d11"
    assert done.response["taskType"] == "imageCaption"
    timings = done.result.timings
    assert [delta.generated_tokens for delta in deltas][: timings.generated_tokens] == list(
        range(1, timings.generated_tokens + 1)), "one delta per generated token"
    encode = [event for event in progress if event.stage == ENCODE]
    prefill = [event for event in progress if event.stage == PREFILL]
    assert [event.done for event in encode] == [0, 1, 2, 3, 4, 5] and {event.total for event in encode} == {5}
    assert prefill[0].done == 0 and prefill[-1].done == prefill[-1].total == timings.prompt_tokens
    assert all(later.done > earlier.done for earlier, later in itertools.pairwise(prefill))
    assert described.timings.prefix_cache_hit  # the same image again: no encode, no prefill of it
    assert described.text


def test_tiles_are_encoded_and_prefilled_one_after_another_batch_by_batch(tiny_files: ModelFiles) -> None:
    with open_captioner(tiny_files) as small:
        progress, _, done, _ = run(small.stream(picture(), PROMPT, detail="high", options=GREEDY))
    stages = [(event.stage, event.done) for event in progress]
    batches_per_tile = math.ceil(576 / SMALL_BATCHES.n_batch)
    head = 3  # "[INST] "
    expected = [(ENCODE, 0), (PREFILL, 0), (PREFILL, head)]
    for tile in range(5):
        expected.append((ENCODE, tile + 1))
        expected.extend((PREFILL, head + tile * 576 + min(576, (batch + 1) * 64)) for batch in range(batches_per_tile))
    expected.append((PREFILL, done.result.timings.prompt_tokens))  # the prompt text, one batch
    assert stages == expected
    measured = [event for event in progress if event.done]
    assert all(event.eta_s is not None and event.elapsed_s > 0 for event in measured)
    assert progress[-1].eta_s == 0


@pytest.mark.parametrize("detail", ["low", "high"])
def test_answers_match_libmtmds_own_image_decoding(
    model_files: ModelFiles, detail: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batches fed to llama.cpp here are those of mtmd_helper_decode_image_chunk: same text, token for
    token, greedy and sampled, at several batch sizes."""
    answers: dict[str, list[str]] = {}
    for path in ("ours", "libmtmd"):
        if path == "libmtmd":  # the helper path is the one taken for M-RoPE models
            monkeypatch.setattr(mtmd_cpp, "mtmd_decode_use_mrope", lambda context: True)
        for runtime in (ONE_THREAD, SMALL_BATCHES):
            with open_captioner(model_files, runtime) as captioner:
                answers.setdefault(path, []).extend(
                    captioner.describe(picture(colour=colour), PROMPT, detail=detail, options=options).text
                    for colour, options in (((40, 120, 200), GREEDY), ((200, 60, 20), SEEDED))
                )
    assert answers["ours"] == answers["libmtmd"]


def first(events: Iterator[CaptionEvent], wanted: Callable[[CaptionEvent], bool]) -> CaptionEvent:
    for event in events:
        if wanted(event):
            return event
    raise AssertionError("the stage never came")


STAGES: dict[str, Callable[[CaptionEvent], bool]] = {
    "encode": lambda event: isinstance(event, Progress) and event.stage == ENCODE and event.done == 1,
    "image-prefill": lambda event: isinstance(event, Progress) and event.stage == PREFILL and 3 < event.done < 500,
    "prompt-prefill": lambda event: isinstance(event, Progress) and event.stage == PREFILL
    and event.done == event.total,
    "decode": lambda event: isinstance(event, TextDelta),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_closing_the_stream_in_any_stage_leaves_the_captioner_as_good_as_fresh(
    model_files: ModelFiles, stage: str
) -> None:
    with open_captioner(model_files) as captioner, open_captioner(model_files) as fresh:
        events = captioner.stream(picture(), PROMPT, detail="high", options=SEEDED)
        first(events, STAGES[stage])
        events.close()
        assert model_free(captioner.runtime)
        for image, prompt in ((picture(), "And the colours?"), (picture(64, 64), PROMPT)):
            after = captioner.describe(image, prompt, detail="high", options=GREEDY)
            assert after.text == fresh.describe(image, prompt, detail="high", options=GREEDY).text


def test_leaving_a_for_loop_cancels_the_caption(captioner: Captioner) -> None:
    reference = captioner.describe(picture(90, 90), PROMPT, options=GREEDY).text
    for event in captioner.stream(picture(), PROMPT, detail="high", options=GREEDY):
        if isinstance(event, Progress) and event.stage == ENCODE and event.done:
            break
    assert model_free(captioner.runtime)
    assert captioner.describe(picture(90, 90), PROMPT, options=GREEDY).text == reference


@pytest.mark.parametrize("stage", ["encode", "image-prefill", "decode"])
def test_cancel_from_another_thread_stops_at_the_next_step(tiny_files: ModelFiles, stage: str) -> None:
    with open_captioner(tiny_files) as captioner, open_captioner(tiny_files) as fresh:
        seen: list[CaptionEvent] = []
        events = captioner.stream(picture(), PROMPT, detail="high", options=SEEDED)
        with closing(events), pytest.raises(CaptionCancelledError):
            for event in events:
                seen.append(event)
                if STAGES[stage](event):
                    canceller = threading.Thread(target=captioner.runtime.cancel)
                    canceller.start()
                    canceller.join()
        assert not isinstance(seen[-1], CaptionDone) and STAGES[stage](seen[-1])
        short = replace(GREEDY, max_tokens=12)
        after = captioner.describe(picture(), PROMPT, detail="high", options=short)
        assert after.text == fresh.describe(picture(), PROMPT, detail="high", options=short).text


def test_stop_strings_are_held_back_while_streaming(captioner: Captioner) -> None:
    full = captioner.describe(picture(50, 50), PROMPT, options=GREEDY).text
    word = full.split()[len(full.split()) // 2]
    _, deltas, done, _ = run(captioner.stream(picture(50, 50), PROMPT, options=replace(GREEDY, stop=(word,))))
    assert word not in done.result.text and full.startswith(done.result.text)
    assert "".join(delta.text for delta in deltas) == done.result.text
