"""Count models of novel transitions (read from the dbt mart successor_counts): the
smoothed Markov baseline every lookup is judged against, and the count prior the LLM's
scores can be fused with. Also the table the comparison lookups are written to
(ml.policy_lookups: this model, the zero-shot LLM, ...), read by lookup_evaluation.

markov_smoothed: the history's successor counts interpolated with the last cluster's
and with popularity by additive (Dirichlet) back-off,

    p0(c)     = (n_all(c) + 1) / (N_all + C)
    p1(c | b) = (n_last(b, c) + beta * p0(c)) / (N_last(b) + beta)
    p2(c | h) = (n_hist(h, c) + alpha * p1(c | b)) / (N_hist(h) + alpha),   b = last of h,

then the history's own clusters removed and the rest renormalised. alpha and beta are
chosen on the validation fold of the train users: counts of the 'fit' fold (n_fit)
score the validation users' transitions, the best (alpha, beta) by recall@5 (then MRR;
fewer than 5 where a level has too few clusters: selection_m) wins, and the final model
counts every train user (n_train). Eval never takes part.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import polars as pl

from models_ml import config, tables
from models_ml import warehouse as wh

SMOOTHING_GRID = (0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0)
SELECTION_M = 5  # recall@m that picks the weights (MRR breaks ties)
COUNT_COLUMNS = ("n_train", "n_fit")


@dataclass(frozen=True)
class SuccessorCounts:
    """successor_counts at one (level, k) as dense vectors over the level's clusters."""

    cluster_ids: np.ndarray  # (C,) sorted
    by_history: dict[tuple[int, ...], np.ndarray]  # history -> (C,) counts of the next cluster
    by_last: dict[int, np.ndarray]  # last cluster -> (C,)
    overall: np.ndarray  # (C,)

    @property
    def index(self) -> dict[int, int]:
        return {int(c): i for i, c in enumerate(self.cluster_ids)}

    def history_count(self, history: Sequence[int]) -> int:
        """Train transitions that left ``history`` (0 when never seen)."""
        got = self.by_history.get(tuple(int(c) for c in history))
        return int(got.sum()) if got is not None else 0


def counts_from_frame(frame: pl.DataFrame, cluster_ids: Iterable[int], column: str = "n_train") -> SuccessorCounts:
    """``frame``: successor_counts rows (context, history, next_cluster_id, n_train, n_fit)."""
    if column not in COUNT_COLUMNS:
        raise ValueError(f"count column must be one of {COUNT_COLUMNS}, got {column!r}")
    ids = np.array(sorted(int(c) for c in cluster_ids), dtype=np.int64)
    where = {int(c): i for i, c in enumerate(ids)}
    size = len(ids)
    by_history: dict[tuple[int, ...], np.ndarray] = {}
    by_last: dict[int, np.ndarray] = {}
    overall = np.zeros(size)
    for context, history, nxt, n in frame.select("context", "history", "next_cluster_id", column).iter_rows():
        if not n:
            continue
        j = where.get(int(nxt))
        if j is None or any(int(c) not in where for c in history or ()):
            raise ValueError(
                f"{config.SUCCESSOR_COUNTS} row ({context}, history {list(history or [])}, next {nxt}) names a "
                "cluster the level does not have: the counts are older than the clusters; rebuild the dbt marts"
            )
        if context == "history":
            by_history.setdefault(tuple(int(c) for c in history), np.zeros(size))[j] += float(n)
        elif context == "last_cluster":
            by_last.setdefault(int(history[0]), np.zeros(size))[j] += float(n)
        elif context == "all":
            overall[j] += float(n)
    return SuccessorCounts(ids, by_history, by_last, overall)


def read_counts(con: duckdb.DuckDBPyConnection, level: int, k: int) -> pl.DataFrame:
    """The successor_counts rows of one (level, k)."""
    if not wh.table_exists(con, config.SUCCESSOR_COUNTS):
        raise LookupError(f"{config.SUCCESSOR_COUNTS} does not exist; run the dbt assets first")
    # no rows is not an error here: without a validation fold (a tiny warehouse) the
    # lookup never reads the counts and the LLM's rows ship alone; fitting on them fails
    # with the fold named (fit_smoothing)
    return wh.query(
        con,
        f"select context, history, next_cluster_id, n_train, n_fit from {config.SUCCESSOR_COUNTS} "
        "where level = ? and k = ? order by all",
        [level, k],
    )


def _chain(p0: np.ndarray, one: np.ndarray, beta: float, hist: np.ndarray | None = None,
           alpha: float | None = None) -> np.ndarray:
    """p1 of the chain above from one cluster's successor counts ``one``, and with
    ``alpha`` p2 from the history's counts ``hist`` on top (history not yet excluded)."""
    p = (one + beta * p0) / (one.sum() + beta)
    if alpha is not None:
        p = (hist + alpha * p) / (hist.sum() + alpha)
    return p


def _exclude(p: np.ndarray, cols: Sequence[int]) -> np.ndarray:
    p = p.copy()
    p[list(cols)] = 0.0
    return p / p.sum()


def _back_off(counts: SuccessorCounts, histories: Sequence[Sequence[int]], alpha: float | None, beta: float,
              pick: int) -> np.ndarray:
    """(H, C) p1(c | h[pick]) of the chain above, and with ``alpha`` p2(c | h) on top; the
    history's clusters excluded (0) and the rest summing to 1."""
    size = len(counts.cluster_ids)
    where = counts.index
    p0 = popularity_prior(counts)
    zeros = np.zeros(size)
    out = np.empty((len(histories), size))
    for i, h in enumerate(histories):
        h = tuple(int(c) for c in h)
        p = _chain(p0, counts.by_last.get(h[pick], zeros), beta, counts.by_history.get(h, zeros), alpha)
        out[i] = _exclude(p, [where[c] for c in h])
    return out


Move = tuple[object, tuple[int, ...], int]  # (user, history, next cluster)


def leave_user_out_probs(counts: SuccessorCounts, moves: Sequence[Move], examples: Sequence[Move], alpha: float,
                         beta: float) -> np.ndarray:
    """(E,) markov_smoothed p(next | history) of each example (user, history, next), with
    that user's own ``moves`` taken out of every count of the chain (the history's, its
    last cluster's and popularity's). ``moves`` must be the transitions ``counts`` were
    made of (successor_counts.n_fit: the fit fold's), so what an example is scored
    with never includes the example itself, nor anything else its user did."""
    size = len(counts.cluster_ids)
    where = counts.index
    own_hist: dict[tuple, np.ndarray] = {}
    own_last: dict[tuple, np.ndarray] = {}
    own_all: dict[object, np.ndarray] = {}
    for user, h, c in moves:
        h, j = tuple(int(x) for x in h), where[int(c)]
        for table, key in ((own_hist, (user, h)), (own_last, (user, h[-1])), (own_all, user)):
            table.setdefault(key, np.zeros(size))[j] += 1.0
    zeros = np.zeros(size)
    out = np.empty(len(examples))
    for i, (user, h, c) in enumerate(examples):
        h = tuple(int(x) for x in h)
        overall = counts.overall - own_all.get(user, zeros)
        if (overall < 0).any():
            raise ValueError(f"user {user!r} has more moves than the counts hold: moves and counts must be the same fold")
        p0 = _add_one(overall)
        one = counts.by_last.get(h[-1], zeros) - own_last.get((user, h[-1]), zeros)
        hist = counts.by_history.get(h, zeros) - own_hist.get((user, h), zeros)
        p = _exclude(_chain(p0, one, beta, hist, alpha), [where[x] for x in h])
        out[i] = p[where[int(c)]]
    return out


def smoothed_probs(counts: SuccessorCounts, histories: Sequence[Sequence[int]], alpha: float, beta: float) -> np.ndarray:
    """(H, C) markov_smoothed probabilities of the next cluster for each history, the
    history's clusters excluded (0) and the rest summing to 1."""
    return _back_off(counts, histories, alpha, beta, pick=-1)


def history_counts(counts: SuccessorCounts, histories: Sequence[Sequence[int]]) -> np.ndarray:
    """(H, C) how often train users went from each history to each cluster (0 for the
    history's own clusters and for a history never seen)."""
    zeros = np.zeros(len(counts.cluster_ids))
    return np.stack([counts.by_history.get(tuple(int(c) for c in h), zeros) for h in histories]) if len(histories) \
        else np.zeros((0, len(zeros)))


def first_cluster_probs(counts: SuccessorCounts, histories: Sequence[Sequence[int]], beta: float) -> np.ndarray:
    """(H, C) successors of each history's first cluster a, p1(c | a) of the back-off
    chain above (what the counts know of the history beyond its last cluster), the
    history's clusters excluded and the rest renormalised."""
    return _back_off(counts, histories, None, beta, pick=0)


def top_successors(
    c: SuccessorCounts, history: tuple[int, ...], n: int, minus: dict[int, int] | None = None
) -> tuple[tuple[int, int], ...]:
    """The history's ``n`` most frequent successors as (cluster_id, count), most
    frequent first, ties by cluster id; ``minus`` is subtracted first (a user's own moves)."""
    got = c.by_history.get(tuple(history))
    if got is None:
        return ()
    vec = got.copy()
    for cid, k in (minus or {}).items():
        j = c.index.get(int(cid))
        if j is not None:
            vec[j] -= k
    order = np.lexsort((c.cluster_ids, -vec))
    return tuple((int(c.cluster_ids[j]), int(vec[j])) for j in order[:n] if vec[j] > 0)


def ranks_of(probs: np.ndarray, cluster_ids: np.ndarray, targets: Sequence[int]) -> np.ndarray:
    """1-based rank of each row's target under ``probs`` (ties by cluster id, as the
    lookups rank); 0 when the target has probability 0 (excluded)."""
    where = {int(c): i for i, c in enumerate(cluster_ids)}
    col = np.array([where[int(t)] for t in targets])
    p_t = probs[np.arange(len(col)), col]
    better = (probs > p_t[:, None]) | ((probs == p_t[:, None]) & (np.arange(probs.shape[1])[None] < col[:, None]))
    return np.where(p_t > 0, better.sum(axis=1) + 1, 0)


def selection_m(n_clusters: int, k: int) -> int:
    """The m of the recall@m (then MRR) every weight is chosen by on the validation fold:
    SELECTION_M, less where a level has too few clusters outside a K-history for recall@m
    to tell lookups apart (lookup_evaluation reports recall@m only above m + K clusters)."""
    return min(SELECTION_M, max(1, n_clusters - k - 1))


def comparable(figures: tuple[float, ...]) -> tuple[float, ...]:
    """Validation figures as the choices compare them: float noise never breaks a tie."""
    return tuple(round(x, 12) for x in figures)


def score_lookup(probs: np.ndarray, cluster_ids: np.ndarray, targets: Sequence[int], m: int) -> tuple[float, float]:
    """(recall@m, MRR) of ranking each row by ``probs`` against its target."""
    return recall_mrr(ranks_of(probs, cluster_ids, targets), m)


def recall_mrr(ranks: np.ndarray, m: int) -> tuple[float, float]:
    found = ranks > 0
    recall = float(np.mean(found & (ranks <= m))) if len(ranks) else 0.0
    mrr = float(np.mean(np.where(found, 1.0 / np.maximum(ranks, 1), 0.0))) if len(ranks) else 0.0
    return recall, mrr


@dataclass(frozen=True)
class Smoothing:
    alpha: float
    beta: float
    validation_recall: float  # recall@m on the validation fold
    validation_mrr: float
    validation_transitions: int
    m: int  # selection_m of the level and K


def fit_smoothing(
    fit_counts: SuccessorCounts, validation: pl.DataFrame, grid: Sequence[float] = SMOOTHING_GRID
) -> Smoothing:
    """The (alpha, beta) of ``grid`` x ``grid`` that ranks the validation transitions
    (history, next_cluster_id) best under the fit-fold counts."""
    if validation.height == 0:
        raise ValueError(
            "the validation fold has no transitions to choose the smoothing weights on; "
            "raise var validation_share"
        )
    hist = [tuple(int(c) for c in h) for h in validation["history"].to_list()]
    targets = validation["next_cluster_id"].to_list()
    m = selection_m(len(fit_counts.cluster_ids), len(hist[0]))
    best: tuple | None = None
    for alpha, beta in itertools.product(grid, grid):
        recall, mrr = score_lookup(smoothed_probs(fit_counts, hist, alpha, beta), fit_counts.cluster_ids, targets, m)
        key = (*comparable((recall, mrr)), -alpha, -beta)  # ties: the smaller weights
        if best is None or key > best[0]:
            best = (key, Smoothing(alpha, beta, recall, mrr, len(targets), m))
    return best[1]


@dataclass(frozen=True)
class FittedCounts:
    smoothing: Smoothing  # alpha, beta chosen on the validation fold
    fit: SuccessorCounts  # the 'fit' fold's counts (what the weights were chosen with)
    final: SuccessorCounts  # every train user's counts (what the lookups use)

    def version(self, split_mode: str) -> str:
        return f"markov_smoothed:{split_mode}:a{self.smoothing.alpha:g}:b{self.smoothing.beta:g}"


def fitted(count_rows: pl.DataFrame, cluster_ids: Iterable[int], validation: pl.DataFrame) -> FittedCounts:
    """The smoothed count model of one (level, k): weights from the validation fold,
    counts of the fit fold and of every train user."""
    ids = sorted(int(c) for c in cluster_ids)
    fit = counts_from_frame(count_rows, ids, "n_fit")
    return FittedCounts(fit_smoothing(fit, validation), fit, counts_from_frame(count_rows, ids, "n_train"))


def popularity_prior(c: SuccessorCounts) -> np.ndarray:
    """p0: add-one popularity of the next cluster (the last back-off of smoothed_probs)."""
    return _add_one(c.overall)


def _add_one(overall: np.ndarray) -> np.ndarray:
    return (overall + 1.0) / (overall.sum() + len(overall))


def rank_order(probs: np.ndarray) -> np.ndarray:
    """(H, C) each row's columns by descending probability, ties by column: the order
    every lookup ranks in."""
    return np.lexsort((np.broadcast_to(np.arange(probs.shape[1]), probs.shape), -probs), axis=1)


def lookup_rows(
    probs: np.ndarray, cluster_ids: np.ndarray, histories: Sequence[Sequence[int]],
    policy: str, level: int, k: int, model_version: str, depth: int | None = None,
) -> pl.DataFrame:
    """Rows in the policy-lookup shape: the first ``depth`` (default: every) clusters
    outside each history, ranked by ``probs`` (ties by cluster id), score = the
    probability."""
    order = rank_order(probs)
    recs = []
    for i, h in enumerate(histories):
        hs = {int(c) for c in h}
        rank = 0
        for j in order[i]:
            c = int(cluster_ids[j])
            if c in hs:
                continue
            rank += 1
            if depth is not None and rank > depth:
                break
            recs.append((policy, level, k, [int(x) for x in h], rank, c, float(probs[i, j]), model_version))
    return pl.DataFrame(recs, schema=POLICY_LOOKUP_SCHEMA, orient="row")


def write_policy_lookups(con: duckdb.DuckDBPyConnection, blocks: Sequence[pl.DataFrame]) -> int:
    """Replace every policy's rows at the (level, k) the ``blocks`` hold with them,
    keeping other levels and K, atomically: a policy a run no longer computes (the
    zero-shot model turned off) leaves no stale rows behind."""
    rows = pl.concat([b.select([pl.col(c).cast(t) for c, t in POLICY_LOOKUP_SCHEMA.items()]) for b in blocks])
    if rows.height == 0:
        raise ValueError(f"refusing to write an empty block of {config.POLICY_LOOKUPS}")
    return wh.replace_partition(con, config.POLICY_LOOKUPS, rows, by=("level", "k"))


POLICY_LOOKUP_SCHEMA = tables.schema(config.POLICY_LOOKUPS)
