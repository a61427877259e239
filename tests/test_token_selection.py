"""Image token budgets, the pure parts: the token count of an image, and the three selections."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from llava_edge.runtime.token_selection import (
    Reduction,
    area_weights,
    diverse_indices,
    reduce_views,
    shares,
    uniform_indices,
)
from llava_edge.token_budget import TokenBudget, image_token_count, token_budget


def embeddings(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def cosine_distances(vectors: np.ndarray) -> np.ndarray:
    """``1 - cos`` between every two rows, from normalized rows (float32), as a whole matrix."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0).astype(np.float32)
    return np.float32(1.0) - unit @ unit.T


def matrix_greedy(vectors: np.ndarray, count: int) -> list[int]:
    """The max-min rule over the whole distance matrix, the straightforward way."""
    distance = cosine_distances(vectors)
    np.fill_diagonal(distance, np.inf)
    chosen = [int(np.argmax(distance.min(axis=1)))]
    to_kept = distance[chosen[0]].copy()
    to_kept[chosen[0]] = -np.inf
    while len(chosen) < count:
        chosen.append(int(np.argmax(to_kept)))
        np.minimum(to_kept, distance[chosen[-1]], out=to_kept)
        to_kept[chosen[-1]] = -np.inf
    return sorted(chosen)


def brute_force_greedy(vectors: np.ndarray, count: int) -> list[int]:
    """The max-min rule written out pair by pair, in plain Python."""
    def distance(i: int, j: int) -> float:
        a, b = vectors[i].astype(np.float64), vectors[j].astype(np.float64)
        return 1.0 - float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    n = len(vectors)
    nearest = [min(distance(i, j) for j in range(n) if j != i) for i in range(n)]
    chosen = [max(range(n), key=lambda i: (nearest[i], -i))]
    while len(chosen) < count:
        rest = [i for i in range(n) if i not in chosen]
        chosen.append(max(rest, key=lambda i: (min(distance(i, j) for j in chosen), -i)))
    return chosen


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("count", [1, 2, 5, 9])
def test_diverse_follows_the_max_min_rule_step_by_step(seed: int, count: int) -> None:
    vectors = embeddings(12, seed=seed)
    assert diverse_indices(vectors, count).tolist() == sorted(brute_force_greedy(vectors, count))


@pytest.mark.parametrize(("n", "d", "count"), [(700, 48, 1), (700, 48, 160), (1500, 96, 640), (1500, 96, 1499)])
def test_diverse_picks_what_the_whole_distance_matrix_picks(n: int, d: int, count: int) -> None:
    """The lazy, block-wise updates keep exactly the tokens of the greedy rule run over the N x N matrix
    (more tokens than one block, budgets across the range)."""
    vectors = np.random.default_rng(7).normal(size=(n, d)).astype(np.float32)
    vectors[::5] += vectors[1::5][: len(vectors[::5])] * 3  # near-duplicate pairs, as neighbouring patches
    vectors[17] = 0.0  # a zero row is at distance 1 from everything
    assert diverse_indices(vectors, count).tolist() == matrix_greedy(vectors, count)


@pytest.mark.parametrize("selection", ["diverse", "pooled", "uniform"])
def test_a_reduction_copies_each_view_as_it_comes(selection: str) -> None:
    """Views added one by one from one reused scratch buffer (as libmtmd reuses its output) give what the
    views together give."""
    views = [embeddings(576, d=6, seed=seed) for seed in range(5)]
    reduction, scratch = Reduction([576] * 5, 640, 6, selection), np.empty((576, 6), dtype=np.float32)
    for index, view in enumerate(views):
        scratch[:] = view
        reduction.add(index, scratch)
    reduced, expected = reduction.finish(), reduce_views(views, 640, selection)
    assert np.array_equal(reduced.embeddings, expected.embeddings)
    assert reduced.embeddings.shape == (640, 6) and reduced.embeddings.flags.c_contiguous


@pytest.mark.parametrize("seed", range(5))
def test_diverse_is_within_half_of_the_best_max_min_subset(seed: int) -> None:
    """Farthest-point selection is a 2-approximation of the max-min diversity problem (the distance here
    is not a metric, so the bound is checked as measured, with the exhaustive optimum as reference)."""
    vectors = embeddings(10, d=3, seed=seed)
    distance = cosine_distances(vectors).astype(np.float64)

    def spread(subset: tuple[int, ...] | list[int]) -> float:
        return min(distance[i, j] for i, j in itertools.combinations(subset, 2))

    best = max(spread(subset) for subset in itertools.combinations(range(10), 4))
    assert spread(diverse_indices(vectors, 4).tolist()) >= best / 2


def test_diverse_is_deterministic_and_ordered() -> None:
    vectors = embeddings(200, d=16, seed=3)
    first, second = diverse_indices(vectors, 37), diverse_indices(vectors.copy(), 37)
    assert first.tolist() == second.tolist()
    assert first.tolist() == sorted(set(first.tolist())) and len(first) == 37


def test_diverse_ties_go_to_the_lowest_index() -> None:
    same = np.ones((6, 4), dtype=np.float32)
    assert diverse_indices(same, 3).tolist() == [0, 1, 2]


def test_uniform_spreads_evenly_and_exactly() -> None:
    assert uniform_indices(10, 5).tolist() == [1, 3, 5, 7, 9]
    assert uniform_indices(2880, 640).tolist() == sorted(set(uniform_indices(2880, 640).tolist()))
    assert len(uniform_indices(2880, 640)) == 640


def test_shares_add_up_in_proportion() -> None:
    assert shares(640, [576] * 5) == [128] * 5
    assert shares(7, [576] * 5) == [2, 2, 1, 1, 1]
    assert sum(shares(1001, [576, 576, 576])) == 1001


def test_area_weights_average_overlapping_cells() -> None:
    weights = area_weights(24, 10)
    assert weights.shape == (10, 24)
    assert np.allclose(weights.sum(axis=1), 1.0)
    assert np.allclose(area_weights(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])


@pytest.mark.parametrize("selection", ["diverse", "pooled", "uniform"])
@pytest.mark.parametrize("count", [1, 5, 160, 320, 640, 1280, 2879, 2880])
def test_every_selection_feeds_exactly_the_budget(selection: str, count: int) -> None:
    views = [embeddings(576, d=4, seed=seed) for seed in range(5)]
    reduced = reduce_views(views, count, selection)
    assert reduced.embeddings.shape == (count, 4)
    assert reduced.embeddings.dtype == np.float32 and reduced.embeddings.flags.c_contiguous
    if reduced.kept is not None:
        assert np.array_equal(reduced.embeddings, np.concatenate(views)[reduced.kept])


def test_pooled_averages_two_by_two_when_the_share_is_a_quarter() -> None:
    view = np.arange(16, dtype=np.float32).reshape(16, 1)  # a 4x4 grid
    reduced = reduce_views([view], 4, "pooled")
    assert reduced.embeddings[:, 0].tolist() == [2.5, 4.5, 10.5, 12.5]
    assert reduced.kept is None


def test_a_budget_is_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        TokenBudget(0)
    with pytest.raises(ValueError, match="diverse, pooled, uniform"):
        token_budget(640, "random")
    assert token_budget(None) is None
    assert token_budget(640) == TokenBudget(640, "diverse", "reindexed")
    with pytest.raises(ValueError):
        reduce_views([embeddings(4)], 5, "uniform")


@pytest.mark.parametrize(
    ("size", "detail", "budget", "tokens"),
    [((336, 336), "high", None, 576), ((200, 100), "high", None, 576), ((336, 672), "high", None, 1728),
     ((672, 336), "high", None, 1728), ((1008, 336), "high", None, 2304), ((672, 672), "high", None, 2880),
     ((1600, 1500), "high", None, 2880), ((1600, 1500), "low", None, 576), ((1600, 1500), "auto", None, 2880),
     ((500, 400), "auto", None, 576), ((504, 400), "auto", None, 2880), ((672, 672), "high", 640, 640),
     ((672, 672), "low", 2880, 576), ((672, 672), "low", 320, 320), ((336, 672), "high", 5000, 1728)],
)
def test_image_token_count(size: tuple[int, int], detail: str, budget: int | None, tokens: int) -> None:
    assert image_token_count(*size, detail, budget) == tokens
