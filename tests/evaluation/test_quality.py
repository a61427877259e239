"""The quality arithmetic (numpy only): KL, top-1 agreement, caption NLL, and the Pareto front."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llava_edge.evaluation.chart import pareto_front
from llava_edge.evaluation.quality import QualityTally, compare_caption, log_softmax


def test_identical_logits_compare_as_exactly_zero_loss() -> None:
    logits = np.random.default_rng(0).normal(size=(5, 1024)).astype(np.float32)
    tokens = (3, 7, 11, 13, 17)
    same = compare_caption(logits, logits.copy(), tokens)
    assert same.kl == [0.0] * 5 and all(same.top1_agree)
    assert same.nll_reference == same.nll_variant


def test_kl_top1_and_nll_match_a_hand_computation() -> None:
    reference = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.6, 0.3]], dtype=np.float32))
    variant = np.log(np.array([[0.25, 0.5, 0.25], [0.2, 0.5, 0.3]], dtype=np.float32))
    result = compare_caption(reference, variant, (0, 1))
    expected_kl = [0.5 * math.log(2) + 0.25 * math.log(0.5), 0.1 * math.log(0.5) + 0.6 * math.log(0.6 / 0.5)]
    assert result.kl == pytest.approx(expected_kl, rel=1e-6)
    assert result.top1_agree == [False, True]
    assert result.nll_reference == pytest.approx(-math.log(0.5) - math.log(0.6), rel=1e-6)
    assert result.nll_variant == pytest.approx(-math.log(0.25) - math.log(0.5), rel=1e-6)


def test_tally_summary_adds_captions_up_by_position() -> None:
    reference = np.log(np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]], dtype=np.float32))
    variant = np.log(np.array([[0.5, 0.5], [0.6, 0.4], [0.7, 0.3]], dtype=np.float32))
    tally = QualityTally()
    tally.add(compare_caption(reference[:1], variant[:1], (0,)))
    tally.add(compare_caption(reference[1:], variant[1:], (0, 1)))
    summary = tally.summary()
    assert summary["positions"] == 3
    assert summary["kl_mean"] == pytest.approx(np.mean(tally.kl))
    assert summary["kl_p99"] <= max(tally.kl) and summary["kl_p99"] > np.mean(tally.kl)
    assert summary["top1_agreement"] == pytest.approx(2 / 3)
    assert summary["delta_nll"] == pytest.approx(summary["nll"] - summary["nll_reference"])


def test_logits_of_another_vocabulary_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot be compared"):
        compare_caption(np.zeros((2, 10), np.float32), np.zeros((2, 12), np.float32), (1, 2))


def test_log_softmax_rows_are_distributions() -> None:
    rows = log_softmax(np.array([[1000.0, 0.0, -5.0], [1.0, 2.0, 3.0]], dtype=np.float32))
    assert np.exp(rows).sum(axis=1) == pytest.approx([1.0, 1.0])


def test_pareto_front_keeps_only_points_nothing_beats() -> None:
    points = [(1.0, 0.5, "a"), (2.0, 0.1, "b"), (3.0, 0.2, "c"), (0.5, 0.9, "d"), (2.5, 0.05, "e")]
    assert [name for _, _, name in pareto_front(points)] == ["d", "a", "b", "e"]
