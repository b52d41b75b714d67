"""`python -m models_ml.cli.spark_build [dbt arguments]` (`make marts-spark`): the dbt
marts built on a local Spark session (the profile's `spark` target) from the tables
the Python assets wrote to the DuckDB warehouse (DUCKDB_DATABASE).

The tables dbt reads are exported as Parquet to IE_SPARK_DIR/sources (default
warehouse/spark), Spark keeps its metastore and the marts (Parquet) in IE_SPARK_DIR,
and dbt its manifest and logs in IE_SPARK_DIR/dbt_target and dbt_logs, apart from the
DuckDB build's. Without arguments: `dbt build` of every model whose inputs the
warehouse has, with the effective vars (environment overrides applied); with
arguments, those (e.g. `run --select uci_at_n`), the vars added unless given.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from models_ml import config, spark

DBT = str(Path(sys.executable).with_name("dbt"))


def dbt_command(args: list[str], spark_dir: Path) -> list[str]:
    cmd = [DBT, *args, "--target", "spark", "--profiles-dir", str(config.DBT_PROJECT_DIR),
           "--target-path", str(spark_dir / "dbt_target"), "--log-path", str(spark_dir / "dbt_logs")]
    if "--vars" not in args:
        cmd += ["--vars", json.dumps(config.dbt_vars())]
    return cmd


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    spark_dir = config.spark_dir()
    try:
        spark.require_spark()
        with spark.exclusive(spark_dir):
            written = spark.export_sources(spark_dir=spark_dir)
            missing = [t for t in config.dbt_sources() if t not in written]
            print(f"exported {', '.join(written)} to {spark.sources_dir(spark_dir)}", flush=True)
            if not args:
                args = ["build"]
                for table in missing:
                    print(f"skipping the models that read {table}: the warehouse has no such table yet", flush=True)
                    args += ["--exclude", f"source:{table}+"]
            started = time.perf_counter()
            proc = subprocess.run(dbt_command(args, spark_dir), cwd=config.DBT_PROJECT_DIR, env=spark.dbt_env(spark_dir))
            print(f"dbt on Spark: rc {proc.returncode} in {time.perf_counter() - started:.0f} s "
                  f"(marts under {spark_dir / 'warehouse'})", flush=True)
            return proc.returncode
    except (spark.SparkUnavailable, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
