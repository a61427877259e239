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

Memory: ``Reduction`` takes the views one at a time, as they are encoded. ``pooled`` and ``uniform`` know
what they keep of each view up front and hold only the ``count`` fed rows. ``diverse`` must see every token
before it keeps any: it holds all the views' embeddings in one buffer (float32, ``total x n_embd``), picks
with N-vectors, a few distance columns and a block scratch (no N x N matrix, no normalized copy), moves
the kept rows to the front of the buffer in place and gives the rest back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llava_edge.token_budget import SELECTIONS

Embeddings = np.ndarray[Any, np.dtype[np.float32]]
Indices = np.ndarray[Any, np.dtype[np.intp]]
Vector = np.ndarray[Any, np.dtype[np.float32]]

_NEAREST_BLOCK = 512
"""Columns per block when finding each token's nearest other token (an ``N x block`` float32 scratch)."""
_CANDIDATES = 64
"""Distance columns computed at once for the farthest-point picks (an ``N x 64`` float32 cache)."""


@dataclass(frozen=True)
class Reduced:
    """What is fed for one image under a budget."""

    embeddings: Embeddings
    """``[count, n_embd]`` float32, C-contiguous, in the order they are fed."""
    kept: Indices | None
    """For ``diverse`` and ``uniform``: the kept tokens' indices in the whole grid, ascending; ``None`` for
    ``pooled`` (its tokens are averages)."""


class Reduction:
    """Keeps ``count`` of the tokens of one image whose views (overview, then tiles) have ``sizes`` tokens:
    ``add`` each view's embeddings in order (they are copied; the caller may reuse its memory), then
    ``finish``.

    Raises:
        ValueError: an unknown ``selection``, no views, or ``count`` outside 1..total tokens.
    """

    def __init__(self, sizes: Sequence[int], count: int, n_embd: int, selection: str):
        if selection not in SELECTIONS:
            raise ValueError(f"token_selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
        total = sum(sizes)
        if not sizes or not 1 <= count <= total:
            raise ValueError(f"cannot keep {count} of {total} image tokens")
        self.selection, self.count = selection, count
        self.starts = [sum(sizes[:index]) for index in range(len(sizes) + 1)]
        self.buffer: Embeddings = np.empty((total if selection == "diverse" else count, n_embd), dtype=np.float32)
        self.kept = uniform_indices(total, count) if selection == "uniform" else None
        split = shares(count, sizes) if selection == "pooled" else []
        self.out_starts = [sum(split[:index]) for index in range(len(split) + 1)]

    def add(self, index: int, view: Embeddings) -> None:
        """The embeddings of view ``index`` (``[sizes[index], n_embd]``)."""
        start, end = self.starts[index], self.starts[index + 1]
        if self.selection == "diverse":
            self.buffer[start:end] = view
        elif self.selection == "pooled":
            pooled_view(view, self.out_starts[index + 1] - self.out_starts[index],
                        out=self.buffer[self.out_starts[index]:self.out_starts[index + 1]])
        else:
            kept = self.kept if self.kept is not None else np.arange(0)
            first, last = np.searchsorted(kept, [start, end])
            np.take(view, kept[first:last] - start, axis=0, out=self.buffer[first:last])

    def finish(self) -> Reduced:
        """The fed embeddings (every view added); for ``diverse``, runs the selection."""
        if self.selection != "diverse":
            return Reduced(self.buffer, self.kept)
        kept = diverse_indices(self.buffer, self.count)
        compact_rows(self.buffer, kept)
        self.buffer.resize((self.count, self.buffer.shape[1]), refcheck=False)  # gives the tail's memory back
        return Reduced(self.buffer, kept)


def reduce_views(views: Sequence[Embeddings], count: int, selection: str) -> Reduced:
    """Keep ``count`` tokens of one image whose views (overview, then tiles) have these embeddings.

    Raises:
        ValueError: an unknown ``selection``, no views, or ``count`` outside 1..total tokens.
    """
    width = views[0].shape[1] if views else 0
    reduction = Reduction([len(view) for view in views], count, width, selection)
    for index, view in enumerate(views):
        reduction.add(index, view)
    return reduction.finish()


def compact_rows(buffer: Embeddings, kept: Indices) -> None:
    """Move rows ``kept`` (ascending) to the front of ``buffer`` in order, in place: row ``kept[j] >= j``
    goes to row ``j``, so no row is overwritten before it moves."""
    for position, row in enumerate(kept.tolist()):
        if row != position:
            buffer[position] = buffer[row]


def diverse_indices(embeddings: Embeddings, count: int) -> Indices:
    """Greedy max-min selection of ``count`` rows by cosine distance (see the module docstring), ascending."""
    n = len(embeddings)
    if count >= n:
        return np.arange(n)
    inverse = inverse_norms(embeddings)
    farthest = _FarthestPoints(embeddings, inverse, int(np.argmax(nearest_other_distances(embeddings, inverse))))
    while len(farthest.chosen) < count:
        farthest.pick()
    return np.sort(np.asarray(farthest.chosen, dtype=np.intp))


class _FarthestPoints:
    """Farthest-point picks holding N-vectors only: each token's distance to the nearest kept token, exact
    after every pick (no N x N matrix, no normalized copy of the embeddings).

    A pick needs its distances to every token. They come from a small cache of distance columns, computed
    ``_CANDIDATES`` at a time from the raw embeddings scaled by the inverse norms, for the tokens farthest
    from the kept ones when the cache misses: the next picks are mostly among them, so one matrix product
    serves many picks."""

    def __init__(self, embeddings: Embeddings, inverse: Vector, first: int):
        self.embeddings, self.inverse = embeddings, inverse
        n = len(embeddings)
        self.chosen: list[int] = []
        self.to_kept = np.full(n, np.inf, dtype=np.float32)
        self.columns = np.empty((n, min(_CANDIDATES, n)), dtype=np.float32)
        self.cached: dict[int, int] = {}  # token -> its column in self.columns
        self._keep(first)

    def pick(self) -> None:
        """Keep the token farthest from the kept ones (ties to the lowest index)."""
        self._keep(int(np.argmax(self.to_kept)))  # argmax returns the lowest index among ties

    def _keep(self, token: int) -> None:
        if token not in self.cached:
            self._fill(token)
        np.minimum(self.to_kept, self.columns[:, self.cached[token]], out=self.to_kept)
        self.to_kept[token] = -np.inf
        self.chosen.append(token)

    def _fill(self, token: int) -> None:
        """Distance columns of ``token`` and of the other tokens now farthest from the kept ones."""
        count = self.columns.shape[1]
        others = np.argpartition(self.to_kept, -count)[-count:] if count < len(self.to_kept) else np.arange(count)
        tokens = [token, *(int(other) for other in others if other != token)][:count]
        columns = self.columns[:, :len(tokens)]
        np.matmul(self.embeddings, self.embeddings[tokens].T, out=columns)  # the big operand first: faster
        columns *= self.inverse[:, None]
        columns *= self.inverse[None, tokens]
        np.subtract(np.float32(1.0), columns, out=columns)
        self.cached = {kept: index for index, kept in enumerate(tokens)}


def inverse_norms(embeddings: Embeddings) -> Vector:
    """``1 / |e_i|`` per row (float32), 0 for a zero row (which is then at distance 1 from everything)."""
    norms = np.sqrt(np.einsum("ij,ij->i", embeddings, embeddings, dtype=np.float32))
    inverse: Vector = np.divide(np.float32(1.0), norms, out=np.zeros_like(norms), where=norms > 0)
    return inverse


def nearest_other_distances(embeddings: Embeddings, inverse: Vector) -> Vector:
    """Each row's cosine distance to its nearest other row: the lower triangle of the distance matrix,
    ``_NEAREST_BLOCK`` columns at a time (each pair once, seen from both of its rows)."""
    n = len(embeddings)
    nearest = np.full(n, np.inf, dtype=np.float32)
    scratch = np.empty(min(_NEAREST_BLOCK, n) * n, dtype=np.float32)
    for start in range(0, n, _NEAREST_BLOCK):
        end = min(start + _NEAREST_BLOCK, n)
        block = scratch[:(n - start) * (end - start)].reshape(n - start, end - start)
        np.matmul(embeddings[start:], embeddings[start:end].T, out=block)  # the big operand first: faster
        block *= inverse[start:, None]
        block *= inverse[None, start:end]
        np.subtract(np.float32(1.0), block, out=block)
        block[np.arange(end - start), np.arange(end - start)] = np.inf  # a row and itself
        np.minimum(nearest[start:], block.min(axis=1), out=nearest[start:])
        np.minimum(nearest[start:end], block.min(axis=0), out=nearest[start:end])
    return nearest


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


def pooled_view(view: Embeddings, share: int, *, out: Embeddings) -> Embeddings:
    """One view's ``share`` tokens, written to ``out`` (``[share, n_embd]``): its grid area-averaged to
    ``rows x cols <= share``, row by row, then topped up with evenly spaced original tokens. A view whose
    token count is no square is one row."""
    n = len(view)
    if share >= n or share == 0:
        out[:] = view[:share]
        return out
    side = round(n**0.5)
    height, width = (side, side) if side * side == n else (1, n)
    rows = min(height, max(1, int(share**0.5))) if height > 1 else 1
    cols = min(width, share // rows)
    grid = np.asarray(view, dtype=np.float32).reshape(height, width, -1)
    down = (area_weights(height, rows) @ grid.reshape(height, -1)).reshape(rows, width, -1)
    np.matmul(area_weights(width, cols), down, out=out[:rows * cols].reshape(rows, cols, -1))
    np.take(view, uniform_indices(n, share - rows * cols), axis=0, out=out[rows * cols:])
    return out


def area_weights(length: int, size: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """``[size, length]`` weights that average ``length`` cells into ``size`` cells by overlapping area
    (each output cell covers ``length / size`` input cells; every row sums to 1)."""
    edges = np.arange(size + 1) * (length / size)
    cells = np.arange(length)
    overlap = np.clip(np.minimum(edges[1:, None], cells[None, :] + 1) - np.maximum(edges[:-1, None], cells[None, :]),
                      0.0, None)
    weights: np.ndarray[Any, np.dtype[np.float32]] = (overlap / (length / size)).astype(np.float32)
    return weights
