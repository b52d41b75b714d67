"""The three slate policies for every user, in bounded-memory chunks, through one
code path (one model forward per user chunk):

- ``explore``: the user's last K distinct clusters -> lookup table
  (models_ml.lookup.lookup_candidates) -> the best-ranked suggested cluster the user
  never consumed -> the model's top items inside that cluster (models_ml.items.restrict).
- ``baseline``: the model's unrestricted top items.
- ``popular``: the most positively-consumed items.
Every policy excludes items the user already interacted with (any engagement).

Defined behaviour on awkward input (each has a test):
- a user with interactions but none positive: no sequence to feed the model and no
  history clusters, so ``explore`` and ``baseline`` skip the user (counted in the
  stats); ``popular`` still serves them.
- target cluster with fewer than ``slate_size`` unconsumed items: the slate is shorter
  (ranks 1..m); it is never padded with items from other clusters, which would dilute
  the exploration.
- lookup row naming a cluster with no items at the LLM level: the lookup is stale
  against the clusters, models_ml.lookup.StaleLookupError naming the rows (checked for
  the whole lookup at the level before anything is written).
- user whose history has no lookup row (fewer than K distinct clusters and no k = j rows,
  or a history the lookup lacks) or whose suggested clusters were all consumed already:
  the target falls back to the unconsumed cluster holding the model's best-scoring item
  (``target_source = 'model_fallback'``); a user who consumed every cluster gets no
  explore slate (counted in the stats).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import duckdb
import numpy as np
import polars as pl
import torch

from models_ml import config, tables
from models_ml import warehouse as wh
from models_ml.items import seqrec
from models_ml.items.restrict import NO_CLUSTER, ClusterIndex, popularity_key, restricted_topk
from models_ml.items.sequences import PAD, Catalog, UserSequences, from_rows, mask_rows, sequences_from_frame
from models_ml.lookup import LOOKUP_SOURCE, lookup_candidates

FALLBACK_SOURCE = "model_fallback"
POPULAR_VERSION = "popularity"  # model_version of the popular policy's rows

@dataclass(frozen=True)
class Target:
    """The cluster an explore slate is restricted to, and where it came from."""

    cluster_id: int
    source: str  # LOOKUP_SOURCE or FALLBACK_SOURCE
    lookup_rank: int | None = None  # rank of the cluster in the user's lookup rows
    lookup_score: float | None = None


RECOMMENDATION_SCHEMA = tables.schema(config.RECOMMENDATIONS)


# ---- inputs ----------------------------------------------------------------------


@dataclass(frozen=True)
class RankingData:
    """Everything ranking needs, for all users or a subset, in the model's catalog order."""

    catalog: Catalog
    item_cluster: np.ndarray  # (n_items + 1,) cluster id at the level; NO_CLUSTER at PAD
    users: tuple[str, ...]  # users with any interaction
    positives: UserSequences  # positive items, distinct, oldest first; same user order (may be empty)
    consumed: UserSequences  # every interacted item; same user order
    consumed_clusters: list[frozenset[int]]  # clusters of positive items per user
    popular_counts: np.ndarray  # (n_items + 1,) positive interactions per item, all users
    level: int


def load_ranking_data(
    con: duckdb.DuckDBPyConnection, catalog: Catalog, level: int, user_ids: list[str] | None = None
) -> RankingData:
    """Read interactions (positivity from stg_interactions), item clusters and popularity."""
    where, params = ("where user_id in (select unnest(?))", [user_ids]) if user_ids is not None else ("", [])
    events = wh.query(
        con,
        f"select user_id, item_id, event_ts, is_positive from {config.STG_INTERACTIONS} {where}",
        params,
    )
    counts_df = wh.query(
        con, f"select item_id, count(*) as n from {config.STG_INTERACTIONS} where is_positive group by item_id"
    )
    item_clusters = wh.query(
        con, f"select item_id, cluster_id from {config.ITEM_CLUSTERS} where level = ?", [level]
    )
    return build_ranking_data(catalog, events, counts_df, item_clusters, level)


def build_ranking_data(
    catalog: Catalog, events: pl.DataFrame, counts: pl.DataFrame, item_clusters: pl.DataFrame, level: int
) -> RankingData:
    idx = catalog.index_frame()
    ic = idx.join(item_clusters, on="item_id", how="left")
    missing = ic.filter(pl.col("cluster_id").is_null())
    if missing.height:
        raise ValueError(
            f"{config.ITEM_CLUSTERS} has no level-{level} cluster for {missing.height} items of the "
            f"ranker's catalog, e.g. {missing['item_id'].head(5).to_list()}; re-materialize the clusters "
            "and the ranker"
        )
    item_cluster = np.full(catalog.n_items + 1, NO_CLUSTER, dtype=np.int64)
    item_cluster[ic["item_idx"].to_numpy()] = ic["cluster_id"].to_numpy()

    src = config.STG_INTERACTIONS
    consumed = sequences_from_frame(events.select("user_id", "item_id", "event_ts"), catalog, source=src)
    pos = sequences_from_frame(
        events.filter(pl.col("is_positive")).select("user_id", "item_id", "event_ts"), catalog, source=src
    )
    # Align positives to the user order of `consumed` (users without positives: empty rows).
    where = pos.position()
    rows = [pos.row(where[u]) if u in where else np.zeros(0, dtype=np.int64) for u in consumed.user_ids]
    positives = from_rows(consumed.user_ids, rows)
    consumed_clusters = [frozenset(item_cluster[r].tolist()) for r in rows]

    popular = np.zeros(catalog.n_items + 1, dtype=np.int64)
    if counts.height:
        ci = counts.join(idx, on="item_id", how="left")
        unknown = ci.filter(pl.col("item_idx").is_null())
        if unknown.height:
            raise ValueError(f"{src}: positive interactions with items missing from the ranker's catalog: "
                             f"{unknown['item_id'].head(5).to_list()}; re-materialize the ranker")
        popular[ci["item_idx"].to_numpy()] = ci["n"].to_numpy()
    return RankingData(catalog, item_cluster, consumed.user_ids, positives, consumed, consumed_clusters, popular, level)


def choose_targets(candidates: pl.DataFrame, data: RankingData) -> dict[str, Target]:
    """user_id -> the best-ranked lookup suggestion the user never consumed (positively)."""
    out: dict[str, Target] = {}
    where = {u: i for i, u in enumerate(data.users)}
    for user_id, rank, cluster, score in candidates.select("user_id", "rank", "next_cluster_id", "score").iter_rows():
        if user_id in out or user_id not in where:
            continue
        if cluster not in data.consumed_clusters[where[user_id]]:
            out[user_id] = Target(int(cluster), LOOKUP_SOURCE, int(rank), float(score))
    return out


# ---- generation ------------------------------------------------------------------


@dataclass
class GenerationStats:
    users: int = 0
    users_without_positive_history: int = 0
    explore_from_lookup: int = 0
    explore_model_fallback: int = 0
    explore_no_novel_cluster: int = 0
    short_slates: dict[str, int] = field(default_factory=lambda: {p: 0 for p in config.POLICIES})
    rows: dict[str, int] = field(default_factory=lambda: {p: 0 for p in config.POLICIES})

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def _slate_rows(
    policy: str,
    users: list[str],
    values: torch.Tensor,
    indices: torch.Tensor,
    data: RankingData,
    score_of: np.ndarray | None,
    model_version: str,
    targets: list[Target | None] | None = None,
) -> pl.DataFrame:
    valid = torch.isfinite(values).numpy()
    idx = indices.numpy()
    row, col = np.nonzero(valid)
    items = idx[row, col]
    scores = values.numpy()[row, col] if score_of is None else score_of[items]
    tgt = [(t.cluster_id, t.source, t.lookup_rank) if t else (None, None, None)
           for t in (targets if targets is not None else [None] * len(users))]
    return pl.DataFrame(
        {
            "policy": [policy] * len(row),
            "user_id": [users[r] for r in row],
            "rank": col + 1,
            "item_id": data.catalog.ids_of(items),
            "cluster_id": data.item_cluster[items],
            "score": scores.astype(np.float64),
            "target_cluster_id": [tgt[r][0] for r in row],
            "target_source": [tgt[r][1] for r in row],
            "lookup_rank": [tgt[r][2] for r in row],
            "model_version": [model_version] * len(row),
        },
        schema=RECOMMENDATION_SCHEMA,
    )


def iter_recommendations(
    model: seqrec.SASRec,
    model_version: str,
    data: RankingData,
    targets: dict[str, Target],
    slate_size: int,
    chunk_users: int = config.RANKING_CHUNK_USERS,
    policies: tuple[str, ...] = config.POLICIES,
    stats: GenerationStats | None = None,
    target_log: dict[str, Target | None] | None = None,
) -> Iterator[pl.DataFrame]:
    """Yield recommendation rows chunk by chunk: memory is O(chunk_users x n_items).
    ``target_log`` receives each explore user's target (None: no novel cluster left)."""
    unknown = set(policies) - set(config.POLICIES)
    if unknown:
        raise ValueError(f"unknown policies {sorted(unknown)}; expected a subset of {config.POLICIES}")
    stats = stats if stats is not None else GenerationStats()
    index = ClusterIndex.build(data.item_cluster)
    pop = popularity_key(data.popular_counts)
    lengths = data.positives.lengths()
    stats.users += len(data.users)
    stats.users_without_positive_history += int((lengths == 0).sum())
    for lo in range(0, len(data.users), chunk_users):
        rows = np.arange(lo, min(lo + chunk_users, len(data.users)))
        users = [data.users[r] for r in rows]
        if "popular" in policies:
            v, i = restricted_topk(pop[None].expand(len(rows), -1).clone(), slate_size, data.consumed, rows)
            df = _slate_rows("popular", users, v, i, data, data.popular_counts.astype(np.float64), POPULAR_VERSION)
            _count(stats, "popular", df, len(rows), slate_size)
            yield df
        model_rows = rows[lengths[rows] > 0]
        if not len(model_rows) or not ({"explore", "baseline"} & set(policies)):
            continue
        musers = [data.users[r] for r in model_rows]
        scores = seqrec.score_sequences(model, [data.positives.row(r) for r in model_rows])
        # Mask consumed items once; both model policies start from these scores.
        mask_rows(scores, data.consumed, model_rows)
        if "baseline" in policies:
            v, i = restricted_topk(scores.clone(), slate_size)
            df = _slate_rows("baseline", musers, v, i, data, None, model_version)
            _count(stats, "baseline", df, len(model_rows), slate_size)
            yield df
        if "explore" in policies:
            tgt, meta = _explore_targets(scores, musers, model_rows, data, targets, index, stats)
            if target_log is not None:  # the online path explains the choice even for an empty slate
                target_log.update(zip(musers, meta))
            v, i = restricted_topk(scores, slate_size, index=index, target_rows=index.rows_of(tgt))
            df = _slate_rows("explore", musers, v, i, data, None, model_version, meta)
            _count(stats, "explore", df, int((tgt != NO_CLUSTER).sum()), slate_size)
            yield df


def _count(stats: GenerationStats, policy: str, df: pl.DataFrame, n_slates: int, slate_size: int) -> None:
    stats.rows[policy] += df.height
    sizes = df.group_by("user_id").len()["len"] if df.height else pl.Series([], dtype=pl.UInt32)
    stats.short_slates[policy] += int((sizes < slate_size).sum()) + (n_slates - len(sizes))


def _explore_targets(scores, users, rows, data, targets, index: ClusterIndex, stats):
    """Target cluster per user: the lookup's choice, else the unconsumed cluster holding
    the model's best eligible item, else NO_CLUSTER."""
    tgt = np.full(len(users), NO_CLUSTER, dtype=np.int64)
    meta: list[Target | None] = [None] * len(users)
    need = []
    for j, u in enumerate(users):
        if u in targets:
            meta[j] = targets[u]
            tgt[j] = targets[u].cluster_id
            stats.explore_from_lookup += 1
        else:
            need.append(j)
    if need:
        sub = scores[need].clone()
        # Drop items of clusters the user already consumed, then take the best item.
        consumed = torch.zeros(len(need), len(index.clusters), dtype=torch.bool)
        for a, j in enumerate(need):
            cs = [c for c in data.consumed_clusters[rows[j]] if c != NO_CLUSTER]
            if cs:
                consumed[a, torch.from_numpy(np.searchsorted(index.clusters, cs))] = True
        sub.masked_fill_(consumed[:, index.item_pos], float("-inf"))
        sub[:, PAD] = float("-inf")
        best_v, best_i = sub.max(dim=1)
        for a, j in enumerate(need):
            if torch.isfinite(best_v[a]):
                c = int(data.item_cluster[int(best_i[a])])
                tgt[j] = c
                meta[j] = Target(c, FALLBACK_SOURCE)
                stats.explore_model_fallback += 1
            else:
                stats.explore_no_novel_cluster += 1
    return tgt, meta


def write_recommendations(con: duckdb.DuckDBPyConnection, chunks: Iterator[pl.DataFrame]) -> int:
    """Stage every chunk, then swap ml.recommendations in atomically."""
    n = 0
    with wh.staged_table(con, config.RECOMMENDATIONS) as stage:
        wh.append_to_stage(con, stage, pl.DataFrame(schema=RECOMMENDATION_SCHEMA), create=True)
        for df in chunks:
            if df.height:
                wh.append_to_stage(con, stage, df)
                n += df.height
    return n


def generate_all(
    con: duckdb.DuckDBPyConnection,
    loaded: seqrec.LoadedModel,
    slate_size: int,
    level: int | None = None,
    history_len: int | None = None,
    chunk_users: int = config.RANKING_CHUNK_USERS,
) -> GenerationStats:
    """All three policies for every user into ml.recommendations (one atomic swap)."""
    level = config.llm_level() if level is None else level
    history_len = config.history_len() if history_len is None else history_len
    data = load_ranking_data(con, loaded.catalog, level)
    targets = choose_targets(lookup_candidates(con, level, history_len), data)
    stats = GenerationStats()
    write_recommendations(
        con,
        iter_recommendations(loaded.model, loaded.model_version, data, targets, slate_size, chunk_users, stats=stats),
    )
    return stats


