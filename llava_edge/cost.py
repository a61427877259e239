"""The cost reported when a request sets ``includeCost``.

A device has no bill, so the default mirrors Runware's published price for this model
("80-100 tokens: $0.0019", runware.ai/docs/models/meta-llava-1-6-mistral-7b), per generated token:
code that budgets on ``cost`` behaves the same on the device as in the cloud. Set your own figures
(for example your electricity cost per second of compute) with ``CostModel`` or the environment:
``LLAVA_EDGE_COST_PER_TOKEN``, ``LLAVA_EDGE_COST_PER_SECOND`` and ``LLAVA_EDGE_COST_PER_REQUEST`` (USD).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from llava_edge.errors import InvalidRequestError

RUNWARE_PRICE_PER_TOKEN = 0.0019 / 90


@dataclass(frozen=True)
class CostModel:
    """USD per request, per generated token and per second of compute."""

    per_request: float = 0.0
    per_token: float = RUNWARE_PRICE_PER_TOKEN
    per_second: float = 0.0

    def cost(self, generated_tokens: int, seconds: float) -> float:
        """The cost of one caption, rounded to 7 decimals like Runware's figures."""
        total = self.per_request + self.per_token * generated_tokens + self.per_second * seconds
        return round(total, 7)

    @classmethod
    def from_env(cls) -> CostModel:
        """The default model with any ``LLAVA_EDGE_COST_*`` variables applied."""
        return cls(
            per_request=_env_float("LLAVA_EDGE_COST_PER_REQUEST", 0.0),
            per_token=_env_float("LLAVA_EDGE_COST_PER_TOKEN", RUNWARE_PRICE_PER_TOKEN),
            per_second=_env_float("LLAVA_EDGE_COST_PER_SECOND", 0.0),
        )


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise InvalidRequestError(f"{name} must be a non-negative number (USD), got {raw!r}.", code="invalidCostModel")
    return value
