"""Feedback alignment (after Wang et al., "User Feedback Alignment for LLM-powered
Exploration in Large-scale Recommendation Systems"): a second scorer, trained on the
aggregated engagement of (history, candidate cluster) pairs, re-ranks the novelty
model's first n clusters.

Engagement of a novel transition h -> c is what the user did next in c: the positive
events of the run that starts it (novel_transition_examples.next_events). The scorer is
a conditional logit over each history's candidates with features of (h, c): the LLM's
log-probability with one weight per history segment (seen 0, 1-4, 5+ times in train, as
lookup_evaluation cuts them: the LLM may matter where the counts are few), the smoothed
counts' log-probability (alone and times log(1 + how often h was seen), so their weight can grow
with their evidence), the raw count of h -> c (log 1 + n: the plain Markov table's
evidence, which smoothing dilutes on histories seen a few times), the successors of h's first cluster (the counts back off to the
last one only, so this is what they know of the rest of h) alone and mixed half and half
with the counts' (a log-linear score can only say "both"; the mixture says "either"),
popularity and the cosine similarity of c's description to h's. It is fitted on the validation fold of the train
users (the LLM and the counts n_fit it reads have not seen them), each transition
weighted by log(1 + engagement), so pairs users stayed with count more; the final
lookup re-ranks every history's first n clusters by it. Eval never takes part.

The scorer can only order the clusters it is given: the fused first n, or those and the
smoothed counts' first n (:data:`WITH_COUNTS`), whichever the scorer ranks better for
held-out validation users (:func:`cross_fit_scores`, two folds by user).

:data:`COUNT_FEATURES` is the same scorer without the LLM (the `counts_alignment`
ablation, re-ranking the smoothed counts' first n): what the LLM adds is the difference.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from models_ml.counts import rank_order
from models_ml.llm.fusion import FLOOR

# fusion.segments' index (lookup_evaluation's seen segments, cut by var history_seen_bounds:
# by default seen 0, 1-4, 5+ times), the naming the fusion's weights have too
SEGMENTS = ("segment_0", "segment_1", "segment_2")
LLM_FEATURES = tuple(f"log_p_llm_{s}" for s in SEGMENTS)
COUNT_FEATURES = ("log_p_counts", "seen_x_log_p_counts", "log1p_n_history", "log_p_first", "log_p_either", "log_p0",
                  "similarity")
FEATURES = LLM_FEATURES + COUNT_FEATURES
L2 = 1e-2
STEPS = 300
OUTSIDE_SHARE = 1e-6  # of its base probability, a cluster outside the re-ranked candidates keeps (rerank)
TOP1_FLOOR = 1  # histories each cluster answers first, at least, where it is in some history's first n (cover_top1)
# the clusters the scorer may rank: the novelty model's (fused) first m, or those and the
# smoothed counts' first m, whichever predicts held-out validation users better
# (cross_fit_scores): the scorer cannot rank a cluster the candidates leave out
TOP_M, WITH_COUNTS = "top_m", "with_counts"
CV_FOLDS = 2


@dataclass(frozen=True)
class Alignment:
    weights: tuple[float, ...]  # one per FEATURES entry
    validation_loss: float
    transitions: int
    debias: float = 0.0  # gamma: scores x p0 ** -gamma, for balance (fusion.DEBIAS_GRID)
    top1_floor: int = 0  # cover_top1's floor on the final lookup (0: none)
    floor_moves: int = 0  # histories whose first answer the floor changed
    candidates: str = TOP_M  # TOP_M or WITH_COUNTS
    cv_recall: tuple[tuple[str, float], ...] = ()  # cross-fitted validation recall of each candidate set

    def digest(self) -> str:
        key = (tuple(round(w, 6) for w in self.weights), self.debias)
        if self.top1_floor:
            key += (self.top1_floor,)
        if self.candidates != TOP_M:
            key += (self.candidates,)
        return hashlib.sha256(repr(key).encode()).hexdigest()[:8]


def features(p_llm: np.ndarray | None, p_counts: np.ndarray, n_history: np.ndarray, p_first: np.ndarray,
             p0: np.ndarray, seen: np.ndarray, segment: np.ndarray, similarity: np.ndarray) -> np.ndarray:
    """(H, C, F) features of every (history, cluster) pair, in :data:`FEATURES` order
    (:data:`COUNT_FEATURES` only when ``p_llm`` is None). ``n_history``: the raw
    counts of h -> c; ``segment``: each history's index into :data:`SEGMENTS`."""
    b = np.log(np.maximum(p_counts, FLOOR))
    s = np.log1p(np.asarray(seen, dtype=np.float64))[:, None]
    either = np.log(np.maximum(0.5 * (p_counts + p_first), FLOOR))  # a mixture: c may follow either cluster
    cols = [b, s * b, np.log1p(n_history), np.log(np.maximum(p_first, FLOOR)), either, np.broadcast_to(np.log(p0)[None], b.shape),
            similarity]
    if p_llm is not None:
        a = np.log(np.maximum(p_llm, FLOOR))
        seg = np.asarray(segment)[:, None]
        cols = [np.where(seg == i, a, 0.0) for i in range(len(SEGMENTS))] + cols
    return np.stack(cols, axis=-1)


def fit(x: np.ndarray, allowed: np.ndarray, target: np.ndarray, weight: np.ndarray,
        nonnegative: Sequence[int] = ()) -> Alignment:
    """Conditional logit: ``x`` (N, C, F) features, ``allowed`` (N, C) candidates,
    ``target`` (N,) column of the cluster the user went to, ``weight`` (N,).

    The weights of the features ``nonnegative`` (the LLM's log-probabilities) stay >= 0:
    the scorer may trust a model or ignore it, never invert it. A negative weight on a
    few hundred validation transitions is noise fitted, and measured to hurt on held-out
    users (ml-latest-small, histories seen 1-4 times: -0.20 there, 3.5 points of recall@5
    below the scorer without the LLM). The problem is convex, so its constrained optimum
    is the best of the fits that hold a subset of those weights at 0 and leave the rest
    >= 0 (one fit per subset; ties go to the fewer zeros)."""
    size = x.shape[-1]
    best: tuple[np.ndarray, float] | None = None
    for r in range(len(nonnegative) + 1):
        for zero in itertools.combinations(nonnegative, r):
            free = [j for j in range(size) if j not in zero]
            theta = np.zeros(size)
            theta[free], loss = _fit(x[..., free], allowed, target, weight)
            if any(theta[j] < 0 for j in nonnegative):
                continue
            if best is None or loss < best[1] - 1e-12:
                best = (theta, loss)
    return Alignment(tuple(float(v) for v in best[0]), best[1], int(len(target)))


def _fit(x: np.ndarray, allowed: np.ndarray, target: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, float]:
    """The unconstrained fit: (weights, final penalised loss)."""
    xt = torch.tensor(x, dtype=torch.float64)
    mask = torch.tensor(allowed)
    y = torch.tensor(target, dtype=torch.long)
    w = torch.tensor(weight, dtype=torch.float64)
    theta = torch.zeros(x.shape[-1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], lr=0.5, max_iter=STEPS, line_search_fn="strong_wolfe")

    def loss_fn():
        opt.zero_grad()
        logits = (xt @ theta).masked_fill(~mask, float("-inf"))
        nll = -torch.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
        loss = (w * nll).sum() / w.sum() + L2 * (theta**2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():  # callers may run under no_grad (inference)
        opt.step(loss_fn)
        final = float(loss_fn().detach())
    return theta.detach().numpy().astype(np.float64), final


def scores(x: np.ndarray, allowed: np.ndarray, alignment: Alignment, log_p0: np.ndarray | None = None) -> np.ndarray:
    """(H, C) aligned probabilities over each history's candidates (discounted by
    popularity ``log_p0`` times ``alignment.debias`` when given)."""
    logits = x @ np.asarray(alignment.weights)
    if log_p0 is not None:
        logits = logits - alignment.debias * log_p0[None]
    logits = np.where(allowed, logits, -np.inf)
    logits = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def top_mask(probs: np.ndarray, n: int) -> np.ndarray:
    """(H, C) True on each row's first n clusters of nonzero probability (ties by column,
    as the lookups rank)."""
    order = rank_order(probs)[:, :n]
    mask = np.zeros(probs.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask & (probs > 0)


def rerank(base: np.ndarray, aligned: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Probabilities ordering each row's ``candidates`` by ``aligned``: they share
    ``base``'s mass over them in proportion to ``aligned``; every other cluster keeps a
    vanishing share of its ``base`` probability, always below the last candidate's, so
    it ranks below them (the lookup stores the first n)."""
    out = base * OUTSIDE_SHARE
    for i in range(base.shape[0]):
        top = candidates[i] & (base[i] > 0)
        if not top.any():
            continue
        weights = aligned[i, top]
        # no candidate at 0, however little the scorer gives it: it stays a candidate
        weights = np.maximum(weights, weights.max() * FLOOR) if weights.max() > 0 else np.ones(weights.shape)
        out[i, top] = base[i, top].sum() * weights / weights.sum()
        rest = ~top & (base[i] > 0)
        if rest.any():
            out[i, rest] = base[i, rest] * min(OUTSIDE_SHARE, 0.5 * out[i, top].min() / base[i, rest].max())
    return out / out.sum(axis=1, keepdims=True)


def user_folds(user_ids: Sequence, folds: int = CV_FOLDS) -> np.ndarray:
    """Each transition's fold, by a stable hash of its user (a user's moves stay together)."""
    return np.array([int(hashlib.md5(str(u).encode()).hexdigest(), 16) % folds for u in user_ids])


def cross_fit_scores(x: np.ndarray, candidates: np.ndarray, target: np.ndarray, weight: np.ndarray,
                     fold: np.ndarray, nonnegative: Sequence[int] = ()) -> np.ndarray | None:
    """(N, C) scores of each transition's candidates by the scorer fitted on the other
    folds' transitions (those whose target is a candidate), 0 outside the candidates:
    held-out figures, so candidate sets of different sizes compare fairly. None where
    some fold leaves nothing to fit on."""
    out = np.zeros(candidates.shape)
    inside = candidates[np.arange(len(target)), target]
    for f in np.unique(fold):
        train, test = (fold != f) & inside, fold == f
        if not train.any():
            return None
        fitted = fit(x[train], candidates[train], target[train], weight[train], nonnegative=nonnegative)
        out[test] = scores(x[test], candidates[test], fitted)
    return out


def cover_top1(probs: np.ndarray, n: int, floor: int = TOP1_FLOOR) -> tuple[np.ndarray, int]:
    """An exposure floor on the first answers. Online a user is sent to the lookup's
    first cluster, so a cluster that is first for no history is never explored, however
    often it is second. Every cluster in some history's first n becomes the first answer
    of at least ``floor`` histories, as far as such histories allow: greedily the cheapest
    promotion first, its cost the log-ratio of the history's current first probability to
    the cluster's, taking only histories whose current first answer keeps its own floor. A
    promoted cluster moves to rank 1 and the rest of the row shifts down, the row's
    probabilities keep their values rank by rank: the first n stay the same set, so recall@n does not move. Returns the
    probabilities and the number of histories changed."""
    out = probs.copy()
    order = rank_order(probs)
    first = order[:, 0].copy()
    n_first = np.bincount(first, minlength=probs.shape[1])
    log_p = np.log(np.maximum(probs, FLOOR))
    in_top = top_mask(probs, n)
    moved = 0
    while True:
        best = None
        for c in np.flatnonzero((n_first < floor) & in_top.any(axis=0)):
            rows = np.flatnonzero(in_top[:, c] & (first != c) & (n_first[first] > floor))
            if rows.size == 0:
                continue
            cost = log_p[rows, first[rows]] - log_p[rows, c]
            i = int(rows[np.argmin(cost)])  # argmin: the first history on ties
            if best is None or cost.min() < best[0] - 1e-12:
                best = (float(cost.min()), int(c), i)
        if best is None:
            return out, moved
        _, c, i = best
        row_order = order[i]
        new_order = np.concatenate([[c], row_order[row_order != c]])
        out[i, new_order] = probs[i, row_order]
        order[i] = new_order
        n_first[first[i]] -= 1
        n_first[c] += 1
        first[i] = c
        moved += 1


def similarity_matrix(desc_emb: np.ndarray, histories: Sequence[tuple[int, ...]], where: dict[int, int]) -> np.ndarray:
    """(H, C) cosine of each cluster's description embedding to the mean of the
    history's (normalised) description embeddings."""
    e = desc_emb / np.linalg.norm(desc_emb, axis=1, keepdims=True)
    h = np.stack([e[[where[c] for c in hist]].mean(axis=0) for hist in histories])
    h = h / np.linalg.norm(h, axis=1, keepdims=True)
    return h @ e.T
