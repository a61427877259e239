"""Quality loss of a variant against the reference, from teacher-forced logits (numpy only).

Per caption position: the KL divergence KL(P_ref || P_variant) of the two next-token distributions,
whether their most likely tokens agree, and each model's negative log-likelihood of the reference
caption token. ``QualityTally`` adds positions up caption by caption, so no variant's logits are kept
beyond the caption in hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

Logits = np.ndarray[Any, np.dtype[np.float32]]


def log_softmax(logits: Logits) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Log-probabilities per row, computed in float64."""
    values = logits.astype(np.float64)
    shifted = values - values.max(axis=-1, keepdims=True)
    result: np.ndarray[Any, np.dtype[np.float64]] = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return result


@dataclass(frozen=True)
class CaptionComparison:
    """One caption, position by position."""

    kl: list[float]
    top1_agree: list[bool]
    nll_reference: float
    """Sum over the caption's tokens of -log P_ref(token)."""
    nll_variant: float


def compare_caption(reference: Logits, variant: Logits, tokens: tuple[int, ...]) -> CaptionComparison:
    """Compare two models' logits on the same caption tokens (``[len(tokens), n_vocab]`` each).

    Raises:
        ValueError: the shapes differ (models with different vocabularies cannot be compared).
    """
    if reference.shape != variant.shape or reference.shape[0] != len(tokens):
        raise ValueError(f"logits of shape {variant.shape} cannot be compared with the reference's {reference.shape}")
    log_p, log_q = log_softmax(reference), log_softmax(variant)
    kl = np.maximum((np.exp(log_p) * (log_p - log_q)).sum(axis=-1), 0.0)  # rounding can dip below 0 by 1e-17
    agree = log_p.argmax(axis=-1) == log_q.argmax(axis=-1)
    rows = np.arange(len(tokens))
    return CaptionComparison(
        kl=[float(value) for value in kl], top1_agree=[bool(value) for value in agree],
        nll_reference=float(-log_p[rows, list(tokens)].sum()), nll_variant=float(-log_q[rows, list(tokens)].sum()),
    )


@dataclass
class QualityTally:
    """Positions of many captions added up."""

    kl: list[float] = field(default_factory=list)
    agree: int = 0
    nll_reference: float = 0.0
    nll_variant: float = 0.0

    def add(self, comparison: CaptionComparison) -> None:
        self.kl += comparison.kl
        self.agree += sum(comparison.top1_agree)
        self.nll_reference += comparison.nll_reference
        self.nll_variant += comparison.nll_variant

    def summary(self) -> dict[str, float]:
        """Mean and p99 KL (nats per token), top-1 agreement (0-1), and the caption NLL per token of the
        reference, of the variant, and their difference (variant minus reference)."""
        positions = len(self.kl)
        if not positions:
            return {}
        values = np.asarray(self.kl)
        return {
            "positions": positions,
            "kl_mean": float(values.mean()),
            "kl_p99": float(np.percentile(values, 99)),
            "top1_agreement": self.agree / positions,
            "nll_reference": self.nll_reference / positions,
            "nll": self.nll_variant / positions,
            "delta_nll": (self.nll_variant - self.nll_reference) / positions,
        }
