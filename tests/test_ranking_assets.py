"""The ranking group materialized by Dagster (ranker -> recommendations -> dbt
exploration_metrics) on the hand-made warehouse of ranking_fixtures."""

from __future__ import annotations

import polars as pl
import pytest
from dagster import AssetKey, materialize

import ranking_fixtures as fx
from models_ml import config
from models_ml import warehouse as wh
from orchestration.assets import ranking as ranking_assets
from orchestration.dbt import dbt_cli_resource
from orchestration.resources import WarehouseResource


@pytest.fixture()
def env(tmp_path, monkeypatch):
    db = fx.build_warehouse(tmp_path)
    monkeypatch.setenv("DUCKDB_DATABASE", str(db))
    monkeypatch.setenv("IE_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("IE_SEQREC_EPOCHS", "2")
    monkeypatch.setenv("IE_SLATE_K", "3")
    return db


def test_ranking_group_materializes(env):
    result = materialize(
        [ranking_assets.ranker_evaluation, ranking_assets.recommendations, ranking_assets.ranking_dbt],
        resources={"warehouse": WarehouseResource(database=str(env)), "dbt": dbt_cli_resource()},
    )
    assert result.success
    meta = {e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()}
    evaluation = meta[AssetKey(["ml", "ranker_evaluation"])]
    assert set(evaluation) >= {"sasrec_hr@10", "sasrec_ndcg@10", "popularity_hr@10", "popularity_ndcg@10", "model_path"}
    assert evaluation["eval_users"].value == 5  # users with >= 2 positives: u1 u2 u4 u5 u6
    recs_meta = meta[AssetKey(["ml", "recommendations"])]
    assert recs_meta["users_without_positive_history"].value == 1
    assert recs_meta["explore_target_from_lookup"].value == 3
    with wh.connect(env, read_only=True) as con:
        ev = wh.read_table(con, config.RANKER_EVALUATION)
        assert sorted(ev.select("model", "metric").rows()) == [
            ("popularity", "hr@10"), ("popularity", "ndcg@10"), ("sasrec", "hr@10"), ("sasrec", "ndcg@10")]
        recs = wh.read_table(con, config.RECOMMENDATIONS)
        assert recs.group_by("policy").agg(pl.col("rank").max())["rank"].max() == 3  # IE_SLATE_K
        metrics = wh.read_table(con, config.EXPLORATION_METRICS)
    assert set(metrics["policy"]) == {"explore", "baseline", "popular"}
    assert metrics.filter((pl.col("policy") == "explore") & (pl.col("metric") == "novelty_rate"))["value"].item() == 1.0
    assert AssetKey(["exploration_metrics"]) in meta
