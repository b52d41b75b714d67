"""The novel-interest lookup as serving reads it: no model runs, only warehouse reads.

A user's history is their last K distinct clusters at the LLM level (oldest first; a
cluster's position is its most recent visit, as dbt's ``ie_last_distinct`` defines it).
:func:`lookup_candidates` joins the histories of many users to the lookup table
(ml.novel_interest_transitions) in one query; :func:`next_interests` is the same for one
user, with the fallbacks below. The explore policy of the item layer
(models_ml.items.policies) reads :func:`lookup_candidates` and adds its own item-model
fallback.

Fallbacks (the ``source`` column says which one served the user):
- ``lookup``: the user has K distinct clusters and the lookup has the history.
- ``lookup_k<j>``: the user has only j < K distinct clusters (j >= 1) and the lookup
  also holds rows for k = j at this level (e.g. a K = 1 table materialised with
  IE_K=1): those rows for the user's j clusters.
- ``popularity``: otherwise (no positive history yet, or no k = j rows): the clusters
  most often reached by a novel transition (train split of novel_transition_examples)
  that the user has not consumed (models_ml.llm.evaluation.popular_novel_clusters);
  score = share of those transitions among the returned clusters' candidates.

Errors: an unknown user (:class:`UnknownUserError`), a missing lookup table, a lookup
row naming a cluster without items (:class:`StaleLookupError`), or a user with K
clusters whose history the lookup lacks raise with a message saying what to run.
"""

from __future__ import annotations

import duckdb
import polars as pl

from models_ml import config
from models_ml import warehouse as wh
from models_ml.llm.evaluation import popular_novel_clusters

LOOKUP_SOURCE = "lookup"
POPULARITY_SOURCE = "popularity"

RESULT_SCHEMA = {
    "user_id": pl.String,
    "rank": pl.Int32,
    "cluster_id": pl.Int32,
    "description": pl.String,
    "score": pl.Float64,
    "history": pl.List(pl.Int32),
    "source": pl.String,
    "model_version": pl.String,
}


class UnknownUserError(LookupError):
    """The user has no interactions in the warehouse."""


class StaleLookupError(ValueError):
    """The lookup table names clusters the current clusters no longer have."""


def user_histories(
    con: duckdb.DuckDBPyConnection, level: int, history_len: int, user_ids: list[str] | None = None
) -> pl.DataFrame:
    """Each user's last ``history_len`` distinct clusters, oldest first: user_id, history."""
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
        [level, *params, history_len],
    )


def validate_lookup(con: duckdb.DuckDBPyConnection, level: int) -> None:
    """Every lookup row at ``level`` must name a cluster that has items at that level."""
    if not wh.table_exists(con, config.NOVEL_INTEREST_TRANSITIONS):
        raise LookupError(
            f"{config.NOVEL_INTEREST_TRANSITIONS} does not exist: materialize the llm asset group first "
            "(serving and the explore policy read the lookup table)"
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


def lookup_candidates(
    con: duckdb.DuckDBPyConnection, level: int, history_len: int, user_ids: list[str] | None = None
) -> pl.DataFrame:
    """Users' last K distinct clusters joined to the lookup table, best rank first.
    Columns: user_id, history, rank, next_cluster_id, score, model_version, source."""
    validate_lookup(con, level)
    hist = user_histories(con, level, history_len, user_ids)
    con.register("__ie_histories", hist.to_arrow())
    try:
        return wh.query(
            con,
            f"""
            select h.user_id, h.history, t.rank::integer as rank, t.next_cluster_id::bigint as next_cluster_id,
                   t.score::double as score, t.model_version,
                   -- a user with j < K distinct clusters matches the k = j rows when the lookup has them
                   case when len(h.history) = ? then '{LOOKUP_SOURCE}'
                        else '{LOOKUP_SOURCE}_k' || len(h.history) end as source
            from __ie_histories h
            join {config.NOVEL_INTEREST_TRANSITIONS} t
              on t.level = ? and t.k = len(h.history) and t.history::bigint[] = h.history
            order by h.user_id, t.rank
            """,
            [history_len, level],
        )
    finally:
        con.unregister("__ie_histories")


def next_interests(
    user_id: str,
    con: duckdb.DuckDBPyConnection | None = None,
    level: int | None = None,
    history_len: int | None = None,
    m: int | None = None,
) -> pl.DataFrame:
    """Up to ``m`` novel clusters for ``user_id`` (columns: :data:`RESULT_SCHEMA`);
    ``m`` None: as many as the lookup stores."""
    level = config.llm_level() if level is None else level
    history_len = config.history_len() if history_len is None else history_len
    m = config.llm_top_m() if m is None else m
    if con is None:
        with wh.connect(read_only=True) as own:
            return next_interests(user_id, own, level, history_len, m)
    user_id = str(user_id)
    known = con.execute(f"select count(*) from {config.STG_INTERACTIONS} where user_id = ?", [user_id]).fetchone()[0]
    if not known:
        raise UnknownUserError(f"user {user_id!r} has no interactions in {config.STG_INTERACTIONS}")
    rows = lookup_candidates(con, level, history_len, [user_id])
    if m is not None:
        rows = rows.filter(pl.col("rank") <= m)
    hist = user_histories(con, level, history_len, [user_id])
    history = [int(c) for c in hist["history"][0]] if hist.height else []
    if rows.height:
        described = rows.rename({"next_cluster_id": "cluster_id"}).join(
            _descriptions(con, level), on="cluster_id", how="left"
        )
        return _result(user_id, described, history, rows["source"][0])
    if len(history) == history_len:
        raise LookupError(
            f"{config.NOVEL_INTEREST_TRANSITIONS} has no rows for level {level}, history {history} of user "
            f"{user_id!r}: the lookup is stale against {config.CLUSTERS}; re-run the llm assets"
        )
    return _result(user_id, _popular(con, user_id, level, m), history, POPULARITY_SOURCE)


def _descriptions(con, level: int) -> pl.DataFrame:
    return wh.query(
        con, f"select cluster_id::bigint as cluster_id, description from {config.CLUSTERS} where level = ?", [level]
    )


def _popular(con, user_id: str, level: int, m: int) -> pl.DataFrame:
    counts = wh.query(
        con,
        f"""
        select next_cluster_id, count(*) as n from {config.NOVEL_TRANSITION_EXAMPLES}
        where level = ? and split = 'train' group by 1
        """,
        [level],
    )
    consumed = wh.query(
        con,
        f"select distinct cluster_id from {config.USER_CLUSTER_SEQUENCES} where user_id = ? and level = ?",
        [user_id, level],
    )["cluster_id"].to_list()
    described = _descriptions(con, level)
    ranked = popular_novel_clusters(
        dict(counts.iter_rows()), described["cluster_id"].to_list(), exclude=consumed
    )
    total = sum(n for _, n in ranked)
    top = ranked[:m] if m is not None else ranked
    return pl.DataFrame(
        {
            "rank": list(range(1, len(top) + 1)),
            "cluster_id": [c for c, _ in top],
            "score": [n / total if total else None for _, n in top],
            "model_version": [None] * len(top),
        },
        schema={"rank": pl.Int32, "cluster_id": pl.Int64, "score": pl.Float64, "model_version": pl.String},
    ).join(described, on="cluster_id", how="left", maintain_order="left")


def _result(user_id: str, rows: pl.DataFrame, history: list[int], source: str) -> pl.DataFrame:
    out = rows.with_columns(
        pl.lit(user_id).alias("user_id"),
        pl.lit(history, dtype=pl.List(pl.Int32)).alias("history"),
        pl.lit(source).alias("source"),
    )
    return out.select([pl.col(c).cast(t) for c, t in RESULT_SCHEMA.items()]).sort("rank")
