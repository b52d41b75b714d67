"""The same answer on both engines: the foundation marts built by the real dbt CLI on
DuckDB and on a local Spark session (the profile's `spark` target, through
`python -m models_ml.cli.spark_build`) from one generated warehouse have identical rows,
sample keys (the engine-independent hash) and timestamps included.

One Spark build for the module (a JVM start costs more than the models): K = 3 (the
last-distinct macro), strict novelty, the time split (the discrete quantile) with a
validation fold and tight caps (the hash decides both), UCI@N over several windows.
Unit and data tests run on DuckDB elsewhere; here the data tests run on Spark too.
Skipped, with the reason, only where no `java` is on PATH.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys

import duckdb
import polars as pl
import pytest

from models_ml import config, spark
from models_ml import warehouse as wh
from orchestration.dbt import require_duckdb_target
from tests.dbt_helpers import FOUNDATION_SELECT, day, run_dbt, run_dbt_spark, write_warehouse

needs_java = pytest.mark.skipif(
    shutil.which("java") is None,
    reason=f"no `java` on PATH: the Spark equality test needs Java {spark.MIN_JAVA}+ ({spark.JAVA_HELP})",
)

MARTS = [config.USER_CLUSTER_SEQUENCES, config.NOVEL_TRANSITION_EXAMPLES, config.TRAINING_PAIRS, config.UCI_AT_N]

ENGINE_VARS = {"k": 3, "novelty_mode": "strict", "positive_threshold": 4.0, "seed": 7, "split_mode": "time",
               "eval_share": 0.3, "validation_share": 0.3, "max_per_history": 2, "max_per_label": 4,
               "uci_ns": [1, 2, 3], "uci_window_days": 30, "history_lookback": 20}


def _fixture() -> dict[str, list[tuple]]:
    """24 items in 8 fine clusters (10..17) under 3 coarse ones; 40 users with 16 events
    each over 75 days at noon, so same-day events tie on event_ts (item_id orders them)."""
    rng = random.Random(15)
    items = [f"i{n:02d}" for n in range(24)]
    fine = {item: 10 + n % 8 for n, item in enumerate(items)}
    parent = {c: 1 + (c - 10) // 3 for c in range(10, 18)}
    clusters = [(1, p, None, f"coarse {p}", sum(1 for c in fine.values() if parent[c] == p)) for p in (1, 2, 3)]
    clusters += [(2, c, parent[c], f"fine {c}", 3) for c in range(10, 18)]
    events = {}
    for u in range(40):
        for _ in range(16):
            key = (f"u{u:02d}", rng.choice(items), rng.randrange(75))
            events[key] = rng.choice([2.0, 3.5, 4.0, 4.5, 5.0])
    return {
        "interactions": [(u, i, day(d), e) for (u, i, d), e in sorted(events.items())],
        "items": [(i, f"title {i}", f"text {i}") for i in items],
        "clusters": clusters,
        "item_clusters": [(i, 2, c) for i, c in fine.items()] + [(i, 1, parent[c]) for i, c in fine.items()],
    }


@pytest.fixture(scope="module")
def both_engines(tmp_path_factory):
    work = tmp_path_factory.mktemp("engines")
    db = write_warehouse(work / "w.duckdb", **_fixture())
    args = ["build", *FOUNDATION_SELECT, "--exclude", "test_type:unit"]
    on_duckdb = run_dbt(args, db, work, vars=ENGINE_VARS)
    assert on_duckdb.ok, on_duckdb.output[-5000:]
    on_spark = run_dbt_spark(args, db, work / "spark", vars=ENGINE_VARS)
    assert on_spark.ok, on_spark.output[-8000:]
    return db, work / "spark", on_duckdb, on_spark


def _duckdb_rows(db, sql: str) -> tuple[list[str], list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        cur = con.execute(sql)
        return [d[0] for d in cur.description], cur.fetchall()
    finally:
        con.close()


@needs_java
@pytest.mark.spark
@pytest.mark.parametrize("table", MARTS)
def test_same_rows_on_both_engines(both_engines, table):
    db, spark_dir, _, _ = both_engines
    columns, expected = _duckdb_rows(db, f"select * from {table}")
    got = spark.read_mart(table, spark_dir)
    assert got.columns == columns
    assert sorted(got.rows(), key=repr) == sorted(expected, key=repr)


@needs_java
@pytest.mark.spark
def test_both_engines_ran_every_data_test(both_engines):
    _, _, on_duckdb, on_spark = both_engines
    for result in (on_duckdb, on_spark):
        tests = {r["unique_id"]: r["status"] for r in result.results if r["unique_id"].startswith("test.")}
        assert len(tests) >= 40 and set(tests.values()) == {"pass"}, result.failures()
    assert {r["unique_id"] for r in on_spark.results} == {r["unique_id"] for r in on_duckdb.results}


@needs_java
@pytest.mark.spark
def test_fixture_reaches_every_branch(both_engines):
    """The comparison means something: both splits and folds occur, the caps drop rows,
    and users have several UCI windows."""
    db, _, _, _ = both_engines
    _, examples = _duckdb_rows(db, f"select split, fold, count(*) from {config.NOVEL_TRANSITION_EXAMPLES} group by all")
    assert {(s, f) for s, f, _ in examples} == {("train", "fit"), ("train", "validation"), ("eval", None)}
    n_pairs = _duckdb_rows(db, f"select count(*) from {config.TRAINING_PAIRS}")[1][0][0]
    assert 0 < n_pairs < sum(n for _, _, n in examples)
    n_windows = _duckdb_rows(db, f"select count(distinct window_start) from {config.UCI_AT_N}")[1][0][0]
    assert n_windows >= 3


def test_export_writes_the_layout_the_spark_sources_read(tmp_path):
    """<root>/<schema>/<table>/part-0.parquet for every source the warehouse has (the
    LLM and ranking tables do not exist yet here), the same rows and types."""
    db = write_warehouse(tmp_path / "w.duckdb", **_fixture())
    with wh.connect(db, read_only=True) as con:
        written = wh.export_parquet(con, tmp_path / "sources", config.dbt_sources())
        assert set(written) == {config.RAW_INTERACTIONS, config.RAW_ITEMS, config.CLUSTERS, config.ITEM_CLUSTERS}
        for table, path in written.items():
            schema, name = table.split(".")
            assert path == tmp_path / "sources" / schema / name / "part-0.parquet"
            assert pl.read_parquet(path).equals(wh.read_table(con, table))
    assert not list((tmp_path / "sources").rglob(".*"))  # no half-written file left


def _cli(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "models_ml.cli.spark_build"], cwd=config.REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_without_java_the_spark_build_names_what_to_install(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env.update(PATH=os.path.dirname(sys.executable), IE_SPARK_DIR=str(tmp_path / "spark"))
    proc = _cli(env)
    assert proc.returncode == 2
    assert "needs Java 17 or newer: no `java` on PATH and JAVA_HOME is not set" in proc.stderr
    assert "apt-get install openjdk-17-jre-headless" in proc.stderr
    assert not (tmp_path / "spark").exists()  # nothing exported, no session started

    env["JAVA_HOME"] = str(tmp_path)
    proc = _cli(env)
    assert proc.returncode == 2 and f"JAVA_HOME={tmp_path} has no bin/java" in proc.stderr


@needs_java
def test_a_second_build_on_the_same_spark_dir_is_refused(tmp_path):
    """Two sessions on one Derby metastore fail (XSDB6): the second run says so first."""
    with spark.exclusive(tmp_path):
        proc = _cli(dict(os.environ, IE_SPARK_DIR=str(tmp_path), DUCKDB_DATABASE=str(tmp_path / "none.duckdb")))
    assert proc.returncode == 2
    assert f"another Spark build is using IE_SPARK_DIR={tmp_path}" in proc.stderr


def test_the_dagster_pipeline_refuses_the_spark_target(monkeypatch):
    monkeypatch.setenv("DBT_TARGET", "spark")
    with pytest.raises(RuntimeError, match="DBT_TARGET=spark: the Dagster pipeline builds the marts in the DuckDB"):
        require_duckdb_target()
    monkeypatch.setenv("DBT_TARGET", "postgres")
    with pytest.raises(ValueError, match="DBT_TARGET='postgres' is not one of dev, spark"):
        require_duckdb_target()
