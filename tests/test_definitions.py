"""The Dagster code location loads, with the documented groups and a single-writer executor."""

from __future__ import annotations

from dagster import AssetKey

from orchestration import defs


def _groups() -> dict[AssetKey, str]:
    graph = defs.resolve_asset_graph()
    return {key: graph.get(key).group_name for key in graph.get_all_asset_keys()}


def test_foundation_assets_and_groups():
    groups = _groups()
    assert groups[AssetKey(["raw", "interactions"])] == "ingestion"
    assert groups[AssetKey(["raw", "items"])] == "ingestion"
    assert groups[AssetKey(["raw", "rejected_rows"])] == "ingestion"
    assert groups[AssetKey(["ml", "clusters"])] == "clusters"
    assert groups[AssetKey(["ml", "item_clusters"])] == "clusters"
    for model in ("stg_interactions", "user_cluster_sequences", "novel_transition_examples", "training_pairs", "uci_at_n"):
        assert groups[AssetKey([model])] == "warehouse", model


def test_dbt_sources_are_linked_to_python_assets():
    graph = defs.resolve_asset_graph()
    upstream = graph.get(AssetKey(["stg_interactions"])).parent_keys
    assert AssetKey(["raw", "interactions"]) in upstream
    assert AssetKey(["ml", "item_clusters"]) in graph.get(AssetKey(["stg_item_clusters"])).parent_keys


def test_executor_is_in_process():
    # DuckDB allows one writer process: every step must share the run's process.
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.executor_def.name == "in_process"
