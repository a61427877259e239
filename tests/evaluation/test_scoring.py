"""Teacher-forced scoring on the real runtime (the f16 ladder base): the same path as captions."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from llava_edge.api import prepare_image
from llava_edge.errors import ContextOverflowError
from llava_edge.evaluation.eval_set import load_eval_set
from llava_edge.generation import GenerationOptions, RuntimeOptions
from llava_edge.models.catalog import ModelFiles
from llava_edge.models.synthetic_ladder import BASE_NAME, build_ladder_variant
from llava_edge.runtime.engine import LlavaRuntime
from llava_edge.runtime.scoring import score_caption

PROMPT = "Describe this image in one sentence."
GREEDY = GenerationOptions(max_tokens=1, temperature=0.0)


@pytest.fixture(scope="module")
def base() -> ModelFiles:
    return build_ladder_variant(BASE_NAME)


@pytest.fixture(scope="module")
def runtime(base: ModelFiles) -> Iterator[LlavaRuntime]:
    with LlavaRuntime(base) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def pictures() -> list[tuple[Image.Image, str]]:
    items = load_eval_set(limit=2)
    return [(prepare_image(Image.open(item.path).convert("RGB"), "low"), item.caption) for item in items]


def test_first_row_is_the_distribution_a_caption_samples_from(
    runtime: LlavaRuntime, pictures: list[tuple[Image.Image, str]]
) -> None:
    picture, caption = pictures[0]
    score = score_caption(runtime, picture, PROMPT, caption, max_tokens=8)
    greedy = runtime.generate(picture, PROMPT, GREEDY)
    assert runtime.detokenize([int(score.logits[0].argmax())]).strip() == greedy.text
    assert score.image_tokens == greedy.timings.image_tokens == 576
    assert score.prompt_tokens == greedy.timings.prompt_tokens


def test_one_row_per_caption_token_and_the_same_logits_every_time(
    runtime: LlavaRuntime, pictures: list[tuple[Image.Image, str]]
) -> None:
    (first, caption), (second, other) = pictures
    tokens = runtime.tokenize(caption)[:12]
    score = score_caption(runtime, first, PROMPT, caption, max_tokens=12)
    assert score.tokens == tuple(tokens) and score.logits.shape == (12, 1024)
    assert np.isfinite(score.logits).all() and score.logits.std() > 0
    again = score_caption(runtime, first, PROMPT, tokens)  # the image prefix is reused in place
    score_caption(runtime, second, PROMPT, other, max_tokens=4)
    fresh = score_caption(runtime, first, PROMPT, tokens)  # evaluated from scratch after another image
    assert np.array_equal(score.logits, again.logits) and np.array_equal(score.logits, fresh.logits)
    assert not np.array_equal(score.logits[1], score.logits[2])  # each position has its own distribution


def test_captions_after_scoring_are_unchanged(runtime: LlavaRuntime, pictures: list[tuple[Image.Image, str]]) -> None:
    picture, caption = pictures[1]
    options = GenerationOptions(max_tokens=6, temperature=0.0)
    before = runtime.generate(picture, PROMPT, options)
    score_caption(runtime, picture, PROMPT, caption)
    assert runtime.generate(picture, PROMPT, options).text == before.text


def test_a_caption_past_the_context_is_refused_before_compute(
    base: ModelFiles, pictures: list[tuple[Image.Image, str]]
) -> None:
    picture, caption = pictures[0]
    with LlavaRuntime(base, RuntimeOptions(n_ctx=1024)) as small:
        too_long = " ".join([caption] * 20)
        assert 576 + len(small.tokenize(too_long)) > small.n_ctx
        with pytest.raises(ContextOverflowError, match="the caption to score"):
            score_caption(small, picture, PROMPT, too_long)


def test_an_empty_caption_is_refused(runtime: LlavaRuntime, pictures: list[tuple[Image.Image, str]]) -> None:
    with pytest.raises(ValueError, match="no tokens"):
        score_caption(runtime, pictures[0][0], PROMPT, "")
