"""Residual fine-tuning: teach the LLM what the counts get wrong, not what they know.

The shipped lookup combines the LLM's log-probability with the smoothed counts'
(models_ml.llm.fusion, models_ml.llm.alignment), so the LLM is only worth what it adds
to them. Trained on the plain transitions it learns the same table the counts are built
from (measured: 300 LoRA steps made the model alone much better and the lookup no better).
The model that complements a count prior p_counts in a product of experts,
p(c | h) ~ p_llm(c | h) * p_counts(c | h), is the one trained towards

    r(c | h) ~ f(c | h) / p_counts(c | h) ** tau,      tau = 1: the product of experts,

f being the training transitions. Maximum likelihood under importance weights
p_counts(c | h) ** -tau reaches that, and weights are what resampling does without
touching the training loop: each history keeps its number of examples (the balance caps
of training_pairs stay as they are) and draws them again in proportion to the weights,
by systematic resampling (deterministic, no seed). Where the counts already predict a
history's moves the resampled examples spread over its observed successors; where
they miss (the moves the back-off does not expect), those moves are repeated.

An example's p_counts leaves its own user out (counts.leave_user_out_probs): a history
seen once would otherwise predict its only move perfectly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FLOOR = 1e-6  # probability floor before the power (a move the counts give nothing)


def weights(p_counts: np.ndarray, tau: float) -> np.ndarray:
    """Importance weight p_counts ** -tau of each example."""
    return np.maximum(np.asarray(p_counts, dtype=np.float64), FLOOR) ** -float(tau)


def resample(histories: Sequence[tuple[int, ...]], w: np.ndarray) -> list[int]:
    """Row indices of the resampled examples: each history's n rows (first-seen order)
    drawn n times in proportion to ``w`` at the points 0.5, 1.5, ..., n - 0.5 of the
    cumulative weights scaled to n (systematic resampling); histories keep their order."""
    rows: dict[tuple[int, ...], list[int]] = {}
    for i, h in enumerate(histories):
        rows.setdefault(tuple(h), []).append(i)
    w = np.asarray(w, dtype=np.float64)
    out: list[int] = []
    for idx in rows.values():
        n = len(idx)
        cum = np.cumsum(w[idx])
        cum = cum * (n / cum[-1])
        picks = np.minimum(np.searchsorted(cum, np.arange(n) + 0.5, side="right"), n - 1)
        out.extend(idx[j] for j in picks)
    return out
