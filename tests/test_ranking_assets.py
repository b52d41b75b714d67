"""The ranking group materialized by Dagster (ranker -> recommendations -> dbt
exploration_metrics) on the hand-made warehouse of ranking_fixtures."""

from __future__ import annotations

from pathlib import Path

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


def test_ranking_group_materializes(env, monkeypatch):
    # two epochs on six users need not beat popularity: the gate's rule off here, on below
    monkeypatch.setenv("IE_GATE_NDCG_MARGIN", "-1")
    result = materialize(
        [ranking_assets.ranker_evaluation, ranking_assets.ranker_refresh_gate, ranking_assets.recommendations,
         ranking_assets.ranking_dbt],
        resources={"warehouse": WarehouseResource(database=str(env)), "dbt": dbt_cli_resource()},
    )
    assert result.success
    (gate,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "refresh_gate"]
    assert gate.passed
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
        values = dict(ev.filter(pl.col("metric") == "ndcg@10").select("model", "value").rows())
        assert gate.metadata["ndcg_at_10"].value == values["sasrec"]
        assert gate.metadata["popularity_ndcg_at_10"].value == values["popularity"]
        recs = wh.read_table(con, config.RECOMMENDATIONS)
        assert recs.group_by("policy").agg(pl.col("rank").max())["rank"].max() == 3  # IE_SLATE_K
        metrics = wh.read_table(con, config.EXPLORATION_METRICS)
    assert set(metrics["policy"]) == {"explore", "baseline", "popular"}
    assert metrics.filter((pl.col("policy") == "explore") & (pl.col("metric") == "novelty_rate"))["value"].item() == 1.0
    assert AssetKey(["exploration_metrics"]) in meta

    # Dagster's standard keys: the whole table's row count, typed and described columns,
    # and the warehouse file each table was written to
    assert evaluation["dagster/row_count"].value == 4 == ev.height
    assert recs_meta["dagster/row_count"].value == recs.height
    schema = {c.name: (c.type, c.description) for c in recs_meta["dagster/column_schema"].schema.columns}
    assert schema["rank"] == ("INTEGER", "Position in the slate, from 1.")
    assert schema["cluster_id"][0] == "BIGINT" and list(schema)[:2] == ["policy", "user_id"]
    mart = meta[AssetKey(["exploration_metrics"])]
    assert mart["dagster/row_count"].value == metrics.height
    mart_columns = {c.name: c for c in mart["dagster/column_schema"].schema.columns}
    assert mart_columns["value"].type.upper() == "DOUBLE" and mart_columns["policy"].type.upper() == "VARCHAR"
    assert all(c.description for c in mart_columns.values()), [c.name for c in mart_columns.values() if not c.description]
    # the training curve: a PNG next to the model, embedded in the asset's page
    png = Path(evaluation["training_curve_path"].value)
    assert png.parent == Path(evaluation["model_path"].value).parent and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert evaluation["training_curve"].value.startswith("![SASRec training curve](data:image/png;base64,iVBORw0KGgo")
    assert isinstance(evaluation["sasrec_ndcg@10"].value, float)
    for m in (evaluation, recs_meta, mart):
        assert m["warehouse"].value == str(env.resolve())
        assert m["source"].value == "demo"


def test_ranker_below_the_gate_does_not_refresh_the_slates(env, monkeypatch):
    # NDCG@10 lies in [0, 1], so no ranker is 1.0 above popularity: the gate must fail
    monkeypatch.setenv("IE_GATE_NDCG_MARGIN", "1")
    result = materialize(
        [ranking_assets.ranker_evaluation, ranking_assets.ranker_refresh_gate, ranking_assets.recommendations],
        resources={"warehouse": WarehouseResource(database=str(env))},
        raise_on_error=False,
    )
    assert not result.success
    (gate,) = result.get_asset_check_evaluations()
    assert not gate.passed and "not above popularity's" in gate.description and "+1.0000" in gate.description
    assert {e.asset_key for e in result.get_asset_materialization_events()} == {AssetKey(["ml", "ranker_evaluation"])}
    with wh.connect(env, read_only=True) as con:
        assert not wh.table_exists(con, config.RECOMMENDATIONS)
