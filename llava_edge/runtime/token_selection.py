"""Which image tokens a budget keeps: pure numpy over the projected embeddings of every view of one image.

The budget is spread over the whole anyres grid (the overview and every tile together). Three ways:

- ``diverse``: greedy max-min diversity selection (farthest-point sampling) on cosine distances, as
  described in DivPrune (Alvar et al., CVPR 2025, arXiv 2503.02175; implemented here from the paper).
  The distance between two tokens is ``1 - cos(e_i, e_j)``. Start rule (deterministic): the first token
  is the one whose nearest other token is farthest away; each next one is the token whose distance to the
  nearest already-kept token is largest; ties go to the lowest index. Kept tokens stay in their original
  order.
- ``pooled``: each view gets its share of the budget (largest remainders, so the shares add up exactly);
  its square grid is area-averaged down to the largest ``rows x cols`` grid within the share, and the
  share is topped up with evenly spaced original tokens of that view.
- ``uniform``: evenly spaced tokens over the whole grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llava_edge.token_budget import SELECTIONS

Embeddings = np.ndarray[Any, np.dtype[np.float32]]
Indices = np.ndarray[Any, np.dtype[np.intp]]


@dataclass(frozen=True)
class Reduced:
    """What is fed for one image under a budget."""

    embeddings: Embeddings
    """``[count, n_embd]`` float32, C-contiguous, in the order they are fed."""
    kept: Indices | None
    """For ``diverse`` and ``uniform``: the kept tokens' indices in the whole grid, ascending; ``None`` for
    ``pooled`` (its tokens are averages)."""


def reduce_views(views: Sequence[Embeddings], count: int, selection: str) -> Reduced:
    """Keep ``count`` tokens of one image whose views (overview, then tiles) have these embeddings.

    Raises:
        ValueError: an unknown ``selection``, no views, or ``count`` outside 1..total tokens.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"token_selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    total = sum(len(view) for view in views)
    if not views or not 1 <= count <= total:
        raise ValueError(f"cannot keep {count} of {total} image tokens")
    if selection == "pooled":
        split = shares(count, [len(view) for view in views])
        parts = [pooled_view(view, share) for view, share in zip(views, split, strict=True)]
        return Reduced(np.ascontiguousarray(np.concatenate(parts), dtype=np.float32), None)
    grid = np.concatenate(views)
    kept = diverse_indices(grid, count) if selection == "diverse" else uniform_indices(total, count)
    return Reduced(np.ascontiguousarray(grid[kept], dtype=np.float32), kept)


def diverse_indices(embeddings: Embeddings, count: int) -> Indices:
    """Greedy max-min selection of ``count`` rows by cosine distance (see the module docstring), ascending."""
    n = len(embeddings)
    if count >= n:
        return np.arange(n)
    distance = cosine_distances(embeddings)
    np.fill_diagonal(distance, np.inf)
    first = int(np.argmax(distance.min(axis=1)))
    chosen = [first]
    to_kept = distance[first].copy()
    to_kept[first] = -np.inf
    for _ in range(count - 1):
        pick = int(np.argmax(to_kept))  # argmax returns the lowest index among ties
        chosen.append(pick)
        np.minimum(to_kept, distance[pick], out=to_kept)
        to_kept[pick] = -np.inf
    return np.sort(np.asarray(chosen, dtype=np.intp))


def cosine_distances(embeddings: Embeddings) -> np.ndarray[Any, np.dtype[np.float32]]:
    """``1 - cos`` between every two rows (float32); a zero row is at distance 1 from everything."""
    values = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    unit = values / np.where(norms > 0, norms, 1.0).astype(np.float32)
    distance: np.ndarray[Any, np.dtype[np.float32]] = np.subtract(np.float32(1.0), unit @ unit.T, dtype=np.float32)
    return distance


def uniform_indices(total: int, count: int) -> Indices:
    """``count`` evenly spaced indices of ``range(total)`` (the middle of each of ``count`` equal parts)."""
    count = min(count, total)
    return ((np.arange(count) * 2 + 1) * total // (2 * count)).astype(np.intp)


def shares(count: int, sizes: Sequence[int]) -> list[int]:
    """``count`` split in proportion to ``sizes`` by largest remainders (ties to the first): the shares add
    up to ``count`` and none exceeds its size."""
    total = sum(sizes)
    exact = [count * size for size in sizes]
    result = [value // total for value in exact]
    order = sorted(range(len(sizes)), key=lambda index: (-(exact[index] % total), index))
    for index in order[: count - sum(result)]:
        result[index] += 1
    return result


def pooled_view(view: Embeddings, share: int) -> Embeddings:
    """One view's ``share`` tokens: its grid area-averaged to ``rows x cols <= share``, row by row, then
    topped up with evenly spaced original tokens. A view whose token count is no square is one row."""
    n = len(view)
    if share >= n or share == 0:
        return np.asarray(view[:share], dtype=np.float32)
    side = round(n**0.5)
    height, width = (side, side) if side * side == n else (1, n)
    rows = min(height, max(1, int(share**0.5))) if height > 1 else 1
    cols = min(width, share // rows)
    grid = np.asarray(view, dtype=np.float32).reshape(height, width, -1)
    down = (area_weights(height, rows) @ grid.reshape(height, -1)).reshape(rows, width, -1)
    pooled = area_weights(width, cols) @ down  # [rows, cols, n_embd]
    top_up = view[uniform_indices(n, share - rows * cols)] if share > rows * cols else view[:0]
    return np.concatenate([pooled.reshape(rows * cols, -1), top_up]).astype(np.float32)


def area_weights(length: int, size: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """``[size, length]`` weights that average ``length`` cells into ``size`` cells by overlapping area
    (each output cell covers ``length / size`` input cells; every row sums to 1)."""
    edges = np.arange(size + 1) * (length / size)
    cells = np.arange(length)
    overlap = np.clip(np.minimum(edges[1:, None], cells[None, :] + 1) - np.maximum(edges[:-1, None], cells[None, :]),
                      0.0, None)
    weights: np.ndarray[Any, np.dtype[np.float32]] = (overlap / (length / size)).astype(np.float32)
    return weights
