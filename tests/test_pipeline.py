"""The whole asset graph (ingestion, clusters, dbt marts, the real pretrained LLM with a
few LoRA steps, its pair inference partition by partition, ranking, quality gates),
materialized as `make demo` does (python -m orchestration.materialize, Dagster runs;
the bare CLI for the unpartitioned foundation) on a small demo configuration, checked table by table, then validated by
`python -m expectations validate` (so `make test`, and CI, gate on the demo warehouse
it builds)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from dagster import AssetCheckKey, AssetCheckSeverity, AssetKey, DagsterInstance

from models_ml import config
from models_ml.llm import pairs
from orchestration.keys import asset_key
from tests.pipeline_env import FINE_CLUSTERS, FOUNDATION, materialize, small_demo_env

@pytest.fixture(scope="module")
def demo_db(small_demo) -> Path:
    return Path(small_demo["DUCKDB_DATABASE"])


def scalar(con, sql):
    return con.execute(sql).fetchone()[0]


def test_every_foundation_table_is_filled(demo_db):
    con = duckdb.connect(str(demo_db), read_only=True)
    for table in (config.RAW_INTERACTIONS, config.RAW_ITEMS, config.CLUSTERS, config.ITEM_CLUSTERS,
                  config.USER_CLUSTER_SEQUENCES, config.NOVEL_TRANSITION_EXAMPLES, config.TRAINING_PAIRS,
                  config.UCI_AT_N):
        assert scalar(con, f"select count(*) from {table}") > 0, table
    assert scalar(con, f"select count(*) from {config.RAW_ITEMS}") == 240
    assert scalar(con, f"select count(distinct user_id) from {config.RAW_INTERACTIONS}") == 150
    # no staging leftovers are visible
    assert scalar(con, "select count(*) from information_schema.tables where table_name like '__stage_%'") == 0


def test_cluster_invariants(demo_db):
    con = duckdb.connect(str(demo_db), read_only=True)
    assert con.execute(f"select level, count(*) from {config.CLUSTERS} group by 1 order by 1").fetchall() == [
        (config.COARSE_LEVEL, 4), (config.FINE_LEVEL, 12)]
    # every item at every level exactly once
    assert scalar(con, f"select count(*) from {config.ITEM_CLUSTERS}") == 240 * 2
    assert scalar(con, f"select count(*) from (select item_id, level from {config.ITEM_CLUSTERS} group by all having count(*) > 1)") == 0
    # descriptions unique within a level; n_items matches assignments
    assert scalar(con, f"select count(*) from (select level, description from {config.CLUSTERS} group by all having count(*) > 1)") == 0
    assert scalar(con, f"""select count(*) from {config.CLUSTERS} c
        where n_items <> (select count(*) from {config.ITEM_CLUSTERS} i where i.level = c.level and i.cluster_id = c.cluster_id)""") == 0


def test_mart_invariants(demo_db):
    con = duckdb.connect(str(demo_db), read_only=True)
    k = config.history_len()
    # sequences: no consecutive repeats
    assert scalar(con, f"""select count(*) from (
        select cluster_id, lag(cluster_id) over (partition by user_id, level order by seq_pos) as prev
        from {config.USER_CLUSTER_SEQUENCES}) where cluster_id = prev""") == 0
    # examples: K distinct history clusters, next never in the history, strict novelty holds
    assert scalar(con, f"select count(*) from {config.NOVEL_TRANSITION_EXAMPLES} where len(history) <> {k} or len(list_distinct(history)) <> {k}") == 0
    assert scalar(con, f"select count(*) from {config.NOVEL_TRANSITION_EXAMPLES} where list_contains(history, next_cluster_id)") == 0
    assert scalar(con, f"""select count(*) from {config.NOVEL_TRANSITION_EXAMPLES} e
        where exists (select 1 from {config.USER_CLUSTER_SEQUENCES} s
                      where s.user_id = e.user_id and s.level = e.level and s.cluster_id = e.next_cluster_id
                        and s.first_ts < e.event_ts)""") == 0
    # a user is in one split only; training pairs respect the caps
    assert scalar(con, f"select count(*) from (select user_id from {config.NOVEL_TRANSITION_EXAMPLES} group by 1 having count(distinct split) > 1)") == 0
    v = config.dbt_vars()
    assert scalar(con, f"select max(n) from (select count(*) n from {config.TRAINING_PAIRS} group by level, k, split, next_cluster_id)") <= v["max_per_label"]
    assert scalar(con, f"select max(n) from (select count(*) n from {config.TRAINING_PAIRS} group by level, k, split, history)") <= v["max_per_history"]
    # UCI@N is non-increasing in N for each user window
    assert scalar(con, f"""select count(*) from (
        select uci, lag(uci) over (partition by user_id, level, window_end order by n) as prev from {config.UCI_AT_N})
        where uci > prev""") == 0
    assert sorted(r[0] for r in con.execute(f"select distinct n from {config.UCI_AT_N}").fetchall()) == v["uci_ns"]


def test_rematerializing_is_idempotent(demo_db, tmp_path):
    con = duckdb.connect(str(demo_db), read_only=True)
    before = {t: scalar(con, f"select count(*) from {t}") for t in (config.RAW_INTERACTIONS, config.TRAINING_PAIRS, config.UCI_AT_N)}
    checksum = scalar(con, f"select sum(hash(user_id, level, seq_pos, cluster_id)) from {config.USER_CLUSTER_SEQUENCES}")
    con.close()
    env = small_demo_env(tmp_path)
    env["DUCKDB_DATABASE"] = str(demo_db)
    proc = materialize(env, FOUNDATION)
    assert proc.returncode == 0, proc.stderr[-4000:]
    con = duckdb.connect(str(demo_db), read_only=True)
    assert {t: scalar(con, f"select count(*) from {t}") for t in before} == before
    assert scalar(con, f"select sum(hash(user_id, level, seq_pos, cluster_id)) from {config.USER_CLUSTER_SEQUENCES}") == checksum


def test_lookup_covers_every_history_of_the_level(demo_db):
    con = duckdb.connect(str(demo_db), read_only=True)
    level, k, m = config.llm_level(), config.history_len(), config.llm_top_m()
    n = scalar(con, f"select count(*) from {config.CLUSTERS} where level = {level}")
    assert n == (FINE_CLUSTERS if level == config.FINE_LEVEL else 4)
    t = config.NOVEL_INTEREST_TRANSITIONS
    assert scalar(con, f"select count(distinct history) from {t} where level = {level} and k = {k}") == n * (n - 1)
    assert scalar(con, f"select count(*) from {t} where level = {level} and k = {k}") == n * (n - 1) * m
    # ranks 1..m per history, scores normalised and non-increasing, no history cluster returned
    assert scalar(con, f"select count(*) from {t} where list_contains(history, next_cluster_id)") == 0
    assert scalar(con, f"""select count(*) from (select history, list(rank order by rank) r from {t} group by 1)
        where r <> range(1, {m + 1})""") == 0
    assert scalar(con, f"select count(*) from {t} where score <= 0 or score > 1") == 0
    assert scalar(con, f"""select count(*) from (select score, lag(score) over (partition by history order by rank) p
        from {t}) where score > p + 1e-9""") == 0
    # the SQL users' view names every cluster by its description
    rows = con.execute(f"select * from {config.TRANSITION_LOOKUP} limit 5").fetchall()
    assert len(rows) == 5
    assert scalar(con, f"select count(*) from {config.TRANSITION_LOOKUP}") == n * (n - 1) * m
    # fine-tuning history: zero-shot point at step 0, then every IE_LLM_EVAL_EVERY steps
    assert [r[0] for r in con.execute(f"select step from {config.FINETUNE_HISTORY} order by step").fetchall()] == [0, 2, 4]


def test_recommendations_and_exploration_metrics(demo_db):
    con = duckdb.connect(str(demo_db), read_only=True)
    r = config.RECOMMENDATIONS
    users = scalar(con, f"select count(distinct user_id) from {config.STG_INTERACTIONS} where is_positive")
    per_policy = dict(con.execute(f"select policy, count(distinct user_id) from {r} group by 1").fetchall())
    assert set(per_policy) == set(config.POLICIES)
    assert per_policy["baseline"] == per_policy["popular"] == users
    # no consumed item is ever recommended
    assert scalar(con, f"""select count(*) from {r} x join {config.STG_INTERACTIONS} i
        on i.user_id = x.user_id and i.item_id = x.item_id""") == 0
    metrics = {row[0] for row in con.execute(f"select distinct policy from {config.EXPLORATION_METRICS}").fetchall()}
    assert metrics == set(config.POLICIES)


def test_every_policy_is_evaluated_and_reported(demo_db):
    con = duckdb.connect(str(demo_db), read_only=True)
    level, k = config.llm_level(), config.history_len()
    policies = {p for p, in con.execute(
        f"select distinct policy from {config.LOOKUP_EVALUATION} where level = {level} and k = {k}").fetchall()}
    assert {"llm", "llm_only", "zero_shot", "markov", "markov_smoothed", "popularity"} <= policies
    # recall@10 needs more than 10 + K clusters: 12 fine clusters and K = 2 do not have them
    metrics = {m for m, in con.execute(f"select distinct metric from {config.LOOKUP_EVALUATION}").fetchall()}
    assert {"recall_at_1", "recall_at_5", "mrr", "distinct_top1", "diff_recall_at_5_vs_markov"} <= metrics
    assert "recall_at_10" not in metrics
    report = demo_db.parent / "reports" / "report.md"
    assert report.is_file() and "| llm |" in report.read_text()
    assert (demo_db.parent / "reports" / "recall_curves_user.png").stat().st_size > 0


def test_every_model_lookup_is_named_by_the_rows_it_serves(demo_db):
    """The shipped lookup and every model-made comparison lookup (zero-shot included)
    end their model_version with the digest of their own rows, as served."""
    level, k = config.llm_level(), config.history_len()
    cols = "history, rank, next_cluster_id, model_version"
    where = f"level = {level} and k = {k}"
    with duckdb.connect(str(demo_db), read_only=True) as con:
        lookups = {"llm": con.execute(f"select {cols} from {config.NOVEL_INTEREST_TRANSITIONS} where {where}").pl()}
        for policy in ("zero_shot", "llm_only", "llm_fusion", "llm_alignment", "counts_alignment"):
            lookups[policy] = con.execute(
                f"select {cols} from {config.POLICY_LOOKUPS} where {where} and policy = '{policy}'").pl()
    for policy, rows in lookups.items():
        assert rows.height > 0, policy
        (version,) = rows["model_version"].unique().to_list()
        assert version.endswith(pairs.ROWS_TAG + pairs.rows_digest(rows)), (policy, version)
        assert version.count(pairs.ROWS_TAG) == 1, (policy, version)
    assert lookups["zero_shot"]["model_version"][0].startswith("zeroshot-")


def test_the_lookup_gate_reads_lookup_evaluations_figures(small_demo, demo_db):
    """The lookup asset's refresh gate judges the recall@5 of the rows it publishes and
    of popularity on the eval split: the figures lookup_evaluation reports for them."""
    instance = DagsterInstance.from_config(small_demo["DAGSTER_HOME"])
    event = instance.get_latest_materialization_event(asset_key(config.NOVEL_INTEREST_TRANSITIONS))
    meta = event.asset_materialization.metadata
    where = (f"level = {config.llm_level()} and k = {config.history_len()} and split_mode = '{config.split_mode()}' "
             "and metric = 'recall_at_5'")
    with duckdb.connect(str(demo_db), read_only=True) as con:
        reported = dict(con.execute(f"select policy, value from {config.LOOKUP_EVALUATION} where {where} "
                                    "and policy in ('llm', 'popularity')").fetchall())
    assert meta["recall_at_5"].value == pytest.approx(reported["llm"], abs=1e-12)
    assert meta["popularity_recall_at_5"].value == pytest.approx(reported["popularity"], abs=1e-12)
    # the small demo turns the gates off (4 LoRA steps), and the asset says so
    assert meta["gate_recall_margin"].value == -1.0 and meta["refresh_gate"].value == "every rule passed"


def test_the_verdict_judges_the_shipped_lookup_by_lookup_evaluations_rows(small_demo, demo_db):
    """lookup_verdict on the real small demo: every target at every recall@m reported,
    each read off lookup_evaluation's own rows (best count policy, ties by name; the
    paired diff_ row); the report and the report asset carry it."""
    level, k, split = config.llm_level(), config.history_len(), config.split_mode()
    where = f"level = {level} and k = {k} and split_mode = '{split}'"
    with duckdb.connect(str(demo_db), read_only=True) as con:
        ev = {(p, mt): (v, hi) for p, mt, v, hi in con.execute(
            f"select policy, metric, value, ci_high from {config.LOOKUP_EVALUATION} where {where}").fetchall()}
        verdict = con.execute(f"""select target, m, metric, llm_value, baseline, baseline_value, diff, ci_high, met
                                  from {config.LOOKUP_VERDICT} where {where}""").fetchall()
    ms = sorted(int(mt.rsplit("_", 1)[1]) for p, mt in ev if p == "llm" and re.fullmatch(r"recall_at_\d+", mt))
    assert ms == [1, 5]  # 12 fine clusters: recall@10 is not reported, so it has no target
    assert {(t, m) for t, m, *_ in verdict} == (
        {(t, m) for t in ("recall_at_least_best_count", "thin_above_every_count") for m in ms}
        | {("distinct_top1_at_least_markov", None)})
    for target, m, metric, llm, base, base_value, diff, hi, met in verdict:
        assert llm == ev[("llm", metric)][0]
        if m is None:
            assert (metric, base, base_value, met) == ("distinct_top1", "markov", ev[("markov", metric)][0],
                                                       llm >= ev[("markov", metric)][0])
            continue
        best = min(("markov", "markov_smoothed", "popularity"), key=lambda p: (-ev[(p, metric)][0], p))
        name, _, segment = metric.partition("__")
        paired = ev[("llm", f"diff_{name}_vs_{best}" + (f"__{segment}" if segment else ""))]
        assert (base, base_value, diff, hi) == (best, ev[(best, metric)][0], paired[0], paired[1])
        assert met == (hi >= 0 if target == "recall_at_least_best_count" else diff > 0)
        assert segment == ("" if target == "recall_at_least_best_count" else "seen_0_4")
    report = (demo_db.parent / "reports" / "report.md").read_text()
    assert "Targets (`lookup_verdict`)" in report and "| recall_at_least_best_count | 5 |" in report
    instance = DagsterInstance.from_config(small_demo["DAGSTER_HOME"])
    meta = instance.get_latest_materialization_event(AssetKey("evaluation_report")).asset_materialization.metadata
    met = {(t, m): mt for t, m, *_, mt in verdict}
    assert meta[f"{split}__verdict__recall_at_least_best_count_at_5"].value == float(met[("recall_at_least_best_count", 5)])
    # the dbt test on it is a non-blocking Dagster asset check: it warns when a target is missed
    (record,) = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(asset_key(config.LOOKUP_VERDICT), "lookup_verdict_targets_met"), limit=1)
    evaluation = record.event.dagster_event.event_specific_data
    assert evaluation.passed == all(met.values())
    assert all(met.values()) or evaluation.severity == AssetCheckSeverity.WARN


def test_report_lists_the_runs_of_make_evaluate(demo_db, tmp_path):
    import json

    from models_ml.cli import report

    runs = [{"level": 1, "k": 1, "split_mode": "user", "full": False, "lora_steps": 30, "histories": "all",
             "seconds": 90.0, "returncode": 0},
            {"level": 2, "k": 2, "split_mode": "user", "full": True, "lora_steps": 150, "histories": "all",
             "seconds": 270.0, "returncode": 0}]
    (tmp_path / report.RUNS_FILE).write_text(json.dumps(runs))
    with duckdb.connect(str(demo_db), read_only=True) as con:
        text = report.build_report(con, tmp_path).path.read_text()
    assert "2 runs, 6.0 min in all" in text  # (90 + 270) s
    assert "| 1 | 1 | user | comparison | 30 | all | 1.5 | 0 |" in text
    assert "| 2 | 2 | user | default | 150 | all | 4.5 | 0 |" in text


def test_validator_passes_on_the_demo_warehouse(demo_db):
    proc = subprocess.run(
        [sys.executable, "-m", "expectations", "validate", "--db", str(demo_db)],
        cwd=config.REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for table in (config.RAW_INTERACTIONS, config.RAW_ITEMS, config.CLUSTERS, config.ITEM_CLUSTERS,
                  config.NOVEL_INTEREST_TRANSITIONS, config.RECOMMENDATIONS):
        assert table in proc.stdout, table


def test_every_built_column_is_described(demo_db):
    """Every column of every dbt model as built has a YAML description, and every table
    Python writes is declared column by column in models_ml/tables.py (the Columns tables
    of the Dagster UI come from these two)."""
    import json

    from models_ml import tables

    manifest = json.loads((config.DBT_PROJECT_DIR / "target" / "manifest.json").read_text())
    con = duckdb.connect(str(demo_db), read_only=True)

    def built(schema, name):
        return [r[0] for r in con.execute(
            "select column_name from information_schema.columns where table_schema = ? and table_name = ? "
            "order by ordinal_position", [schema, name]).fetchall()]

    undescribed = {}
    for node in manifest["nodes"].values():
        if node["resource_type"] == "model":
            cols = built(node["schema"], node["name"])
            assert cols, node["name"]
            missing = [c for c in cols if not node["columns"].get(c, {}).get("description")]
            if missing:
                undescribed[node["name"]] = missing
    assert undescribed == {}
    for name, table in tables.TABLES.items():
        schema, _, short = name.partition(".")
        typed = con.execute(
            "select column_name, data_type from information_schema.columns where table_schema = ? and table_name = ? "
            "order by ordinal_position", [schema, short]).fetchall()
        assert typed == [(c.name, tables.duckdb_type(c.dtype)) for c in table.columns], name
