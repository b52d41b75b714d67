"""One user's slate online (what `recommend` prints): the same code as the bulk run in
models_ml.items.policies, with the user's history, the chosen novel cluster and why.
The model never sees other users here, and the LLM never runs: only the lookup table.

Errors: an unknown user (:class:`models_ml.lookup.UnknownUserError`); a user with
interactions but none positive asking for ``explore`` or ``baseline``
(:class:`NoPositiveHistoryError`; ``popular`` still serves them); a sequence
recommender whose model_version the warehouse does not record in ml.ranker_evaluation
(:class:`ForeignModelError`: it was trained on another warehouse, or the warehouse was
rebuilt since).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from models_ml import config
from models_ml import warehouse as wh
from models_ml.items import seqrec
from models_ml.items.policies import (
    POPULAR_VERSION,
    RECOMMENDATION_SCHEMA,
    choose_targets,
    iter_recommendations,
    load_ranking_data,
)
from models_ml.lookup import LOOKUP_SOURCE, UnknownUserError, lookup_candidates, user_histories


class NoPositiveHistoryError(ValueError):
    """The user has interactions but none positive: nothing to feed the models."""


class ForeignModelError(RuntimeError):
    """The loaded sequence recommender is not the one this warehouse recorded."""


def check_model_belongs(con: duckdb.DuckDBPyConnection, loaded: seqrec.LoadedModel, model_dir: Path) -> None:
    """Refuse a model whose version ml.ranker_evaluation does not record."""
    if not wh.table_exists(con, config.RANKER_EVALUATION):
        raise LookupError(
            f"{config.RANKER_EVALUATION} does not exist, so the warehouse records no sequence recommender; "
            "materialize the ml/ranker_evaluation asset first"
        )
    recorded = wh.query(con, f"select distinct model_version from {config.RANKER_EVALUATION}")["model_version"]
    if loaded.model_version not in recorded.to_list():
        known = ", ".join(sorted(str(v) for v in recorded.to_list())) or "none"
        raise ForeignModelError(
            f"the sequence recommender at {model_dir} (model_version {loaded.model_version}) does not belong to "
            f"this warehouse, which records {known} in {config.RANKER_EVALUATION}; set IE_MODELS_DIR to this "
            "warehouse's models or re-materialize ml/ranker_evaluation"
        )


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
    slate_size: int | None = None,
    policy: str = "explore",
    con: duckdb.DuckDBPyConnection | None = None,
    model_dir=None,
) -> Recommendation:
    """One user's slate through the same code as the bulk run."""
    if policy not in config.POLICIES:
        raise ValueError(f"policy must be one of {config.POLICIES}, got {policy!r}")
    slate_size = config.slate_size() if slate_size is None else slate_size
    if slate_size < 1:
        raise ValueError(f"slate_size must be >= 1, got {slate_size}")
    if con is None:
        with wh.connect(read_only=True) as own:
            return recommend(user_id, slate_size, policy, own, model_dir)
    level, history_len = config.llm_level(), config.history_len()
    directory = Path(model_dir or config.ranker_dir())
    loaded = _load_cached(directory)
    check_model_belongs(con, loaded, directory)
    data = load_ranking_data(con, loaded.catalog, level, [user_id])
    if not data.users:
        raise UnknownUserError(f"user {user_id!r} has no interactions in {config.RAW_INTERACTIONS}")
    if policy != "popular" and not len(data.positives.row(0)):
        raise NoPositiveHistoryError(
            f"user {user_id!r} has interactions but none positive (engagement >= positive_threshold "
            f"{config.dbt_vars()['positive_threshold']}): the sequence model and the lookup table need a "
            "positive history; use policy='popular'"
        )
    candidates = lookup_candidates(con, level, history_len, [user_id]) if policy == "explore" else None
    targets = choose_targets(candidates, data) if candidates is not None else {}
    chosen: dict = {}  # user_id -> Target | None
    chunks = list(iter_recommendations(loaded.model, loaded.model_version, data, targets, slate_size, policies=(policy,),
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
    hist = user_histories(con, level, history_len, [user_id])
    history = pl.DataFrame({"cluster_id": hist["history"][0].to_list() if hist.height else []}, schema={"cluster_id": pl.Int64})
    history = history.join(clusters, on="cluster_id", how="left", maintain_order="left")
    target = None
    chosen_target = chosen.get(user_id)
    if chosen_target is not None:
        target = {
            "cluster_id": chosen_target.cluster_id,
            "description": clusters.filter(pl.col("cluster_id") == chosen_target.cluster_id)["description"].item(),
            "source": chosen_target.source,
            "lookup_rank": chosen_target.lookup_rank,
            "lookup_score": chosen_target.lookup_score,
        }
    suggestions = None
    if candidates is not None:
        suggestions = (
            candidates.select("rank", pl.col("next_cluster_id").alias("cluster_id"))
            .join(clusters, on="cluster_id", how="left")
            .sort("rank")
        )
    version = POPULAR_VERSION if policy == "popular" else loaded.model_version
    return Recommendation(user_id, policy, items, history, target, version, suggestions)
