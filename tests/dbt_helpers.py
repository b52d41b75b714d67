"""Helpers for tests that run the real dbt project on a small hand-made warehouse.

    db = write_warehouse(tmp_path / "w.duckdb", interactions=[...], items=[...], clusters=[...], item_clusters=[...])
    result = run_dbt(["build", "--select", "+training_pairs"], db, tmp_path, vars={"k": 3})
    result.ok, result.status("training_pairs"), result.unit_tests()

Each run gets its own --target-path/--log-path under the test's tmp dir, so parallel
runs never share dbt_project/target (manifest, partial parse state) with anyone.

    result = run_dbt_spark(["build", *FOUNDATION_SELECT], db, tmp_path / "spark", vars=...)

runs the same on the spark target through `python -m models_ml.cli.spark_build` (the
warehouse's tables exported as Parquet, a one-core local Spark session of its own in
that folder); models_ml.spark.read_mart reads the marts back.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from models_ml import config, warehouse

DBT = Path(sys.executable).with_name("dbt")

# The foundation marts with everything upstream, plus the staging models no mart reads
# (their relationships tests), and only the data tests whose parents are ALL selected:
# models of other groups (LLM, ranking) need tables a foundation warehouse lacks.
# CLI flags, not a selectors.yml union: YAML unions apply indirect selection per member,
# which drops tests spanning two members (stg_interactions -> stg_items).
FOUNDATION_SELECT = ["--select", "+training_pairs", "+uci_at_n", "stg_items", "stg_clusters",
                     "--indirect-selection", "cautious"]

_SCHEMAS = {
    config.RAW_INTERACTIONS: {"user_id": pl.Utf8, "item_id": pl.Utf8, "event_ts": pl.Datetime("us"), "engagement": pl.Float64},
    config.RAW_ITEMS: {"item_id": pl.Utf8, "title": pl.Utf8, "text": pl.Utf8},
    config.CLUSTERS: {"level": pl.Int32, "cluster_id": pl.Int32, "parent_cluster_id": pl.Int32,
                      "description": pl.Utf8, "n_items": pl.Int32},
    config.ITEM_CLUSTERS: {"item_id": pl.Utf8, "level": pl.Int32, "cluster_id": pl.Int32},
}


def write_warehouse(path: Path, *, interactions: list[tuple], items: list[tuple], clusters: list[tuple],
                    item_clusters: list[tuple]) -> Path:
    """Write the four input tables (rows as tuples in contract column order) through
    models_ml.warehouse, with the contract's column types."""
    frames = {}
    for table, rows in ((config.RAW_INTERACTIONS, interactions), (config.RAW_ITEMS, items),
                        (config.CLUSTERS, clusters), (config.ITEM_CLUSTERS, item_clusters)):
        schema = _SCHEMAS[table]
        frames[table] = pl.DataFrame(rows, schema=schema, orient="row")
    with warehouse.connect(path) as con:
        warehouse.write_tables(con, frames)
    return path


def day(d: float, hour: int = 12) -> dt.datetime:
    """2024-01-01 + d days at `hour`:00 (2024-01-01 is day 19723 after 1970-01-01)."""
    return dt.datetime(2024, 1, 1, hour) + dt.timedelta(days=d)


@dataclass
class DbtResult:
    returncode: int
    output: str
    results: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def status(self, name: str) -> str | None:
        """Status of the node whose unique_id ends with `.name` (model, test, unit test)."""
        for r in self.results:
            if r["unique_id"].split(".")[-1] == name:
                return r["status"]
        return None

    def unit_tests(self) -> dict[str, str]:
        return {r["unique_id"].split(".")[-1]: r["status"] for r in self.results
                if r["unique_id"].startswith("unit_test.")}

    def failures(self) -> dict[str, str]:
        return {r["unique_id"]: r["status"] for r in self.results if r["status"] in ("fail", "error")}


def _result(proc: subprocess.CompletedProcess, run_results: Path) -> DbtResult:
    results = json.loads(run_results.read_text())["results"] if run_results.exists() else []
    return DbtResult(proc.returncode, proc.stdout + proc.stderr, results)


# Test settings of the local session: one core, two shuffle partitions (no UI: the profile).
SPARK_TEST_ENV = {"IE_SPARK_MASTER": "local[1]", "IE_SPARK_SHUFFLE_PARTITIONS": "2"}


def run_dbt_spark(args: list[str], db: Path, spark_dir: Path, vars: dict | None = None,
                  timeout: int = 900) -> DbtResult:
    """Run dbt on the spark target the way the README documents it
    (DUCKDB_DATABASE=<db> IE_SPARK_DIR=<dir> python -m models_ml.cli.spark_build ...)."""
    cmd = [sys.executable, "-m", "models_ml.cli.spark_build", *args]
    if vars:
        cmd += ["--vars", json.dumps(vars)]
    env = dict(os.environ, DUCKDB_DATABASE=str(db), IE_SPARK_DIR=str(spark_dir), **SPARK_TEST_ENV)
    env.pop("DBT_TARGET", None)
    run_results = spark_dir / "dbt_target" / "run_results.json"
    run_results.unlink(missing_ok=True)
    proc = subprocess.run(cmd, cwd=config.REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return _result(proc, run_results)


def run_dbt(args: list[str], db: Path, work: Path, vars: dict | None = None, timeout: int = 300) -> DbtResult:
    """Run the real dbt CLI on `db` the way the project documents it
    (cd dbt_project && DUCKDB_DATABASE=<db> dbt ... --profiles-dir .)."""
    target = work / "dbt_target"
    cmd = [str(DBT), *args, "--profiles-dir", ".", "--target-path", str(target), "--log-path", str(work / "dbt_logs")]
    if vars:
        cmd += ["--vars", json.dumps(vars)]
    env = dict(os.environ, DUCKDB_DATABASE=str(db))
    env.pop("DBT_TARGET", None)  # the DuckDB target, whatever the caller's shell selects
    run_results = target / "run_results.json"
    run_results.unlink(missing_ok=True)  # never read a previous run's results
    proc = subprocess.run(cmd, cwd=config.DBT_PROJECT_DIR, env=env, capture_output=True, text=True, timeout=timeout)
    return _result(proc, run_results)
