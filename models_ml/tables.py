"""The one declaration of every table Python writes: its columns in order, their types
and what they mean.

Read by the writers (the polars schemas they cast to before a write), by the Great
Expectations suites (the required columns and their DuckDB types, expectations/suites.py)
and by Dagster (each asset's ``dagster/column_schema``, orchestration/metadata.py). The
dbt marts describe their own columns in their YAML.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from models_ml import config


@dataclass(frozen=True)
class Column:
    name: str
    dtype: pl.DataType
    description: str
    # in the warehouse contract: the table's suite requires it with this type
    required: bool = True


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]

    def schema(self) -> dict[str, pl.DataType]:
        return {c.name: c.dtype for c in self.columns}

    def required(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.required)


_DUCKDB_TYPES = {
    pl.String: "VARCHAR",
    pl.Int32: "INTEGER",
    pl.Int64: "BIGINT",
    pl.Float64: "DOUBLE",
    pl.Boolean: "BOOLEAN",
}


def duckdb_type(dtype: pl.DataType) -> str:
    """The DuckDB type a polars column of ``dtype`` is stored as."""
    if isinstance(dtype, pl.List):
        return duckdb_type(dtype.inner) + "[]"
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMP"
    for base, name in _DUCKDB_TYPES.items():
        if dtype == base:
            return name
    raise ValueError(f"no DuckDB type declared for polars type {dtype}")


def _c(name: str, dtype: pl.DataType, description: str, required: bool = True) -> Column:
    return Column(name, dtype, description, required)


_LEVEL = _c("level", pl.Int32, "Cluster level: 1 = coarse, 2 = fine.")
_K = _c("k", pl.Int32, "History length K.")
_HISTORY = _c("history", pl.List(pl.Int32), "K distinct cluster ids at the level, oldest first.")
_LOOKUP_COLUMNS = (
    _LEVEL,
    _K,
    _HISTORY,
    _c("rank", pl.Int32, "1 = the best novel cluster for the history."),
    _c("next_cluster_id", pl.Int32, "A cluster of the level outside the history."),
    _c("score", pl.Float64, "Score in [0, 1], normalised over the clusters outside the history; never increases with rank."),
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            config.RAW_INTERACTIONS,
            "The source's user-item events that passed validation (one row per event).",
            (
                _c("user_id", pl.String, "User id as the source writes it (integer ids keep their digits)."),
                _c("item_id", pl.String, "Item id; every one is in raw.items."),
                _c("event_ts", pl.Datetime("us"), "Event time, UTC."),
                _c("engagement", pl.Float64, "Rating or watch fraction, >= 0; positive at or above the dbt var positive_threshold."),
            ),
        ),
        Table(
            config.RAW_ITEMS,
            "The source's item catalog: one row per item with the topical text clustering reads.",
            (
                _c("item_id", pl.String, "Item id, unique."),
                _c("title", pl.String, "Display title (clustering never reads it)."),
                _c("text", pl.String, "Topical metadata (genres, decade, tags, ...): what the clusters are built from."),
            ),
        ),
        Table(
            config.RAW_REJECTED_ROWS,
            "Source rows set aside by validation, each with the first rule it broke (README, Input rules).",
            (
                _c("source_file", pl.String, "The file (or generated frame) the row came from."),
                _c("row_number", pl.Int64, "Data row in that file, from 1."),
                _c("reason", pl.String, "Why the row was set aside."),
                _c("raw_row", pl.String, "The row as it was read."),
            ),
        ),
        Table(
            config.CLUSTERS,
            "Interest clusters at two levels (1 = coarse, 2 = fine), each with its topical description and size.",
            (
                _LEVEL,
                _c("cluster_id", pl.Int32, "Cluster id, unique within its level."),
                _c("parent_cluster_id", pl.Int32, "The cluster one level up that holds this one (null at level 1)."),
                _c("description", pl.String, "Up to three topical terms, unique within the level: what the LLM reads and names."),
                _c("n_items", pl.Int32, "Items assigned to the cluster in ml.item_clusters."),
            ),
        ),
        Table(
            config.ITEM_CLUSTERS,
            "The cluster of every item at every level (one row per item and level).",
            (
                _c("item_id", pl.String, "Item id of raw.items."),
                _LEVEL,
                _c("cluster_id", pl.Int32, "The item's cluster at the level (ml.clusters)."),
            ),
        ),
        Table(
            config.FINETUNE_HISTORY,
            "The LoRA fine-tuning curve of every adapter: loss, match rate and eval-sample recall every few steps.",
            (
                _c("model_version", pl.String, "The adapter: a hash of the base model, clusters, training data, prompt and configuration."),
                _LEVEL,
                _K,
                _c("step", pl.Int32, "LoRA optimiser step (0 = the base model, zero-shot)."),
                _c("loss", pl.Float64, "Mean training loss on the answer tokens since the previous point (null at step 0)."),
                _c("match_rate", pl.Float64, "Share of unconstrained generations that are exactly a cluster description."),
                _c("recall_at_1", pl.Float64, "Novel-transition recall@1 on the eval sample (constrained decoding)."),
                _c("recall_at_5", pl.Float64, "Novel-transition recall@5 on the eval sample (constrained decoding)."),
                _c("elapsed_s", pl.Float64, "Training seconds up to this point."),
            ),
        ),
        Table(
            config.NOVEL_INTEREST_TRANSITIONS,
            "The shipped lookup: every history of K distinct clusters -> its best novel clusters, ranked.",
            (
                *_LOOKUP_COLUMNS,
                _c("model_version", pl.String, "The adapter and the weights of the mechanism that built the row."),
                _c("shard", pl.Int32, "The pair-inference shard (histories sharing their first cluster) that computed the row.",
                   required=False),
            ),
        ),
        Table(
            config.POLICY_LOOKUPS,
            "The lookups judged beside the shipped one, in its shape, one block per policy.",
            (
                _c("policy", pl.String, "zero_shot, markov_smoothed, llm_only, llm_fusion, llm_alignment or counts_alignment (the alignment scorer without the LLM)."),
                *_LOOKUP_COLUMNS,
                _c("model_version", pl.String, "The model or count fit the policy's rows came from."),
            ),
        ),
        Table(
            config.RANKER_EVALUATION,
            "Leave-last-out full-catalog metrics of the sequence recommender and of popularity.",
            (
                _c("model", pl.String, "sasrec or popularity."),
                _c("metric", pl.String, "hr@N (hit rate) or ndcg@N of the held-out last positive item."),
                _c("value", pl.Float64, "The metric over the evaluated users."),
                _c("n_users", pl.Int64, "Users evaluated (at least two positive events)."),
                _c("protocol", pl.String, "How it was measured (leave_last_out_full_catalog)."),
                _c("model_version", pl.String, "The trained SASRec model the row describes."),
                _c("best_epoch", pl.Int64, "The epoch kept (best validation NDCG)."),
            ),
        ),
        Table(
            config.RECOMMENDATIONS,
            "Ranked slates for every user under each policy: explore, baseline and popular.",
            (
                _c("policy", pl.String, "explore, baseline or popular."),
                _c("user_id", pl.String, "User id of raw.interactions."),
                _c("rank", pl.Int32, "Position in the slate, from 1."),
                _c("item_id", pl.String, "Recommended item; never one the user consumed positively."),
                _c("cluster_id", pl.Int64, "The item's cluster at the LLM level."),
                _c("score", pl.Float64, "The sequence recommender's score (popularity count for popular)."),
                _c("target_cluster_id", pl.Int64, "explore: the novel cluster the slate is restricted to."),
                _c("target_source", pl.String, "explore: lookup (the lookup table) or model_fallback.", required=False),
                _c("lookup_rank", pl.Int32, "explore: the target's rank in the user's lookup rows.", required=False),
                _c("model_version", pl.String, "The sequence recommender that ranked the slate.", required=False),
            ),
        ),
    )
}


def table(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"{name} is not a table Python writes; declared: {', '.join(TABLES)}") from None


def schema(name: str) -> dict[str, pl.DataType]:
    """The polars schema (column -> type, in order) writers cast ``name`` to."""
    return table(name).schema()
