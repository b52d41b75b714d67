"""The whole foundation graph, materialized by the real Dagster CLI on a small demo
configuration, then checked table by table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from models_ml import config

REPO = config.REPO_ROOT
FOUNDATION = "group:ingestion or group:clusters or group:warehouse"


def small_demo_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DUCKDB_DATABASE=str(tmp / "demo.duckdb"),
        DAGSTER_HOME=str(tmp / "dagster_home"),
        IE_MODELS_DIR=str(tmp / "models"),
        IE_SOURCE="demo",
        IE_DEMO_USERS="150",
        IE_DEMO_ITEMS="240",
        IE_DEMO_EVENTS="12000",
        IE_FINE_CLUSTERS="12",
        IE_COARSE_CLUSTERS="4",
    )
    (tmp / "dagster_home").mkdir()
    return env


def materialize(env: dict[str, str], select: str) -> subprocess.CompletedProcess:
    dagster = Path(sys.executable).with_name("dagster")
    return subprocess.run(
        [str(dagster), "asset", "materialize", "-m", "orchestration", "--select", select],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pipeline")
    env = small_demo_env(tmp)
    proc = materialize(env, FOUNDATION)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return Path(env["DUCKDB_DATABASE"])


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
    k = config.k()
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
