"""Log-linear fusion of the LLM's constrained scores with the count prior: the base the
alignment scorer (models_ml.llm.alignment, the default mechanism) re-ranks, and the
lookup ml.novel_interest_transitions ships under IE_LLM_MECHANISM=fusion.

For a history h and a cluster c outside it,

    s(c | h) = w_b * log p_llm(c | h) + (1 - w_b) * log p_counts(c | h) - gamma * log p0(c),

normalised over the clusters outside h. p_llm is the fine-tuned model's constrained
probability (the lookup stores its first ``lookup_depth`` clusters; the rest of the
mass is spread evenly over the others), p_counts the smoothed count model
(models_ml.counts), p0 add-one popularity. w_b depends on how often train users left h
(the segments of lookup_evaluation: seen 0, 1-4, 5+ times): counts are trusted where
they are many, the LLM's reading of the descriptions where they are few. gamma >= 0
discounts popular clusters, which keeps the top-1 answers spread over the clusters.

Everything is chosen on the validation fold of the train users, which neither the LLM
nor the counts it is fused with (n_fit) have seen: per segment the w_b of
:data:`WEIGHT_GRID` with the best validation recall@5 (MRR breaks ties; segments with
fewer than :data:`MIN_SEGMENT_TRANSITIONS` validation transitions share the overall
best) or one weight for all segments, for each gamma of :data:`DEBIAS_GRID`; among the
choices whose lookup (final counts, every history) has at least as many distinct top-1
clusters as the plain Markov table, the one with the best validation recall (when none
has, the best recall overall, and the shortfall shows in lookup_evaluation). Eval never
takes part.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from models_ml import counts

WEIGHT_GRID = tuple(round(0.1 * i, 1) for i in range(11))
DEBIAS_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
MIN_SEGMENT_TRANSITIONS = 30
FLOOR = 1e-9  # probability floor before the log (a cluster the LLM gives no mass)


@dataclass(frozen=True)
class Fusion:
    segment_bounds: tuple[int, ...]  # histories seen < b0, < b1, ..., >= last times
    llm_weights: tuple[float, ...]  # w per segment
    debias: float  # gamma
    alpha: float  # count smoothing (models_ml.counts)
    beta: float
    validation: dict  # validation figures of llm_only, counts and the fused lookup

    def digest(self) -> str:
        keep = {k: v for k, v in asdict(self).items() if k != "validation"}
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:8]


def llm_matrix(
    rows: pl.DataFrame, histories: Sequence[tuple[int, ...]], cluster_ids: np.ndarray
) -> np.ndarray:
    """(H, C) LLM probabilities from lookup rows (history, next_cluster_id, score): the
    listed clusters keep their scores, the remaining mass is spread evenly over the
    unlisted clusters outside the history; history clusters get 0."""
    where = {int(c): i for i, c in enumerate(cluster_ids)}
    row_of = {tuple(h): i for i, h in enumerate(histories)}
    out = np.zeros((len(histories), len(cluster_ids)))
    listed = np.zeros_like(out, dtype=bool)
    for h, c, s in rows.select("history", "next_cluster_id", "score").iter_rows():
        i = row_of.get(tuple(int(x) for x in h))
        if i is not None:
            out[i, where[int(c)]] = float(s)
            listed[i, where[int(c)]] = True
    for i, h in enumerate(histories):
        free = ~listed[i]
        free[[where[int(c)] for c in h]] = False
        rest = max(1.0 - out[i].sum(), FLOOR)
        if free.any():
            out[i, free] = rest / free.sum()
        out[i, [where[int(c)] for c in h]] = 0.0
    return out


def segments(seen: np.ndarray, bounds: Sequence[int]) -> np.ndarray:
    """Segment index of each history from how often it was seen in train."""
    return np.searchsorted(np.asarray(bounds), seen, side="right")


def fused_probs(
    p_llm: np.ndarray, p_counts: np.ndarray, p0: np.ndarray, seg: np.ndarray,
    llm_weights: Sequence[float], debias: float,
) -> np.ndarray:
    """(H, C) fused probabilities; clusters with 0 in both inputs (the history) stay 0."""
    w = np.asarray(llm_weights)[seg][:, None]
    excluded = (p_llm <= 0) & (p_counts <= 0)
    s = w * np.log(np.maximum(p_llm, FLOOR)) + (1 - w) * np.log(np.maximum(p_counts, FLOOR))
    s = s - debias * np.log(p0)[None]
    s = np.where(excluded, -np.inf, s)
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=1, keepdims=True)


def distinct_top1(probs: np.ndarray) -> int:
    return int(len(np.unique(probs.argmax(axis=1))))


def top1_entropy(probs: np.ndarray) -> float:
    """Entropy of the rows' first answers over the columns, normalised by log(columns):
    1 when every cluster is first equally often (lookup_evaluation's top1_entropy)."""
    share = np.bincount(probs.argmax(axis=1), minlength=probs.shape[1]) / probs.shape[0]
    share = share[share > 0]
    return float(-(share * np.log(share)).sum() / np.log(probs.shape[1]))


def markov_distinct_top1(c: counts.SuccessorCounts, histories: Sequence[tuple[int, ...]]) -> int:
    """Distinct top-1 clusters of the plain Markov table (count_lookups): the history's
    count, then the last cluster's, then popularity, then cluster id."""
    size = len(c.cluster_ids)
    where = c.index
    zeros = np.zeros(size)
    tops = set()
    for h in histories:
        key = np.stack([c.by_history.get(tuple(h), zeros), c.by_last.get(h[-1], zeros), c.overall])
        key[:, [where[int(x)] for x in h]] = -1
        order = np.lexsort((np.arange(size), -key[2], -key[1], -key[0]))
        tops.add(int(order[0]))
    return len(tops)


def choose(
    p_llm_val: np.ndarray, p_counts_val: np.ndarray, p0_fit: np.ndarray, seen_val: np.ndarray,
    targets: Sequence[int], cluster_ids: np.ndarray, bounds: Sequence[int], m: int,
    p_llm_all: np.ndarray, p_counts_all: np.ndarray, p0_all: np.ndarray, seen_all: np.ndarray,
    min_distinct: int, alpha: float, beta: float,
) -> Fusion:
    """The fusion weights (see the module docstring) from the validation transitions
    (``*_val``: one row per transition) and every history (``*_all``, final counts)."""
    seg_val, seg_all = segments(seen_val, bounds), segments(seen_all, bounds)
    n_seg = len(bounds) + 1
    targets = np.asarray(targets)
    best = None
    for gamma in DEBIAS_GRID:
        table = {}
        for w in WEIGHT_GRID:
            probs = fused_probs(p_llm_val, p_counts_val, p0_fit, seg_val, [w] * n_seg, gamma)
            table[w] = counts.ranks_of(probs, cluster_ids, targets)
        overall = max(WEIGHT_GRID, key=lambda w: (counts.comparable(counts.recall_mrr(table[w], m)), -w))
        per_segment = []
        for s in range(n_seg):
            mask = seg_val == s
            if mask.sum() < MIN_SEGMENT_TRANSITIONS:
                per_segment.append(overall)
                continue
            per_segment.append(
                max(WEIGHT_GRID, key=lambda w: (counts.comparable(counts.recall_mrr(table[w][mask], m)), -w)))
        # the per-segment optimum, and every common weight (a more even lookup may need
        # a weight that is not the most accurate one)
        for weights in [tuple(per_segment)] + [(w,) * n_seg for w in WEIGHT_GRID]:
            val_probs = fused_probs(p_llm_val, p_counts_val, p0_fit, seg_val, weights, gamma)
            recall, mrr = counts.score_lookup(val_probs, cluster_ids, targets, m)
            distinct = distinct_top1(fused_probs(p_llm_all, p_counts_all, p0_all, seg_all, weights, gamma))
            key = (distinct >= min_distinct, *counts.comparable((recall, mrr)), distinct, -gamma)
            if best is None or key > best[0]:
                best = (key, list(weights), gamma, recall, mrr, distinct)
    _, weights, gamma, recall, mrr, distinct = best
    llm_only = counts.score_lookup(p_llm_val, cluster_ids, targets, m)
    counts_only = counts.score_lookup(p_counts_val, cluster_ids, targets, m)
    validation = {
        "transitions": int(len(targets)),
        f"fused_recall_at_{m}": recall, "fused_mrr": mrr, "fused_distinct_top1": distinct,
        f"llm_only_recall_at_{m}": llm_only[0], "llm_only_mrr": llm_only[1],
        f"counts_recall_at_{m}": counts_only[0], "counts_mrr": counts_only[1],
        "markov_distinct_top1": min_distinct,
    }
    return Fusion(tuple(int(b) for b in bounds), tuple(float(w) for w in weights), float(gamma),
                  float(alpha), float(beta), validation)
