"""Each suite passes on a good table and fails, naming the expectation, on a table
corrupted in each way the suite guards against (DuckDB fixture in ge_fixtures)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import pytest
from ge_fixtures import PARAMS, build_warehouse

from expectations import TABLES, build_suite, validate_table, validate_warehouse
from expectations.report import format_report, suite_markdown
from expectations.suites import STR
from models_ml import config
from models_ml import warehouse as wh

I, IT, C, IC = config.RAW_INTERACTIONS, config.RAW_ITEMS, config.CLUSTERS, config.ITEM_CLUSTERS
NIT, PL, R = config.NOVEL_INTEREST_TRANSITIONS, config.POLICY_LOOKUPS, config.RECOMMENDATIONS


@dataclass(frozen=True)
class Corruption:
    table: str
    name: str
    sql: str
    check: str  # the check that must fail

    def __str__(self) -> str:
        return f"{self.table}:{self.name}"


def _c(table, name, sql, check):
    return Corruption(table, name, sql, check)


U1 = "user_id = 'u1' and item_id = 'i1'"
H01 = "history = [0, 1]"
R_U1 = "policy = 'baseline' and user_id = 'u1'"
PL_ZS = "policy = 'zero_shot'"

CORRUPTIONS = [
    # raw.interactions
    *[_c(I, f"null_{col}", f"update {I} set {col} = null where {U1}", f"not_null_{col}")
      for col in ("user_id", "item_id", "event_ts", "engagement")],
    _c(I, "nan_engagement", f"update {I} set engagement = 'nan'::double where {U1}", "not_null_engagement"),
    _c(I, "negative_engagement", f"update {I} set engagement = -1 where {U1}", "engagement_non_negative_finite"),
    _c(I, "inf_engagement", f"update {I} set engagement = 'inf'::double where {U1}", "engagement_non_negative_finite"),
    _c(I, "blank_user_id", f"update {I} set user_id = '' where {U1}", "not_blank_user_id"),
    _c(I, "blank_item_id", f"update {I} set item_id = '  ' where {U1}", "not_blank_item_id"),
    _c(I, "duplicate_event", f"insert into {I} select * from {I} where {U1}", "unique_user_item_ts"),
    _c(I, "unknown_item", f"update {I} set item_id = 'i99' where {U1}", "item_exists"),
    _c(I, "engagement_varchar", f"alter table {I} alter engagement type varchar", "type_engagement"),
    _c(I, "event_ts_varchar", f"alter table {I} alter event_ts type varchar", "type_event_ts"),
    _c(I, "user_id_integer", f"alter table {I} alter user_id type bigint using length(user_id)", "type_user_id"),
    _c(I, "missing_engagement", f"alter table {I} drop column engagement", "columns_present"),
    # raw.items
    *[_c(IT, f"null_{col}", f"update {IT} set {col} = null where item_id = 'i1'", f"not_null_{col}")
      for col in ("item_id", "title", "text")],
    _c(IT, "empty_text", f"update {IT} set text = '' where item_id = 'i1'", "not_blank_text"),
    _c(IT, "whitespace_text", f"update {IT} set text = ' \t ' where item_id = 'i1'", "not_blank_text"),
    _c(IT, "blank_item_id", f"update {IT} set item_id = ' ' where item_id = 'i1'", "not_blank_item_id"),
    _c(IT, "duplicate_item_id", f"update {IT} set item_id = 'i1' where item_id = 'i2'", "unique_item_id"),
    _c(IT, "item_id_integer", f"alter table {IT} alter item_id type integer using length(item_id)", "type_item_id"),
    _c(IT, "missing_text", f"alter table {IT} drop column text", "columns_present"),
    # ml.clusters
    *[_c(C, f"null_{col}", f"update {C} set {col} = null where level = 2 and cluster_id = 3", f"not_null_{col}")
      for col in ("level", "cluster_id", "description", "n_items")],
    _c(C, "level_3", f"update {C} set level = 3 where level = 2 and cluster_id = 3", "level_in_levels"),
    _c(C, "fine_level_missing", f"delete from {C} where level = 2", "every_level_present"),
    _c(C, "duplicate_cluster_id", f"update {C} set cluster_id = 0 where level = 2 and cluster_id = 1",
       "unique_level_cluster_id"),
    _c(C, "duplicate_description", f"update {C} set description = 'drama war' where level = 2 and cluster_id = 0",
       "unique_description_within_level"),
    _c(C, "blank_description", f"update {C} set description = ' ' where level = 1 and cluster_id = 0",
       "not_blank_description"),
    _c(C, "zero_n_items", f"update {C} set n_items = 0 where level = 2 and cluster_id = 0", "n_items_positive"),
    _c(C, "n_items_wrong", f"update {C} set n_items = 3 where level = 2 and cluster_id = 0",
       "n_items_matches_item_clusters"),
    _c(C, "coarse_with_parent", f"update {C} set parent_cluster_id = 1 where level = 1 and cluster_id = 0",
       "coarse_level_has_no_parent"),
    _c(C, "fine_without_parent", f"update {C} set parent_cluster_id = null where level = 2 and cluster_id = 0",
       "parent_is_cluster_one_level_up"),
    _c(C, "parent_unknown", f"update {C} set parent_cluster_id = 7 where level = 2 and cluster_id = 0",
       "parent_is_cluster_one_level_up"),
    # cluster 3 exists, but at level 2 only: a parent must be a level-1 cluster
    _c(C, "parent_at_same_level", f"update {C} set parent_cluster_id = 3 where level = 2 and cluster_id = 0",
       "parent_is_cluster_one_level_up"),
    _c(C, "cluster_id_varchar", f"alter table {C} alter cluster_id type varchar", "type_cluster_id"),
    _c(C, "n_items_double", f"alter table {C} alter n_items type double", "type_n_items"),
    _c(C, "missing_parent_cluster_id", f"alter table {C} drop column parent_cluster_id", "columns_present"),
    # ml.item_clusters
    *[_c(IC, f"null_{col}", f"update {IC} set {col} = null where item_id = 'i1' and level = 2", f"not_null_{col}")
      for col in ("item_id", "level", "cluster_id")],
    _c(IC, "level_3", f"update {IC} set level = 3 where item_id = 'i1' and level = 2", "level_in_levels"),
    _c(IC, "assigned_twice", f"insert into {IC} values ('i1', 2, 1)", "unique_item_level"),
    _c(IC, "unknown_item", f"insert into {IC} values ('i99', 2, 0), ('i99', 1, 0)", "item_exists"),
    _c(IC, "item_unassigned", f"delete from {IC} where item_id = 'i1' and level = 2",
       "every_item_assigned_at_every_level"),
    _c(IC, "unknown_cluster", f"update {IC} set cluster_id = 9 where item_id = 'i1' and level = 2", "cluster_exists"),
    # cluster 3 exists at level 2, not at level 1
    _c(IC, "cluster_of_other_level", f"update {IC} set cluster_id = 3 where item_id = 'i1' and level = 1",
       "cluster_exists"),
    _c(IC, "not_nested", f"update {IC} set cluster_id = 1 where item_id = 'i1' and level = 1",
       "nested_in_parent_cluster"),
    _c(IC, "cluster_id_varchar", f"alter table {IC} alter cluster_id type varchar", "type_cluster_id"),
    _c(IC, "missing_cluster_id", f"alter table {IC} drop column cluster_id", "columns_present"),
    # ml.novel_interest_transitions (the lookup table)
    *[_c(NIT, f"null_{col}", f"update {NIT} set {col} = null where {H01} and rank = 1", f"not_null_{col}")
      for col in ("level", "k", "history", "rank", "next_cluster_id", "score", "model_version")],
    _c(NIT, "score_above_1", f"update {NIT} set score = 1.5 where {H01} and rank = 1", "score_in_unit_interval"),
    _c(NIT, "score_negative", f"update {NIT} set score = -0.1 where {H01} and rank = 2", "score_in_unit_interval"),
    _c(NIT, "rank_zero", f"update {NIT} set rank = 0 where {H01} and rank = 1", "rank_in_range"),
    # top_m = 2 in PARAMS
    _c(NIT, "rank_above_top_m", f"insert into {NIT} select level, k, history, 3, 9, 0.1, model_version from {NIT} "
       f"where {H01} and rank = 1", "rank_in_range"),
    _c(NIT, "duplicate_rank", f"update {NIT} set rank = 1, score = 0.7 where {H01} and rank = 2",
       "unique_history_rank"),
    _c(NIT, "duplicate_next", f"update {NIT} set next_cluster_id = 2 where {H01} and rank = 2",
       "unique_history_next"),
    _c(NIT, "history_cluster_as_novel", f"update {NIT} set next_cluster_id = 0 where {H01} and rank = 1",
       "next_not_in_history"),
    _c(NIT, "history_too_long", f"update {NIT} set history = [0, 1, 2] where {H01}", "history_length_is_k"),
    _c(NIT, "history_repeats", f"update {NIT} set history = [1, 1] where {H01}", "history_clusters_distinct"),
    _c(NIT, "unknown_next_cluster", f"update {NIT} set next_cluster_id = 9 where {H01} and rank = 2",
       "clusters_exist_at_level"),
    _c(NIT, "rank_gap", f"update {NIT} set rank = 3 where {H01} and rank = 2", "ranks_contiguous_from_1"),
    _c(NIT, "score_rises_with_rank", f"update {NIT} set score = 0.9 where {H01} and rank = 2",
       "score_non_increasing_with_rank"),
    _c(NIT, "history_not_covered", f"delete from {NIT} where history = [3, 2]", "every_history_covered"),
    _c(NIT, "blank_model_version", f"update {NIT} set model_version = '' where {H01}", "not_blank_model_version"),
    _c(NIT, "level_3", f"update {NIT} set level = 3 where {H01}", "level_in_levels"),
    _c(NIT, "k_zero", f"update {NIT} set k = 0 where {H01}", "k_positive"),
    _c(NIT, "score_varchar", f"alter table {NIT} alter score type varchar", "type_score"),
    _c(NIT, "history_varchar", f"alter table {NIT} alter history type varchar", "type_history"),
    _c(NIT, "missing_model_version", f"alter table {NIT} drop column model_version", "columns_present"),
    # ml.policy_lookups (the comparison lookups: the lookup rules per policy)
    *[_c(PL, f"null_{col}", f"update {PL} set {col} = null where {PL_ZS} and {H01} and rank = 1", f"not_null_{col}")
      for col in ("policy", "level", "k", "history", "rank", "next_cluster_id", "score", "model_version")],
    _c(PL, "score_above_1", f"update {PL} set score = 1.5 where {PL_ZS} and {H01} and rank = 1", "score_in_unit_interval"),
    _c(PL, "rank_zero", f"update {PL} set rank = 0 where {PL_ZS} and {H01} and rank = 1", "rank_in_range"),
    _c(PL, "rank_above_top_m", f"insert into {PL} select policy, level, k, history, 3, 9, 0.1, model_version from {PL} "
       f"where {PL_ZS} and {H01} and rank = 1", "rank_in_range"),
    # a duplicate within one policy is a defect; the same rows under two policies are not
    _c(PL, "duplicate_rank", f"update {PL} set rank = 1, score = 0.7 where {PL_ZS} and {H01} and rank = 2",
       "unique_history_rank"),
    _c(PL, "duplicate_next", f"update {PL} set next_cluster_id = 2 where {PL_ZS} and {H01} and rank = 2",
       "unique_history_next"),
    _c(PL, "history_cluster_as_novel", f"update {PL} set next_cluster_id = 0 where {PL_ZS} and {H01} and rank = 1",
       "next_not_in_history"),
    _c(PL, "history_too_long", f"update {PL} set history = [0, 1, 2] where {PL_ZS} and {H01}", "history_length_is_k"),
    _c(PL, "history_repeats", f"update {PL} set history = [1, 1] where {PL_ZS} and {H01}", "history_clusters_distinct"),
    _c(PL, "unknown_next_cluster", f"update {PL} set next_cluster_id = 9 where {PL_ZS} and {H01} and rank = 2",
       "clusters_exist_at_level"),
    _c(PL, "rank_gap", f"update {PL} set rank = 3 where {PL_ZS} and {H01} and rank = 2", "ranks_contiguous_from_1"),
    _c(PL, "score_rises_with_rank", f"update {PL} set score = 0.9 where {PL_ZS} and {H01} and rank = 2",
       "score_non_increasing_with_rank"),
    # one policy missing a history is caught although the other policy has it
    _c(PL, "history_not_covered", f"delete from {PL} where {PL_ZS} and history = [3, 2]", "every_history_covered"),
    _c(PL, "blank_model_version", f"update {PL} set model_version = '' where {PL_ZS} and {H01}", "not_blank_model_version"),
    _c(PL, "level_3", f"update {PL} set level = 3 where {PL_ZS} and {H01}", "level_in_levels"),
    _c(PL, "k_zero", f"update {PL} set k = 0 where {PL_ZS} and {H01}", "k_positive"),
    _c(PL, "missing_policy", f"alter table {PL} drop column policy", "columns_present"),
    # ml.recommendations
    *[_c(R, f"null_{col}", f"update {R} set {col} = null where {R_U1} and rank = 1", f"not_null_{col}")
      for col in ("policy", "user_id", "rank", "item_id", "cluster_id", "score")],
    _c(R, "unknown_policy", f"update {R} set policy = 'random' where {R_U1}", "policy_in_set"),
    _c(R, "rank_zero", f"update {R} set rank = 0 where {R_U1} and rank = 1", "rank_in_range"),
    # slate_size = 2 in PARAMS: a third item on a slate
    _c(R, "rank_above_slate_size", f"insert into {R} values ('baseline', 'u1', 3, 'i7', 3, 0.1, null)", "rank_in_range"),
    _c(R, "score_inf", f"update {R} set score = 'inf'::double where {R_U1} and rank = 1", "score_finite"),
    _c(R, "score_nan", f"update {R} set score = 'nan'::double where {R_U1} and rank = 2", "not_null_score"),
    _c(R, "explore_without_target", f"update {R} set target_cluster_id = null where policy = 'explore' "
       "and user_id = 'u2'", "explore_has_target_cluster"),
    _c(R, "duplicate_rank", f"update {R} set rank = 1, score = 0.9 where {R_U1} and rank = 2",
       "unique_policy_user_rank"),
    _c(R, "duplicate_item", f"update {R} set item_id = 'i2', cluster_id = 0 where {R_U1} and rank = 2",
       "unique_policy_user_item"),
    _c(R, "rank_gap", f"update {R} set rank = 3 where {R_U1} and rank = 2", "ranks_contiguous_from_1"),
    _c(R, "score_rises_with_rank", f"update {R} set score = 1.0 where {R_U1} and rank = 2",
       "score_non_increasing_with_rank"),
    _c(R, "unknown_item", f"update {R} set item_id = 'i99' where {R_U1} and rank = 1", "item_exists"),
    _c(R, "unknown_user", f"update {R} set user_id = 'u99' where {R_U1}", "user_exists"),
    _c(R, "wrong_cluster_id", f"update {R} set cluster_id = 3 where {R_U1} and rank = 1",
       "cluster_id_is_item_cluster"),
    _c(R, "explore_outside_target", f"update {R} set target_cluster_id = 3 where policy = 'explore' "
       "and user_id = 'u1'", "explore_item_in_target_cluster"),
    # i1 is u1's positive (5.0): recommending it again is the defect
    _c(R, "consumed_item", f"update {R} set item_id = 'i1', cluster_id = 0 where {R_U1} and rank = 1",
       "no_consumed_item_recommended"),
    _c(R, "rank_varchar", f"alter table {R} alter rank type varchar", "type_rank"),
    _c(R, "missing_target_cluster_id", f"alter table {R} drop column target_cluster_id", "columns_present"),
]  # fmt: skip


def _wrong_type_cases() -> list[Corruption]:
    """A wrong DuckDB type for every contract column not already covered above."""
    covered = {(c.table, c.check) for c in CORRUPTIONS}
    out = []
    for table in TABLES:
        for col, types in build_suite(table, PARAMS).columns.items():
            if (table, f"type_{col}") in covered:
                continue
            if types == STR:
                sql = f"alter table {table} alter {col} type bigint using length({col})"
            else:
                sql = f"alter table {table} alter {col} type varchar"
            out.append(_c(table, f"{col}_wrong_type", sql, f"type_{col}"))
    return out


CORRUPTIONS += _wrong_type_cases()


@pytest.fixture(scope="module")
def good_db(tmp_path_factory):
    return build_warehouse(tmp_path_factory.mktemp("ge") / "good.duckdb")


@pytest.fixture
def db_copy(good_db, tmp_path):
    path = tmp_path / "wh.duckdb"
    shutil.copy(good_db, path)
    return path


def _validate(path, table, sql=None):
    with wh.connect(path) as con:
        if sql:
            con.execute(sql)
        return validate_table(con, table, PARAMS)


def test_good_warehouse_passes_every_suite(good_db):
    report = validate_warehouse(good_db, params=PARAMS)
    assert [s.table for s in report.suites] == list(TABLES)
    assert report.success, format_report(report)
    assert {s.table: s.rows for s in report.suites} == {I: 8, IT: 8, C: 6, IC: 16, NIT: 24, PL: 48, R: 18}
    assert all(r.status == "passed" for s in report.suites for r in s.results)


@pytest.mark.parametrize("case", CORRUPTIONS, ids=str)
def test_corruption_is_caught_and_named(db_copy, case):
    result = _validate(db_copy, case.table, case.sql)
    failed = {r.check: r for r in result.failures}
    assert not result.success
    assert case.check in failed, f"{case}: expected {case.check} to fail, failures: {sorted(failed)}"
    assert failed[case.check].status == "failed", failed[case.check].message


def test_every_check_is_exercised_by_a_corruption():
    """'Corrupted in each way the suite guards against': no check goes untested."""
    for table in TABLES:
        checks = {c.name for c in build_suite(table, PARAMS).checks}
        tried = {c.check for c in CORRUPTIONS if c.table == table}
        assert checks - tried == set(), f"{table}: checks without a corruption case: {sorted(checks - tried)}"
        assert tried - checks == set(), f"{table}: corruption cases name unknown checks: {sorted(tried - checks)}"


def test_corruption_counts():
    per_table = {t: sum(c.table == t for c in CORRUPTIONS) for t in TABLES}
    assert sum(per_table.values()) == len(CORRUPTIONS) == len({str(c) for c in CORRUPTIONS})
    assert min(per_table.values()) >= 9


# ---- hand-checked sample rows and counts ---------------------------------------------


def test_consumed_item_sample_row_names_user_and_item(db_copy):
    result = _validate(db_copy, R, f"update {R} set item_id = 'i1', cluster_id = 0 where {R_U1} and rank = 1")
    r = result.result("no_consumed_item_recommended")
    assert r.expectation == "expect_table_row_count_to_equal"
    assert r.unexpected_count == 1
    assert [(s["policy"], s["user_id"], s["rank"], s["item_id"]) for s in r.sample_rows] == [
        ("baseline", "u1", 1, "i1")
    ]
    assert "no_consumed_item_recommended" in suite_markdown(result)


def test_consumed_item_uses_raw_threshold_without_dbt_staging(tmp_path):
    """Before dbt has built stg_interactions, positives come from raw with the same threshold."""
    path = build_warehouse(tmp_path / "nostg.duckdb", with_stg=False)
    assert _validate(path, R).success
    # u1 rated i5 2.0 (not positive; already recommended in the good fixture) and i3 4.0 (positive)
    result = _validate(path, R, f"update {R} set item_id = 'i3', cluster_id = 1 where {R_U1} and rank = 2")
    r = result.result("no_consumed_item_recommended")
    assert r.status == "failed" and [s["item_id"] for s in r.sample_rows] == ["i3"]
    assert config.RAW_INTERACTIONS in r.description


def test_missing_history_is_listed(db_copy):
    result = _validate(db_copy, NIT, f"delete from {NIT} where history = [3, 2] or history = [0, 3]")
    r = result.result("every_history_covered")
    assert r.unexpected_count == 2
    assert sorted(tuple(s["history"]) for s in r.sample_rows) == [(0, 3), (3, 2)]


@pytest.mark.parametrize("mode, missing", [
    ("observed", [(0, 3), (3, 2)]),  # every split and fold
    ("evaluated", [(0, 3)]),  # eval split and validation fold: [3, 2] is a fit-fold history only
])
def test_coverage_of_observed_and_evaluated_histories(db_copy, mode, missing):
    import dataclasses

    nte = config.NOVEL_TRANSITION_EXAMPLES
    with wh.connect(db_copy) as con:
        con.execute(f"""create or replace table {nte} as
            select * from (values (2, 2, [0, 1], 'eval', null), (2, 2, [0, 3], 'train', 'validation'),
                                  (2, 2, [3, 2], 'train', 'fit'), (2, 2, [1, 3], 'eval', null),
                                  (1, 2, [0, 1], 'eval', null))
            as t(level, k, history, split, fold)""")
        con.execute(f"delete from {NIT} where history = [3, 2] or history = [0, 3]")
        result = validate_table(con, NIT, dataclasses.replace(PARAMS, llm_histories=mode))
    r = result.result("every_history_covered")
    assert sorted(tuple(s["history"]) for s in r.sample_rows) == missing


def test_coverage_counts_n_factorial_histories_at_k3(db_copy):
    """K = 3 over 4 fine clusters: 4!/(4-3)! = 24 ordered histories; the K = 2 table covers none."""
    import dataclasses

    with wh.connect(db_copy) as con:
        result = validate_table(con, NIT, dataclasses.replace(PARAMS, history_len=3))
    assert result.result("every_history_covered").unexpected_count == 24


def test_duplicate_rows_are_sampled_from_the_table(db_copy):
    result = _validate(db_copy, IT, f"update {IT} set item_id = 'i1' where item_id = 'i2'")
    r = result.result("unique_item_id")
    assert r.unexpected_count == 2
    assert sorted(s["title"] for s in r.sample_rows) == ["Item 1", "Item 2"]
    # nothing else is wrong with raw.items in isolation
    assert [f.check for f in result.failures] == ["unique_item_id"]


def test_same_description_on_different_levels_is_allowed(db_copy):
    assert _validate(db_copy, C, f"update {C} set description = 'drama war' where level = 1 and cluster_id = 0").success


def test_type_failure_reports_observed_type(db_copy):
    result = _validate(db_copy, I, f"alter table {I} alter engagement type varchar")
    r = result.result("type_engagement")
    assert r.sample_rows == [{"column_name": "engagement", "data_type": "VARCHAR"}]


def test_missing_column_skips_data_checks(db_copy):
    result = _validate(db_copy, I, f"alter table {I} drop column engagement")
    assert [(f.check, f.message) for f in result.failures] == [("columns_present", "missing column(s): engagement")]
    assert result.result("not_null_engagement").status == "skipped"


def test_missing_table_fails(db_copy):
    result = _validate(db_copy, R, f"drop table {R}")
    assert not result.success
    assert [(f.check, f.status) for f in result.failures] == [("table_exists", "failed")]


def test_missing_dependency_is_an_error_not_a_pass(db_copy):
    result = _validate(db_copy, IC, f"drop table {IT}")
    errors = {f.check for f in result.failures if f.status == "error"}
    assert errors == {"item_exists", "every_item_assigned_at_every_level"}
    assert "raw.items" in result.result("item_exists").message


def test_unbindable_dbt_view_falls_back_to_raw(tmp_path):
    """dbt-duckdb views name the catalog (the file's stem): in a copied warehouse file
    stg_interactions no longer binds, and the consumed check uses raw + threshold."""
    original = build_warehouse(tmp_path / "interest_explorer.duckdb", with_stg=False)
    with wh.connect(original) as con:
        con.execute(
            f"create view {config.STG_INTERACTIONS} as select *, engagement >= 4.0 as is_positive "
            f"from interest_explorer.{config.RAW_INTERACTIONS}"
        )
    assert _validate(original, R).result("no_consumed_item_recommended").description.endswith(
        f"({config.STG_INTERACTIONS}) is recommended"
    )
    copy = tmp_path / "copy.duckdb"
    shutil.copy(original, copy)
    result = _validate(copy, R, f"update {R} set item_id = 'i1', cluster_id = 0 where {R_U1} and rank = 1")
    r = result.result("no_consumed_item_recommended")
    assert r.status == "failed" and r.unexpected_count == 1
    assert "raw.interactions, engagement >= 4.0" in r.description
