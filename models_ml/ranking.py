"""Restricted ranking (the item level of the hierarchy, DESIGN section 6) and the three
slate policies, for every user in bounded-memory chunks and for one user online.

Policies (same code path, one model forward per user chunk):
- ``explore``: the user's last K distinct clusters -> lookup table -> the best-ranked
  suggested cluster the user never consumed -> the model's top-k inside that cluster.
- ``baseline``: the model's unrestricted top-k.
- ``popular``: the most positively-consumed items.
Every policy excludes items the user already interacted with (any engagement).

Defined behaviour on awkward input (each has a test):
- unknown user (no row in raw.interactions): :class:`UnknownUserError`.
- a user with interactions but none positive: no sequence to feed the model and no
  history clusters, so ``explore`` and ``baseline`` raise :class:`NoPositiveHistoryError`
  online and skip the user in bulk (counted in the stats); ``popular`` still serves them.
- target cluster with fewer than k unconsumed items: the slate is shorter (ranks 1..m);
  it is never padded with items from other clusters, which would dilute the exploration.
- lookup row naming a cluster with no items at the LLM level: the lookup is stale against
  the clusters, :class:`StaleLookupError` naming the rows (checked for the whole lookup at
  the level and K before anything is written).
- user whose history has no lookup row (fewer than K distinct clusters and no k = j rows,
  or a history the lookup lacks) or whose suggested clusters were all consumed already: the target falls
  back to the unconsumed cluster holding the model's best-scoring item
  (``target_source = 'model_fallback'``); a user who consumed every cluster gets no explore
  slate (counted in the stats).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import torch

from models_ml import config, seqrec
from models_ml import warehouse as wh
from models_ml.seqrec import PAD, Catalog, UserSequences

NO_CLUSTER = -1  # item_cluster entry for PAD
LOOKUP_SOURCE = "lookup"
FALLBACK_SOURCE = "model_fallback"

RECOMMENDATION_SCHEMA = {
    "policy": pl.String,
    "user_id": pl.String,
    "rank": pl.Int32,
    "item_id": pl.String,
    "cluster_id": pl.Int64,
    "score": pl.Float64,
    "target_cluster_id": pl.Int64,
    "target_source": pl.String,
    "lookup_rank": pl.Int32,
    "model_version": pl.String,
}


class UnknownUserError(LookupError):
    pass


class NoPositiveHistoryError(ValueError):
    pass


class StaleLookupError(ValueError):
    pass


# ---- restricted top-k: the core --------------------------------------------------


@dataclass(frozen=True)
class ClusterIndex:
    """The catalog grouped by cluster, for cluster-first restriction.

    ``members[j]`` lists the item indices of ``clusters[j]`` padded with PAD (whose score
    is always -inf); the extra last row is all PAD and stands for "no target".
    """

    clusters: np.ndarray  # (C,) sorted cluster ids
    members: torch.Tensor  # (C + 1, max cluster size) item indices
    item_pos: torch.Tensor  # (n_items + 1,) row of each item's cluster in `clusters` (0 at PAD)
    item_slot: torch.Tensor  # (n_items + 1,) column of each item in its `members` row

    @classmethod
    def build(cls, item_cluster: np.ndarray) -> ClusterIndex:
        real = np.flatnonzero(item_cluster != NO_CLUSTER)
        clusters, pos = np.unique(item_cluster[real], return_inverse=True)
        sizes = np.bincount(pos, minlength=len(clusters))
        members = np.full((len(clusters) + 1, max(int(sizes.max(initial=0)), 1)), PAD, dtype=np.int64)
        order = np.argsort(pos, kind="stable")  # items of each cluster in catalog order
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        slot = np.arange(len(real)) - np.repeat(starts, sizes)
        members[pos[order], slot] = real[order]
        item_pos = np.zeros(len(item_cluster), dtype=np.int64)
        item_pos[real] = pos
        item_slot = np.zeros(len(item_cluster), dtype=np.int64)
        item_slot[real[order]] = slot
        return cls(clusters, torch.from_numpy(members), torch.from_numpy(item_pos), torch.from_numpy(item_slot))

    def rows_of(self, cluster_ids: np.ndarray) -> torch.Tensor:
        """Row in ``members`` for each cluster id; unknown ids and NO_CLUSTER get the
        all-PAD row (an empty candidate set)."""
        ids = np.asarray(cluster_ids, dtype=np.int64)
        n = len(self.clusters)
        if n == 0:
            return torch.zeros(len(ids), dtype=torch.long)
        j = np.searchsorted(self.clusters, ids).clip(max=n - 1)
        return torch.from_numpy(np.where(self.clusters[j] == ids, j, n))


def restricted_topk(
    scores: torch.Tensor,
    k: int,
    exclude: UserSequences | None = None,
    exclude_rows: np.ndarray | None = None,
    index: ClusterIndex | None = None,
    target_rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k item indices per row after masking.

    - ``exclude``/``exclude_rows``: row i loses the items of sequence ``exclude_rows[i]``
      (default: row i of ``exclude``).
    - ``index``/``target_rows`` (B,): row i keeps only the items of cluster
      ``index.members[target_rows[i]]``. Cluster-first: only those candidates are gathered,
      masked and ranked, O(B x cluster size + consumed) instead of O(B x catalog), and
      ``scores`` is left untouched. Without a target, ``scores`` is masked in place.
    Returns (values, indices), each (B, min(k, candidates)); slots past the eligible
    items hold -inf values (callers cut the slate there).
    """
    if target_rows is None:
        scores[:, PAD] = float("-inf")
        if exclude is not None:
            seqrec.mask_rows(scores, exclude, exclude_rows)
        return torch.topk(scores, min(k, scores.shape[1] - 1), dim=1)
    if index is None:
        raise ValueError("target_rows need a ClusterIndex")
    cand = index.members[target_rows]  # (B, S)
    values = scores.gather(1, cand).masked_fill_(cand == PAD, float("-inf"))
    if exclude is not None:
        r, c = (torch.from_numpy(a) for a in seqrec.row_items(exclude, exclude_rows))
        # a consumed item matters only if it lies in its row's target cluster
        hit = index.item_pos[c] == target_rows[r]
        values[r[hit], index.item_slot[c[hit]]] = float("-inf")
    values, j = torch.topk(values, min(k, cand.shape[1]), dim=1)
    return values, cand.gather(1, j)


def popularity_key(counts: np.ndarray) -> torch.Tensor:
    """Exact float64 key: count first, then lower catalog index, so popular slates and
    their ties are deterministic (torch.topk does not order ties)."""
    n = len(counts)
    key = counts.astype(np.float64) * n + (n - 1 - np.arange(n))
    out = torch.from_numpy(key)
    out[PAD] = float("-inf")
    return out


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
    consumed = seqrec.sequences_from_frame(events.select("user_id", "item_id", "event_ts"), catalog, source=src)
    pos = seqrec.sequences_from_frame(
        events.filter(pl.col("is_positive")).select("user_id", "item_id", "event_ts"), catalog, source=src
    )
    # Align positives to the user order of `consumed` (users without positives: empty rows).
    where = pos.position()
    rows = [pos.row(where[u]) if u in where else np.zeros(0, dtype=np.int64) for u in consumed.user_ids]
    positives = seqrec._csr(consumed.user_ids, rows)
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


def user_histories(con: duckdb.DuckDBPyConnection, level: int, k: int, user_ids: list[str] | None = None) -> pl.DataFrame:
    """Each user's last k distinct clusters (oldest first; a cluster's position is its most
    recent visit, as the dbt macro ie_last_distinct defines it): user_id, history."""
    where, params = ("and user_id in (select unnest(?))", [user_ids]) if user_ids is not None else ("", [])
    return wh.query(
        con,
        f"""
        with visits as (
            select user_id, cluster_id, max(seq_pos) as last_pos
            from {config.USER_CLUSTER_SEQUENCES}
            where level = ? {where}
            group by user_id, cluster_id
        ),
        recent as (
            select *, row_number() over (partition by user_id order by last_pos desc) as recency
            from visits
        )
        select user_id, list(cluster_id::bigint order by last_pos) as history
        from recent
        where recency <= ?
        group by user_id
        """,
        [level, *params, k],
    )


def lookup_candidates(
    con: duckdb.DuckDBPyConnection, level: int, k: int, user_ids: list[str] | None = None
) -> pl.DataFrame:
    """Set-based serving lookup: users' last K distinct clusters joined to the lookup
    table. Columns: user_id, history, rank, next_cluster_id, score, model_version."""
    validate_lookup(con, level)
    hist = user_histories(con, level, k, user_ids)
    con.register("__ie_histories", hist.to_arrow())
    try:
        return wh.query(
            con,
            f"""
            select h.user_id, h.history, t.rank::integer as rank, t.next_cluster_id::bigint as next_cluster_id,
                   t.score::double as score, t.model_version
            from __ie_histories h
            join {config.NOVEL_INTEREST_TRANSITIONS} t
              -- a user with j < K distinct clusters matches k = j rows when the lookup has
              -- them (as models_ml.serving.next_interests does), else the model fallback
              on t.level = ? and t.k = len(h.history) and t.history::bigint[] = h.history
            order by h.user_id, t.rank
            """,
            [level],
        )
    finally:
        con.unregister("__ie_histories")


def validate_lookup(con: duckdb.DuckDBPyConnection, level: int) -> None:
    """Every lookup row at ``level`` must name a cluster that has items at that level."""
    if not wh.table_exists(con, config.NOVEL_INTEREST_TRANSITIONS):
        raise LookupError(
            f"{config.NOVEL_INTEREST_TRANSITIONS} does not exist: the explore policy needs the LLM lookup "
            "table; materialize the llm assets first"
        )
    bad = wh.query(
        con,
        f"""
        select t.history, t.rank, t.next_cluster_id
        from {config.NOVEL_INTEREST_TRANSITIONS} t
        where t.level = ?
          and t.next_cluster_id not in (select cluster_id from {config.ITEM_CLUSTERS} where level = ?)
        order by t.next_cluster_id, t.rank
        """,
        [level, level],
    )
    if bad.height:
        raise StaleLookupError(
            f"{config.NOVEL_INTEREST_TRANSITIONS}: {bad.height} rows at level {level} point at clusters "
            f"with no items in {config.ITEM_CLUSTERS}, e.g. (history, rank, next_cluster_id) {bad.head(5).rows()}; "
            "the lookup is stale against the clusters: re-run the LLM assets"
        )


def choose_targets(candidates: pl.DataFrame, data: RankingData) -> dict[str, tuple[int, int, float]]:
    """user_id -> (cluster_id, lookup rank, lookup score): the best-ranked suggestion the
    user never consumed (positively)."""
    out: dict[str, tuple[int, int, float]] = {}
    where = {u: i for i, u in enumerate(data.users)}
    for user_id, rank, cluster, score in candidates.select("user_id", "rank", "next_cluster_id", "score").iter_rows():
        if user_id in out or user_id not in where:
            continue
        if cluster not in data.consumed_clusters[where[user_id]]:
            out[user_id] = (int(cluster), int(rank), float(score))
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
    targets: list[tuple[int | None, str | None, int | None]] | None = None,
) -> pl.DataFrame:
    valid = torch.isfinite(values).numpy()
    idx = indices.numpy()
    row, col = np.nonzero(valid)
    items = idx[row, col]
    scores = values.numpy()[row, col] if score_of is None else score_of[items]
    tgt = targets if targets is not None else [(None, None, None)] * len(users)
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
    targets: dict[str, tuple[int, int, float]],
    k: int,
    chunk_users: int = 512,
    policies: tuple[str, ...] = config.POLICIES,
    stats: GenerationStats | None = None,
    target_log: dict | None = None,
) -> Iterator[pl.DataFrame]:
    """Yield recommendation rows chunk by chunk: memory is O(chunk_users x n_items)."""
    unknown = set(policies) - set(config.POLICIES)
    if unknown:
        raise ValueError(f"unknown policies {sorted(unknown)}; expected a subset of {config.POLICIES}")
    stats = stats if stats is not None else GenerationStats()
    index = ClusterIndex.build(data.item_cluster)
    pop = popularity_key(data.popular_counts)
    pop_version = "popularity"
    lengths = data.positives.lengths()
    stats.users += len(data.users)
    stats.users_without_positive_history += int((lengths == 0).sum())
    for lo in range(0, len(data.users), chunk_users):
        rows = np.arange(lo, min(lo + chunk_users, len(data.users)))
        users = [data.users[r] for r in rows]
        if "popular" in policies:
            v, i = restricted_topk(pop[None].expand(len(rows), -1).clone(), k, data.consumed, rows)
            df = _slate_rows("popular", users, v, i, data, data.popular_counts.astype(np.float64), pop_version)
            _count(stats, "popular", df, len(rows), k)
            yield df
        model_rows = rows[lengths[rows] > 0]
        if not len(model_rows) or not ({"explore", "baseline"} & set(policies)):
            continue
        musers = [data.users[r] for r in model_rows]
        scores = seqrec.score_sequences(model, [data.positives.row(r) for r in model_rows])
        # Mask consumed items once; both model policies start from these scores.
        seqrec.mask_rows(scores, data.consumed, model_rows)
        if "baseline" in policies:
            v, i = restricted_topk(scores.clone(), k)
            df = _slate_rows("baseline", musers, v, i, data, None, model_version)
            _count(stats, "baseline", df, len(model_rows), k)
            yield df
        if "explore" in policies:
            tgt, meta = _explore_targets(scores, musers, model_rows, data, targets, index, stats)
            if target_log is not None:  # the online path explains the choice even for an empty slate
                target_log.update(zip(musers, meta))
            v, i = restricted_topk(scores, k, index=index, target_rows=index.rows_of(tgt))
            df = _slate_rows("explore", musers, v, i, data, None, model_version, meta)
            _count(stats, "explore", df, int((tgt != NO_CLUSTER).sum()), k)
            yield df


def _count(stats: GenerationStats, policy: str, df: pl.DataFrame, n_slates: int, k: int) -> None:
    stats.rows[policy] += df.height
    sizes = df.group_by("user_id").len()["len"] if df.height else pl.Series([], dtype=pl.UInt32)
    stats.short_slates[policy] += int((sizes < k).sum()) + (n_slates - len(sizes))


def _explore_targets(scores, users, rows, data, targets, index: ClusterIndex, stats):
    """Target cluster per user: the lookup's choice, else the unconsumed cluster holding
    the model's best eligible item, else NO_CLUSTER."""
    tgt = np.full(len(users), NO_CLUSTER, dtype=np.int64)
    meta: list[tuple[int | None, str | None, int | None]] = [(None, None, None)] * len(users)
    need = []
    for j, u in enumerate(users):
        if u in targets:
            c, rank, _ = targets[u]
            tgt[j] = c
            meta[j] = (c, LOOKUP_SOURCE, rank)
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
                meta[j] = (c, FALLBACK_SOURCE, None)
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
    k: int,
    level: int | None = None,
    history_k: int | None = None,
    chunk_users: int = 512,
) -> GenerationStats:
    """All three policies for every user into ml.recommendations (one atomic swap)."""
    level = config.llm_level() if level is None else level
    history_k = config.k() if history_k is None else history_k
    data = load_ranking_data(con, loaded.catalog, level)
    targets = choose_targets(lookup_candidates(con, level, history_k), data)
    stats = GenerationStats()
    write_recommendations(
        con, iter_recommendations(loaded.model, loaded.model_version, data, targets, k, chunk_users, stats=stats)
    )
    return stats


# ---- one user (the online path and the CLI) --------------------------------------


@dataclass(frozen=True)
class Recommendation:
    user_id: str
    policy: str
    items: pl.DataFrame  # rank, item_id, title, cluster_id, cluster_description, score
    history: pl.DataFrame  # the user's last K distinct clusters: cluster_id, description (oldest first)
    target: dict | None  # explore: cluster_id, description, source, lookup_rank, lookup_score
    model_version: str
    suggestions: pl.DataFrame | None = None  # explore: the lookup rows for the history (rank, cluster_id, description)

    def explain(self) -> str:
        hist = " -> ".join(f'"{d}" (#{c})' for c, d in self.history.select("cluster_id", "description").iter_rows())
        lines = [f"history clusters (oldest first): {hist or 'none'}"]
        if self.policy == "explore" and self.target is not None:
            t = self.target
            if t["source"] == LOOKUP_SOURCE:
                how = f"lookup table rank {t['lookup_rank']} (score {t['lookup_score']:.3f})"
            elif self.suggestions is not None and self.suggestions.height:
                seen = ", ".join(f'"{d}" (#{c})' for c, d in self.suggestions.select("cluster_id", "description").iter_rows())
                how = f"model fallback: the lookup's suggestions {seen} were all consumed already"
            else:
                how = "model fallback: the lookup table has no row for this history"
            how += "" if t["source"] == LOOKUP_SOURCE else "; the unconsumed cluster of the model's best item"
            lines.append(f"novel cluster chosen: \"{t['description']}\" (#{t['cluster_id']}) via {how}")
        elif self.policy == "explore":
            lines.append("no novel cluster left: the user has consumed every cluster at this level")
        elif self.policy == "baseline":
            lines.append("unrestricted sequence-model top-k (no exploration)")
        elif self.policy == "popular":
            lines.append("most positively-consumed items the user has not interacted with")
        return "\n".join(lines)


def _load_cached(directory: Path) -> seqrec.LoadedModel:
    """Reload only when the saved model changed (repeated API calls in one process)."""
    path = directory / seqrec.MODEL_FILE
    stamp = path.stat().st_mtime_ns if path.exists() else None
    return _load_at(directory, stamp)


@functools.lru_cache(maxsize=2)
def _load_at(directory: Path, stamp: int | None) -> seqrec.LoadedModel:
    return seqrec.load(directory)


def recommend(
    user_id: str,
    k: int | None = None,
    policy: str = "explore",
    con: duckdb.DuckDBPyConnection | None = None,
    model_dir=None,
) -> Recommendation:
    """One user's slate through the same code as the bulk run (the model never sees
    other users here, the LLM never runs)."""
    if policy not in config.POLICIES:
        raise ValueError(f"policy must be one of {config.POLICIES}, got {policy!r}")
    k = config.slate_k() if k is None else k
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if con is None:
        with wh.connect(read_only=True) as own:
            return recommend(user_id, k, policy, own, model_dir)
    level, history_k = config.llm_level(), config.k()
    loaded = _load_cached(Path(model_dir or config.ranker_dir()))
    data = load_ranking_data(con, loaded.catalog, level, [user_id])
    if not data.users:
        raise UnknownUserError(f"user {user_id!r} has no interactions in {config.RAW_INTERACTIONS}")
    if policy != "popular" and not len(data.positives.row(0)):
        raise NoPositiveHistoryError(
            f"user {user_id!r} has interactions but none positive (engagement >= positive_threshold "
            f"{config.dbt_vars()['positive_threshold']}): the sequence model and the lookup table need a "
            "positive history; use policy='popular'"
        )
    candidates = lookup_candidates(con, level, history_k, [user_id]) if policy == "explore" else None
    targets = choose_targets(candidates, data) if candidates is not None else {}
    chosen: dict = {}
    chunks = list(iter_recommendations(loaded.model, loaded.model_version, data, targets, k, policies=(policy,),
                                       target_log=chosen))
    slate = chunks[0] if chunks else pl.DataFrame(schema=RECOMMENDATION_SCHEMA)
    clusters = wh.query(
        con, f"select cluster_id::bigint as cluster_id, description from {config.CLUSTERS} where level = ?", [level]
    )
    titles = wh.query(
        con, f"select item_id, title from {config.RAW_ITEMS} where item_id in (select unnest(?))", [slate["item_id"].to_list()]
    )
    items = (
        slate.join(titles, on="item_id", how="left")
        .join(clusters, on="cluster_id", how="left")
        .rename({"description": "cluster_description"})
        .select("rank", "item_id", "title", "cluster_id", "cluster_description", "score")
        .sort("rank")
    )
    hist = user_histories(con, level, history_k, [user_id])
    history = pl.DataFrame({"cluster_id": hist["history"][0].to_list() if hist.height else []}, schema={"cluster_id": pl.Int64})
    history = history.join(clusters, on="cluster_id", how="left", maintain_order="left")
    target = None
    cluster, source, lookup_rank = chosen.get(user_id, (None, None, None))
    if cluster is not None:
        target = {
            "cluster_id": cluster,
            "description": clusters.filter(pl.col("cluster_id") == cluster)["description"].item(),
            "source": source,
            "lookup_rank": lookup_rank,
            "lookup_score": targets[user_id][2] if user_id in targets else None,
        }
    suggestions = None
    if candidates is not None:
        suggestions = (
            candidates.select("rank", pl.col("next_cluster_id").alias("cluster_id"))
            .join(clusters, on="cluster_id", how="left")
            .sort("rank")
        )
    version = "popularity" if policy == "popular" else loaded.model_version
    return Recommendation(user_id, policy, items, history, target, version, suggestions)
