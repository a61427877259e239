"""How many tokens an image takes, and image token budgets. Pure: no I/O, no llama.cpp.

LLaVA-1.6 (llama.cpp's libmtmd) feeds an image as one 336x336 overview plus, when either side is over
336 px, the tiles of the best grid resolution (336x672, 672x336, 672x672, 1008x336 or 336x1008), 576
tokens per 336 px view: 576, 1,728, 2,304 or 2,880 tokens. ``detail`` shrinks the image first ("low": one
view). A budget (``image_tokens``) caps what is fed: the runtime encodes every view, then keeps that many
tokens chosen from the whole grid (``TokenBudget``). ``image_token_count`` is the one answer to "how many
tokens will this image take" that the context check, the budgets and the evaluation all use.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from llava_edge.errors import InvalidRequestError

VIEW_SIDE = 336
"""The side of one CLIP view, in pixels."""
TOKENS_PER_VIEW = 576
"""Tokens of one view (24 x 24 patches of 14 px)."""
GRID_RESOLUTIONS = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))
"""LLaVA-1.6's anyres grid resolutions (``clip.vision.image_grid_pinpoints``), width x height, in order."""
LOW_DETAIL_SIDE = 336
"""``detail="low"``: the image is scaled to fit 336x336, one CLIP view, 576 image tokens."""
AUTO_HIGH_MIN_SIDE = 504
"""``detail="auto"`` uses the full anyres grid from this long side on (1.5 CLIP views)."""
DETAILS = ("auto", "low", "high")
SELECTIONS = ("diverse", "pooled", "uniform")
"""How a budget picks tokens: ``diverse`` (DivPrune's max-min diversity, the default), ``pooled`` (each
view's grid area-averaged to its share), ``uniform`` (evenly spaced over the grid)."""
POSITION_MODES = ("reindexed",)
"""Where kept tokens sit: ``reindexed`` (contiguous positions, in their original order)."""


@dataclass(frozen=True)
class TokenBudget:
    """At most ``tokens`` image tokens per image, picked by ``selection``, placed by ``positions``.

    A budget at or above an image's token count changes nothing for that image (the caption is the same,
    byte for byte, as without a budget)."""

    tokens: int
    selection: str = "diverse"
    positions: str = "reindexed"

    def __post_init__(self) -> None:
        if isinstance(self.tokens, bool) or not isinstance(self.tokens, int) or self.tokens < 1:
            raise InvalidRequestError(
                f"image_tokens must be a whole number of at least 1 (or left out for all), got {self.tokens!r}.",
                parameter="image_tokens",
            )
        _check_selection(self.selection)
        if self.positions not in POSITION_MODES:
            raise InvalidRequestError(f"positions must be one of {', '.join(POSITION_MODES)}, got {self.positions!r}.",
                                      parameter="positions")

    @property
    def tag(self) -> str:
        """A short name for keys and reports: ``640-diverse-reindexed``."""
        return f"{self.tokens}-{self.selection}-{self.positions}"


def token_budget(image_tokens: int | None, selection: str | None = None) -> TokenBudget | None:
    """The budget for API arguments: ``None`` tokens mean all of them (no budget).

    Raises:
        InvalidRequestError: ``image_tokens`` under 1 or not a whole number, or an unknown ``selection``.
    """
    if image_tokens is None:
        if selection is not None:
            _check_selection(selection)
        return None
    return TokenBudget(image_tokens, selection or "diverse")


def _check_selection(selection: str) -> None:
    if selection not in SELECTIONS:
        raise InvalidRequestError(f"token_selection must be one of {', '.join(SELECTIONS)}, got {selection!r}.",
                                  parameter="token_selection")


def image_token_count(width: int, height: int, detail: str = "auto", image_tokens: int | None = None) -> int:
    """How many tokens an image of ``width`` x ``height`` pixels takes in the prompt at ``detail``, with at
    most ``image_tokens`` kept (``None``: all). ``detail="low"`` with a budget above 576 means 576.

    Raises:
        ValueError: an unknown ``detail``, a size under 1 px, or a budget under 1.
    """
    if image_tokens is not None and image_tokens < 1:
        raise ValueError(f"image_tokens must be at least 1, got {image_tokens}")
    fed_width, fed_height = detail_size(width, height, detail)
    return fed_tokens(anyres_tokens(fed_width, fed_height), image_tokens)


def fed_tokens(full: int, image_tokens: int | None) -> int:
    """The tokens fed for an image that takes ``full`` tokens unreduced, under a budget (``None``: all)."""
    return full if image_tokens is None else min(full, image_tokens)


def resolved_detail(width: int, height: int, detail: str) -> str:
    """``"low"`` or ``"high"``: ``"auto"`` is low under ``AUTO_HIGH_MIN_SIDE`` on the long side (the anyres
    tiles would only magnify the image, adding tokens but no detail), else high.

    Raises:
        ValueError: an unknown ``detail``.
    """
    if detail not in DETAILS:
        raise ValueError(f"detail must be auto, low or high, got {detail!r}")
    if detail == "auto":
        return "low" if max(width, height) < AUTO_HIGH_MIN_SIDE else "high"
    return detail


def detail_size(width: int, height: int, detail: str) -> tuple[int, int]:
    """The size the image is fed at after ``detail`` (``"low"`` fits it into one 336 px view)."""
    if width < 1 or height < 1:
        raise ValueError(f"an image has at least 1x1 pixels, got {width}x{height}")
    if resolved_detail(width, height, detail) == "low" and max(width, height) > LOW_DETAIL_SIDE:
        scale = LOW_DETAIL_SIDE / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    return width, height


def anyres_tokens(width: int, height: int) -> int:
    """Tokens libmtmd makes of an image fed at this size: the overview, plus the best grid's tiles when a
    side is over one view."""
    if width <= VIEW_SIDE and height <= VIEW_SIDE:
        return TOKENS_PER_VIEW
    grid_width, grid_height = best_grid(width, height)
    return TOKENS_PER_VIEW * (1 + (grid_width // VIEW_SIDE) * (grid_height // VIEW_SIDE))


def best_grid(width: int, height: int) -> tuple[int, int]:
    """The grid resolution that keeps the most of the image's pixels, then wastes the least (llama.cpp's
    ``select_best_resolution``, the same integer and float steps)."""
    best, best_effective, best_waste = GRID_RESOLUTIONS[0], 0, None
    for grid_width, grid_height in GRID_RESOLUTIONS:
        scale = min(_f32(grid_width / width), _f32(grid_height / height))
        effective = min(int(_f32(width * scale)) * int(_f32(height * scale)), width * height)
        waste = grid_width * grid_height - effective
        if effective > best_effective or (effective == best_effective and (best_waste is None or waste < best_waste)):
            best, best_effective, best_waste = (grid_width, grid_height), effective, waste
    return best


def _f32(value: float) -> float:
    """``value`` rounded to float32, as C++'s ``float`` arithmetic does."""
    result: float = struct.unpack("f", struct.pack("f", value))[0]
    return result
