"""The GE asset checks in Dagster: blocking checks stop downstream assets when the
lookup table or the recommendations are bad, and their results name the failing
expectation with sample rows."""

from __future__ import annotations

import json

import polars as pl
import pytest
from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    Definitions,
    asset,
    define_asset_job,
    in_process_executor,
    materialize,
)
from ge_fixtures import build_warehouse, frames

from expectations import TABLES
from models_ml import config
from models_ml import warehouse as wh
from orchestration.assets import quality
from orchestration.keys import asset_key
from orchestration.resources import WarehouseResource

NIT, R = config.NOVEL_INTEREST_TRANSITIONS, config.RECOMMENDATIONS
NIT_KEY, R_KEY = AssetKey(["ml", "novel_interest_transitions"]), AssetKey(["ml", "recommendations"])
METRICS_KEY = AssetKey(["toy_exploration_metrics"])


@pytest.fixture(autouse=True)
def pinned_params(monkeypatch):
    # the suites read K, level and threshold from config; pin them to the fixture's world
    for name, value in {"IE_K": "2", "IE_LEVEL": "2", "IE_POSITIVE_THRESHOLD": "4.0", "IE_LLM_TOP_M": "2",
                        "IE_SLATE_K": "2"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)


@pytest.fixture
def db(tmp_path):
    return build_warehouse(tmp_path / "wh.duckdb")


def run_toy_graph(db, lookup: pl.DataFrame, recs: pl.DataFrame, audit: bool = False):
    """lookup -> recommendations -> metrics, each writing the warehouse, with the real
    GE checks on the first two. Returns (result, assets that ran). Without ``audit`` a
    bad table is published, so the checks (the second line of defence, and the only one
    for tables changed outside a write) are what stops the graph."""
    ran: list[str] = []

    @asset(key=NIT_KEY)
    def lookup_table(warehouse: WarehouseResource) -> None:
        ran.append("lookup")
        with warehouse.connect() as con:
            wh.write_table(con, NIT, lookup)

    @asset(key=R_KEY, deps=[NIT_KEY])
    def recommendations(warehouse: WarehouseResource) -> None:
        ran.append("recommendations")
        with warehouse.connect() as con:
            wh.write_table(con, R, recs)

    @asset(key=METRICS_KEY, deps=[R_KEY])
    def metrics() -> None:
        ran.append("metrics")

    result = materialize(
        [lookup_table, recommendations, metrics, quality.ge_asset_check(NIT), quality.ge_asset_check(R)],
        resources={"warehouse": WarehouseResource(database=str(db), audit=audit)},
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    return result, ran


def evaluations(result) -> dict[str, object]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def materialized(result) -> set[AssetKey]:
    return {e.asset_key for e in result.get_asset_materialization_events()}


def failures(evaluation) -> list[dict]:
    return evaluation.metadata["failures"].value


def test_good_data_flows_through(db):
    good = frames()
    result, ran = run_toy_graph(db, good[NIT], good[R])
    assert result.success
    assert ran == ["lookup", "recommendations", "metrics"]
    evals = evaluations(result)
    assert evals[quality.check_name(NIT)].passed and evals[quality.check_name(R)].passed
    assert evals[quality.check_name(NIT)].metadata["expectations_failed"].value == 0
    # a pass shows no empty Markdown / JSON links
    assert not {"failed_expectations", "failures"} & set(evals[quality.check_name(NIT)].metadata)
    assert materialized(result) == {NIT_KEY, R_KEY, METRICS_KEY}


def test_bad_lookup_table_blocks_recommendations(db):
    good = frames()
    # history [0, 1] returns its own cluster 0 as the best novel interest
    bad = good[NIT].with_columns(
        pl.when((pl.col("history") == pl.lit([0, 1], dtype=pl.List(pl.Int32))) & (pl.col("rank") == 1))
        .then(0).otherwise(pl.col("next_cluster_id")).cast(pl.Int32).alias("next_cluster_id")
    )
    marker = good[R].with_columns(pl.lit(-1.0).alias("score"))  # would be written if it ran
    result, ran = run_toy_graph(db, bad, marker)
    assert not result.success
    assert ran == ["lookup"]  # recommendations and metrics never ran
    assert materialized(result) == {NIT_KEY}
    ev = evaluations(result)[quality.check_name(NIT)]
    assert not ev.passed and ev.severity.value == "ERROR"
    failed = {f["check"]: f for f in failures(ev)}
    assert set(failed) == {"next_not_in_history"}
    assert failed["next_not_in_history"]["expectation"] == "expect_table_row_count_to_equal"
    assert [(r["history"], r["rank"], r["next_cluster_id"]) for r in failed["next_not_in_history"]["sample_rows"]] == [
        ([0, 1], 1, 0)
    ]
    assert "next_not_in_history" in ev.metadata["failed_expectations"].value  # markdown shown in the UI
    assert "next_not_in_history" in ev.description
    # the previous recommendations are still there, untouched
    with wh.connect(db) as con:
        assert wh.read_table(con, R)["score"].min() > 0


def test_audit_refuses_a_bad_lookup_before_it_is_published(db):
    """Write, audit, publish: with the resource's audit (the default) the bad lookup
    table fails its suite on the staged table inside the write transaction, so it is
    never published, its asset fails naming the expectation, and nothing downstream runs."""
    good = frames()
    with wh.connect(db) as con:
        before = wh.read_table(con, NIT).sort("level", "k", "history", "rank")
    bad = good[NIT].with_columns(
        pl.when((pl.col("history") == pl.lit([0, 1], dtype=pl.List(pl.Int32))) & (pl.col("rank") == 1))
        .then(0).otherwise(pl.col("next_cluster_id")).cast(pl.Int32).alias("next_cluster_id")
    )
    result, ran = run_toy_graph(db, bad, good[R], audit=True)
    assert not result.success
    assert ran == ["lookup"] and materialized(result) == set()
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.to_string()
    assert "refusing to publish ml.novel_interest_transitions" in message and "next_not_in_history" in message
    with wh.connect(db) as con:
        assert wh.read_table(con, NIT).sort("level", "k", "history", "rank").equals(before)
        assert not con.execute("select count(*) from information_schema.tables where table_name like '__stage_%'").fetchone()[0]


def test_bad_recommendations_block_metrics(db):
    good = frames()
    # u1's baseline slate recommends i1, which u1 rated 5.0
    bad = good[R].with_columns(
        pl.when((pl.col("policy") == "baseline") & (pl.col("user_id") == "u1") & (pl.col("rank") == 1))
        .then(pl.lit("i1")).otherwise(pl.col("item_id")).alias("item_id"),
        pl.when((pl.col("policy") == "baseline") & (pl.col("user_id") == "u1") & (pl.col("rank") == 1))
        .then(0).otherwise(pl.col("cluster_id")).cast(pl.Int32).alias("cluster_id"),
    )
    result, ran = run_toy_graph(db, good[NIT], bad)
    assert ran == ["lookup", "recommendations"]
    assert materialized(result) == {NIT_KEY, R_KEY}
    evals = evaluations(result)
    assert evals[quality.check_name(NIT)].passed
    ev = evals[quality.check_name(R)]
    assert [f["check"] for f in failures(ev)] == ["no_consumed_item_recommended"]
    row = failures(ev)[0]["sample_rows"][0]
    assert (row["policy"], row["user_id"], row["item_id"]) == ("baseline", "u1", "i1")
    json.dumps(failures(ev))  # metadata is plain JSON


# ---- the real Definitions --------------------------------------------------------------


def real_defs():
    from orchestration import defs

    return defs


def test_real_definitions_carry_a_blocking_check_per_suite():
    graph = real_defs().resolve_asset_graph()
    for table in TABLES:
        key = AssetCheckKey(asset_key(table), quality.check_name(table))
        assert key in graph.asset_check_keys, key
        assert graph.get_check_spec(key).blocking, key


# (corruption, expectation that must fail) per gated table
REAL_GRAPH_CASES = {
    config.RAW_ITEMS: (f"update {config.RAW_ITEMS} set item_id = 'i1' where item_id = 'i2'", "unique_item_id"),
    NIT: (f"delete from {NIT} where history = [3, 2]", "every_history_covered"),
    R: (f"update {R} set user_id = 'u99' where user_id = 'u1'", "user_exists"),
}


@pytest.mark.parametrize("table", list(REAL_GRAPH_CASES))
def test_real_graph_skips_downstream_of_failed_gate(db, table):
    """The real graph's assets downstream of a gated table (raw.items, the lookup table,
    the recommendations) do not run when its gate fails on the current warehouse
    contents (corrupted here)."""
    defs = real_defs()
    graph = defs.resolve_asset_graph()
    key = asset_key(table)
    if key not in graph.materializable_asset_keys:
        pytest.skip(f"{key.to_user_string()} is not an asset of the real Definitions yet")
    children = sorted(graph.get(key).child_keys)
    if not children:
        pytest.skip(f"nothing downstream of {key.to_user_string()} in the real graph yet")
    sql, expected = REAL_GRAPH_CASES[table]
    with wh.connect(db) as con:
        con.execute(sql)
    check_key = AssetCheckKey(key, quality.check_name(table))
    gate = define_asset_job("gate", selection=AssetSelection.checks(check_key) | AssetSelection.assets(*children))
    run_defs = Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=[gate],
        resources={**defs.resources, "warehouse": WarehouseResource(database=str(db))},
        executor=in_process_executor,
    )
    result = run_defs.resolve_job_def("gate").execute_in_process(
        instance=DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert not result.success
    assert materialized(result) == set()
    ev = evaluations(result)[check_key.name]
    assert expected in [f["check"] for f in failures(ev)]
    # only the check's own step started; every downstream step was skipped
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert started and all(check_key.name in step for step in started), started


def test_quality_selection_runs_every_gate_without_materializing(db, monkeypatch):
    """define_asset_job("quality", selection=QUALITY_SELECTION) validates the current
    warehouse: no asset runs, every check reports, one bad table fails the run."""
    with wh.connect(db) as con:
        con.execute(f"update {config.CLUSTERS} set description = 'drama war' where level = 2 and cluster_id = 0")
    defs = real_defs()
    run_defs = Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=[define_asset_job("quality", selection=quality.QUALITY_SELECTION)],
        resources={**defs.resources, "warehouse": WarehouseResource(database=str(db))},
        executor=in_process_executor,
    )
    result = run_defs.resolve_job_def("quality").execute_in_process(
        instance=DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert materialized(result) == set()
    evals = evaluations(result)
    assert set(evals) == {quality.check_name(t) for t in TABLES}
    assert {name for name, e in evals.items() if not e.passed} == {quality.check_name(config.CLUSTERS)}
    assert [f["check"] for f in failures(evals[quality.check_name(config.CLUSTERS)])] == [
        "unique_description_within_level"
    ]
    assert not result.success
