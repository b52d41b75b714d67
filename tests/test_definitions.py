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


def test_every_asset_has_its_own_description_and_serializable_metadata():
    graph = defs.resolve_asset_graph()
    keys = sorted(graph.get_all_asset_keys())
    descriptions = {k: graph.get(k).description for k in keys}
    assert all(descriptions.values()), [k for k, d in descriptions.items() if not d]
    shared = {d for d in descriptions.values() if list(descriptions.values()).count(d) > 1}
    assert shared == set()
    # the DbtProject object showed as "dagster_dbt/project: [DbtProject] (unserializable)"
    assert not [k for k in keys if "dagster_dbt/project" in graph.get(k).metadata]


def test_refresh_gates_are_blocking_checks():
    graph = defs.resolve_asset_graph()
    gates = {c.asset_key: c for c in graph.asset_check_keys if c.name == "refresh_gate"}
    assert set(gates) == {AssetKey(["ml", "finetune_history"]), AssetKey(["ml", "ranker_evaluation"])}
    for key in gates.values():
        assert graph.get_check_spec(key).blocking, key


def test_pair_inference_is_partitioned_and_the_union_reads_every_partition():
    from orchestration.materialize import plan

    graph = defs.resolve_asset_graph()
    part, union = AssetKey(["ml", "pair_inference_partitions"]), AssetKey(["ml", "novel_interest_transitions"])
    assert graph.get(part).partitions_def.get_partition_keys() == ["0", "1", "2", "3"]
    assert graph.get(union).partitions_def is None and part in graph.get(union).parent_keys
    # `make demo`: upstream first, one run per partition, then the union and what follows
    steps = plan("*")
    assert [p for _, p in steps] == [None, "0", "1", "2", "3", None]
    assert AssetKey(["ml", "finetune_history"]) in steps[0][0] and union in steps[-1][0]
    assert all(keys == [part] for keys, p in steps if p is not None)
    assert plan("group:ingestion") == [(sorted(k for k, g in _groups().items() if g == "ingestion"), None)]
