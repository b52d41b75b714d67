"""A tiny hand-made warehouse for the ranking tests: raw and ml tables written here, the
staging views and cluster sequences built by the real dbt models.

Level 2 clusters: 1 {i01..i04}, 2 {i05..i08}, 3 {i09..i11}, 4 {i12}; level 1: 10 = {1, 2},
20 = {3, 4}. Positive = engagement >= 4 (the dbt var default).

user  events (engagement)                         positives   clusters  last-2 history
u1    i01 5, i05 4, i09 1                         i01 i05     1 2       [1, 2]
u2    i02 5, i03 4                                i02 i03     1         [1]
u3    i04 2                                       none        -         -
u4    i05 5, i01 5                                i05 i01     2 1       [2, 1]
u5    i05 4, i06 4, i10 5, i12 5                  all         2 3 4     [3, 4]
u6    i01 i02 i03 i05 i06 i07 i09 i10 (all 5)     all         1 2 3     [2, 3]

Positive counts: i05 4, i01 3, i02 2, i03 2, i06 2, i10 2, i07 1, i09 1, i12 1, others 0.

Lookup (level 2, K 2): [1, 2] -> 3 (.6), 4 (.3); [2, 1] -> 4 (.7), 3 (.2);
[2, 3] -> 1 (.5), 4 (.4); plus a level-1 row that must be ignored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl

from models_ml import config

ITEM_CLUSTER_L2 = {
    **{f"i{n:02d}": 1 for n in range(1, 5)},
    **{f"i{n:02d}": 2 for n in range(5, 9)},
    **{f"i{n:02d}": 3 for n in range(9, 12)},
    "i12": 4,
}
PARENT = {1: 10, 2: 10, 3: 20, 4: 20}
EVENTS = {
    "u1": [("i01", 5.0), ("i05", 4.0), ("i09", 1.0)],
    "u2": [("i02", 5.0), ("i03", 4.0)],
    "u3": [("i04", 2.0)],
    "u4": [("i05", 5.0), ("i01", 5.0)],
    "u5": [("i05", 4.0), ("i06", 4.0), ("i10", 5.0), ("i12", 5.0)],
    "u6": [(i, 5.0) for i in ("i01", "i02", "i03", "i05", "i06", "i07", "i09", "i10")],
}
LOOKUP = [
    (2, 2, [1, 2], 1, 3, 0.6),
    (2, 2, [1, 2], 2, 4, 0.3),
    (2, 2, [2, 1], 1, 4, 0.7),
    (2, 2, [2, 1], 2, 3, 0.2),
    (2, 2, [2, 3], 1, 1, 0.5),
    (2, 2, [2, 3], 2, 4, 0.4),
    (1, 2, [10, 20], 1, 10, 0.9),
]
STAGING_MODELS = "+user_cluster_sequences +int_positive_cluster_events +stg_items +stg_clusters"


def interactions() -> pl.DataFrame:
    t0 = datetime(2024, 1, 1)
    rows = [(u, i, t0 + timedelta(days=d), e) for u, evs in EVENTS.items() for d, (i, e) in enumerate(evs)]
    return pl.DataFrame(rows, schema={"user_id": pl.String, "item_id": pl.String, "event_ts": pl.Datetime("us"),
                                      "engagement": pl.Float64}, orient="row")


def write_raw_and_ml(path: Path, lookup: list | None = None) -> None:
    con = duckdb.connect(str(path))
    try:
        for schema in ("raw", "ml"):
            con.execute(f"create schema if not exists {schema}")
        items = pl.DataFrame({"item_id": list(ITEM_CLUSTER_L2), "title": [f"Title {i}" for i in ITEM_CLUSTER_L2],
                              "text": [f"text of {i}" for i in ITEM_CLUSTER_L2]})
        inter = interactions()
        item_clusters = pl.DataFrame(
            [(i, 2, c) for i, c in ITEM_CLUSTER_L2.items()] + [(i, 1, PARENT[c]) for i, c in ITEM_CLUSTER_L2.items()],
            schema={"item_id": pl.String, "level": pl.Int32, "cluster_id": pl.Int32}, orient="row",
        )
        n = {c: sum(1 for v in ITEM_CLUSTER_L2.values() if v == c) for c in PARENT}
        clusters = pl.DataFrame(
            [(2, c, PARENT[c], f"fine {c}", n[c]) for c in PARENT]
            + [(1, p, None, f"coarse {p}", sum(n[c] for c in PARENT if PARENT[c] == p)) for p in (10, 20)],
            schema={"level": pl.Int32, "cluster_id": pl.Int32, "parent_cluster_id": pl.Int32,
                    "description": pl.String, "n_items": pl.Int64}, orient="row",
        )
        look = pl.DataFrame(
            lookup if lookup is not None else LOOKUP,
            schema={"level": pl.Int32, "k": pl.Int32, "history": pl.List(pl.Int32), "rank": pl.Int32,
                    "next_cluster_id": pl.Int32, "score": pl.Float64}, orient="row",
        ).with_columns(pl.lit("fixture-lookup").alias("model_version"))
        for table, df in ((config.RAW_ITEMS, items), (config.RAW_INTERACTIONS, inter),
                          (config.ITEM_CLUSTERS, item_clusters), (config.CLUSTERS, clusters),
                          (config.NOVEL_INTEREST_TRANSITIONS, look)):
            con.register("df", df.to_arrow())
            con.execute(f"create or replace table {table} as select * from df")
            con.unregister("df")
    finally:
        con.close()


def run_dbt(path: Path, tmp: Path, args: list[str]) -> None:
    """Run the real dbt project against ``path`` in a subprocess (an in-process dbt keeps
    its DuckDB connection open); target/log dirs stay out of the repo."""
    env = {**os.environ, "DUCKDB_DATABASE": str(path)}
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("dbt")), *args,
         "--project-dir", str(config.DBT_PROJECT_DIR), "--profiles-dir", str(config.DBT_PROJECT_DIR),
         "--target-path", str(tmp / "dbt_target"), "--log-path", str(tmp / "dbt_logs"),
         "--vars", json.dumps(config.dbt_vars())],
        env=env, capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dbt {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")


def build_warehouse(tmp: Path, lookup: list | None = None) -> Path:
    path = tmp / "ranking.duckdb"
    write_raw_and_ml(path, lookup)
    run_dbt(path, tmp, ["run", "--select", *STAGING_MODELS.split()])
    return path
