"""Online serving of novel interests: no model runs, only warehouse lookups.

``next_interests(user_id)``: the user's last K distinct clusters at the LLM level
(oldest first, as dbt's ``ie_last_distinct`` defines them), then the lookup rows of
ml.novel_interest_transitions for that history.

Fallbacks (the ``source`` column says which one served the user):
- ``lookup``: the user has K distinct clusters and the lookup has the history.
- ``lookup_k<j>``: the user has only j < K distinct clusters (j >= 1) and the lookup
  also holds rows for k = j at this level (e.g. a K = 1 table materialised with
  IE_K=1): those rows for the user's j clusters.
- ``popularity``: otherwise (no positive history yet, or no k = j rows): the clusters
  most often reached by a novel transition (train split of novel_transition_examples)
  that the user has not consumed; score = share of those transitions among the
  returned clusters' candidates (normalised over the candidate set).

Errors: an unknown user, a missing lookup table, or a user with K clusters whose
history the lookup lacks (the lookup is stale against the clusters) raise with a
message saying what to run.
"""

from __future__ import annotations

import duckdb
import polars as pl

from models_ml import config
from models_ml import warehouse as wh

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
    pass


def user_history(con: duckdb.DuckDBPyConnection, user_id: str, level: int, k: int) -> list[int]:
    """The user's last (up to) k distinct clusters at ``level``, oldest first."""
    from models_ml.ranking import user_histories  # the one home of "last K distinct clusters"

    df = user_histories(con, level, k, [str(user_id)])
    return [int(c) for c in df["history"][0]] if df.height else []


def next_interests(
    user_id: str,
    con: duckdb.DuckDBPyConnection | None = None,
    level: int | None = None,
    k: int | None = None,
    m: int | None = None,
) -> pl.DataFrame:
    """Up to ``m`` novel clusters for ``user_id`` (columns: :data:`RESULT_SCHEMA`)."""
    level = config.llm_level() if level is None else level
    k = config.k() if k is None else k
    m = config.llm_top_m() if m is None else m
    if con is None:
        with wh.connect(read_only=True) as own:
            return next_interests(user_id, own, level, k, m)
    user_id = str(user_id)
    known = con.execute(f"select count(*) from {config.STG_INTERACTIONS} where user_id = ?", [user_id]).fetchone()[0]
    if not known:
        raise UnknownUserError(f"user {user_id!r} has no interactions in {config.STG_INTERACTIONS}")
    if not wh.table_exists(con, config.NOVEL_INTEREST_TRANSITIONS):
        raise LookupError(f"{config.NOVEL_INTEREST_TRANSITIONS} does not exist: materialize the llm asset group first")
    history = user_history(con, user_id, level, k)
    if history:
        rows = _lookup(con, history, level, m)
        if rows.height:
            source = "lookup" if len(history) == k else f"lookup_k{len(history)}"
            return _result(user_id, rows, history, source)
        if len(history) == k:
            raise LookupError(
                f"{config.NOVEL_INTEREST_TRANSITIONS} has no rows for level {level}, history {history} of user "
                f"{user_id!r}: the lookup is stale against {config.CLUSTERS}; re-run the llm assets"
            )
    return _result(user_id, _popular(con, user_id, level, m), history, "popularity")


def _lookup(con, history: list[int], level: int, m: int) -> pl.DataFrame:
    return wh.query(
        con,
        f"""
        select t.rank::integer as rank, t.next_cluster_id::integer as cluster_id, c.description,
               t.score::double as score, t.model_version
        from {config.NOVEL_INTEREST_TRANSITIONS} t
        left join {config.CLUSTERS} c on c.level = t.level and c.cluster_id = t.next_cluster_id
        where t.level = ? and t.k = ? and t.history::integer[] = ?::integer[] and t.rank <= ?
        order by t.rank
        """,
        [level, len(history), history, m],
    )


def _popular(con, user_id: str, level: int, m: int) -> pl.DataFrame:
    return wh.query(
        con,
        f"""
        with consumed as (
            select distinct cluster_id from {config.USER_CLUSTER_SEQUENCES}
            where user_id = ? and level = ?
        ),
        counts as (
            select next_cluster_id as cluster_id, count(*) as n
            from {config.NOVEL_TRANSITION_EXAMPLES}
            where level = ? and split = 'train'
            group by 1
        ),
        candidates as (
            select c.cluster_id, c.description, coalesce(n.n, 0) as n
            from {config.CLUSTERS} c
            left join counts n using (cluster_id)
            where c.level = ? and c.cluster_id not in (select cluster_id from consumed)
        )
        select (row_number() over (order by n desc, cluster_id))::integer as rank,
               cluster_id::integer as cluster_id, description,
               n / nullif(sum(n) over (), 0)::double as score, null::varchar as model_version
        from candidates
        qualify rank <= ?
        order by rank
        """,
        [user_id, level, level, level, m],
    )


def _result(user_id: str, rows: pl.DataFrame, history: list[int], source: str) -> pl.DataFrame:
    out = rows.with_columns(
        pl.lit(user_id).alias("user_id"),
        pl.lit(history, dtype=pl.List(pl.Int32)).alias("history"),
        pl.lit(source).alias("source"),
    )
    return out.select([pl.col(c).cast(t) for c, t in RESULT_SCHEMA.items()])
