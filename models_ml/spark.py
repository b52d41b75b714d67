"""The dbt marts on Apache Spark: the profile's `spark` target (dbt-spark, method
session, a local SparkSession).

The Python assets read and write the DuckDB warehouse through models_ml.warehouse.
For a Spark build their tables are exported as Parquet under IE_SPARK_DIR/sources,
which the spark target registers as external tables (macros/portability.sql,
ie_register_sources); Spark writes the marts as Parquet tables under
IE_SPARK_DIR/warehouse, which ``read_mart`` reads back without a Spark session.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import polars as pl

from models_ml import config
from models_ml import warehouse as wh

JAVA_HELP = (
    "install a Java runtime, version 17 or newer (Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`; "
    "macOS: `brew install openjdk@17`), then put `java` on PATH or set JAVA_HOME"
)
MIN_JAVA = 17  # Spark 4


class SparkUnavailable(RuntimeError):
    """The local Spark session cannot start here (no Java, or the .[spark] extra is missing)."""


def _java_major(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def java_problem(env: Mapping[str, str] | None = None) -> str | None:
    """What stops pyspark from starting a JVM under ``env`` (default os.environ), or None.
    pyspark runs JAVA_HOME/bin/java when JAVA_HOME is set, else `java` from PATH."""
    env = os.environ if env is None else env
    home = env.get("JAVA_HOME")
    if home:
        java = str(Path(home) / "bin" / "java")
        if not os.access(java, os.X_OK):
            return f"JAVA_HOME={home} has no bin/java"
    else:
        found = shutil.which("java", path=env.get("PATH", ""))
        if found is None:
            return "no `java` on PATH and JAVA_HOME is not set"
        java = found
    major = _java_major(java)
    if major is not None and major < MIN_JAVA:
        return f"{java} is Java {major}"
    return None


def require_spark(env: Mapping[str, str] | None = None) -> None:
    """Raise SparkUnavailable naming what to install when the spark target cannot run."""
    problem = java_problem(env)
    if problem:
        raise SparkUnavailable(
            f"the dbt target 'spark' starts a local Spark session, which needs Java {MIN_JAVA} or newer: "
            f"{problem}. To build the marts on Spark, {JAVA_HELP}."
        )
    missing = [pkg for pkg, mod in (("pyspark", "pyspark"), ("dbt-spark", "dbt.adapters.spark"))
               if importlib.util.find_spec(mod) is None]
    if missing:
        raise SparkUnavailable(
            f"the dbt target 'spark' needs {' and '.join(missing)}: pip install -e '.[spark]' "
            "(`make test` installs the extra)"
        )


def sources_dir(spark_dir: Path | None = None) -> Path:
    return (spark_dir or config.spark_dir()) / "sources"


def mart_dir(table: str, spark_dir: Path | None = None) -> Path:
    """The folder of a Spark-built mart (Spark's default layout <warehouse>/<schema>.db/<name>)."""
    schema, _, name = table.rpartition(".")
    return (spark_dir or config.spark_dir()) / "warehouse" / f"{schema or config.MARTS_SCHEMA}.db" / name


def read_mart(table: str, spark_dir: Path | None = None) -> pl.DataFrame:
    """A Spark-built mart read from its Parquet files (no Spark session needed)."""
    folder = mart_dir(table, spark_dir)
    files = sorted(folder.rglob("*.parquet")) if folder.is_dir() else []
    if not files:
        raise LookupError(f"no Parquet files for {table} under {folder}; build it with the spark target first")
    return pl.read_parquet([str(f) for f in files], hive_partitioning=True)


def export_sources(database: Path | None = None, spark_dir: Path | None = None) -> dict[str, Path]:
    """Export the warehouse tables dbt reads (those that exist) to Parquet for Spark."""
    with wh.connect(database, read_only=True) as con:
        return wh.export_parquet(con, sources_dir(spark_dir), config.dbt_sources())


def dbt_env(spark_dir: Path | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a dbt run on the spark target in ``spark_dir``."""
    return dict(os.environ if base is None else base, DBT_TARGET="spark",
                IE_SPARK_DIR=str(spark_dir or config.spark_dir()))


@contextlib.contextmanager
def exclusive(spark_dir: Path | None = None) -> Iterator[Path]:
    """Hold ``spark_dir`` for one run: a second concurrent session on its Derby
    metastore would fail (XSDB6), so say so before starting one."""
    folder = spark_dir or config.spark_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SparkUnavailable(
                f"another Spark build is using IE_SPARK_DIR={folder}; wait for it or set IE_SPARK_DIR to another folder"
            ) from None
        try:
            yield folder
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
