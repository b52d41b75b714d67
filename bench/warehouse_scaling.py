"""Warehouse scaling: the dbt marts (DuckDB, optionally Spark) against the same
derivations in pandas and in polars.

For each size (events) it generates synthetic raw.interactions / raw.items /
ml.clusters / ml.item_clusters (100k users, 20k items, 40 fine and 8 coarse clusters
by default) into a temporary DuckDB file (the events in SQL inside the file), then

* dbt (DuckDB, with memory_limit and temp_directory so large sizes spill to disk rather
  than swap: a bench profiles.yml adds them as dbt-duckdb `settings`): one
  `dbt run --select <model>` subprocess per stage (sequences, novel examples, training
  pairs, UCI@N; the staging views first), timed by wall clock and by the model's
  execution_time in run_results.json, peak RSS of that subprocess from os.wait4; then one
  full `dbt build` of the foundation (models + data + unit tests); then each mart's
  compiled SQL once more in this process, for the query's own CPU seconds;
* pandas: the same derivations in plain pandas (sort, groupby-shift, cumsum,
  groupby-cumcount) in a worker subprocess, each stage timed with its own peak RSS
  (VmHWM reset per stage through /proc/self/clear_refs);
* polars: the same derivations as lazy queries on the streaming engine, over Parquet
  exports of the two input tables, each stage sunk to Parquet;
* with --target spark: the staging views and marts on a local Spark session (the
  profile's spark target) in one `dbt run`, counts compared with DuckDB's.

pandas and polars run under a memory cap (--cap-mb, default 8192): by default an
address-space cap (RLIMIT_AS: an allocation beyond it fails inside the worker; reserved
virtual memory counts, about 3.5 GB of it before any data here), with --cap-kind rss a
resident-set cap (polled every 50 ms, the worker killed past it). "exceeded_cap" means
the worker passed the cap, never that the machine ran out of memory; a baseline that
exceeds it is not tried at larger sizes.
Row counts are checked against each other (sequences, examples, UCI@N; training pairs
differ only through the hash used for sampling) and one JSON document is printed (and
written to --out after every size): per size and stage seconds and peak MB, ratios over
the dbt models in the same run, growth exponents from the smallest size, each
baseline's largest size within the cap.

    .venv/bin/python bench/warehouse_scaling.py                    # 1M and 10M events
    .venv/bin/python bench/warehouse_scaling.py --sizes 100000     # quick check
    nice -n 19 .venv/bin/python bench/warehouse_scaling.py --sizes 1000000,30000000,100000000 \
        --out bench/results/warehouse_scaling_100m.json            # DuckDB spilling past 4 GB
    .venv/bin/python bench/warehouse_scaling.py --target spark --sizes 1000000,10000000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from models_ml import config, warehouse  # noqa: E402
from tests.dbt_helpers import FOUNDATION_SELECT  # noqa: E402  (the one home of the foundation selection)

DBT = Path(sys.executable).with_name("dbt")
STAGING = ["+int_positive_cluster_events", "stg_items", "stg_clusters"]  # the views under the marts
# stage name -> dbt model
STAGES = {
    "sequences": "user_cluster_sequences",
    "novel_examples": "novel_transition_examples",
    "training_pairs": "training_pairs",
    "uci_at_n": "uci_at_n",
}


# ---- synthetic data ------------------------------------------------------------------
def generate(db: Path, n_events: int, n_users: int, n_items: int, n_fine: int, n_coarse: int,
             memory_limit: str) -> dict:
    """Deterministic synthetic warehouse. Each user has three home fine clusters and
    takes 70% of events from them, the rest uniformly; ratings 2.0..5.0 in half steps
    (3 of 7 values are positive at the 4.0 threshold); timestamps over two years."""
    if n_items % n_fine:
        raise ValueError(f"--items ({n_items}) must be a multiple of --fine ({n_fine})")
    per_cluster = n_items // n_fine
    t0 = time.perf_counter()
    mem = duckdb.connect()
    items = mem.sql(f"""
        select 'i' || lpad(i::varchar, 7, '0') as item_id,
               'item ' || i as title,
               'synthetic item ' || i || ' of cluster ' || (i % {n_fine}) as text
        from range({n_items}) t(i)""").pl()
    clusters = mem.sql(f"""
        select 2::integer as level, f::integer as cluster_id, (f % {n_coarse})::integer as parent_cluster_id,
               'fine ' || f as description, {per_cluster}::integer as n_items
        from range({n_fine}) t(f)
        union all
        select 1, c::integer, null::integer, 'coarse ' || c,
               (select count(*) from range({n_fine}) t(f) where f % {n_coarse} = c)::integer * {per_cluster}
        from range({n_coarse}) t(c)""").pl()
    item_clusters = mem.sql(f"""
        select 'i' || lpad(i::varchar, 7, '0') as item_id, l.level::integer as level,
               (case when l.level = 2 then i % {n_fine} else (i % {n_fine}) % {n_coarse} end)::integer as cluster_id
        from range({n_items}) t(i) cross join (values (1), (2)) l(level)""").pl()
    mem.close()
    with warehouse.connect(db) as con:
        warehouse.write_tables(con, {
            config.RAW_ITEMS: items, config.CLUSTERS: clusters, config.ITEM_CLUSTERS: item_clusters,
        })
        # raw.interactions in SQL inside the file: at 100M events a Python frame would not fit
        _duckdb_settings(con, memory_limit, db.parent / "duckdb_tmp")
        con.execute(f"""
        create or replace table {config.RAW_INTERACTIONS} as
        with events as (
            select i, hash(i, 1) % {n_users} as u, hash(i, 2) as h2, hash(i, 3) as h3,
                   hash(i, 4) as h4, hash(i, 5) as h5
            from range({n_events}) t(i)
        ),
        chosen as (
            select *,
                case when h3 % 10 < 7 then hash(u, h2 % 3) % {n_fine}   -- one of 3 home clusters
                     else (h3 // 10) % {n_fine} end as fine
            from events
        )
        select 'u' || lpad(u::varchar, 7, '0') as user_id,
               'i' || lpad((fine + {n_fine} * (h4 % {per_cluster}))::varchar, 7, '0') as item_id,
               timestamp '2022-01-01' + to_seconds((h5 % (730 * 86400))::bigint) as event_ts,
               (2.0 + ((h5 // 1000) % 7) / 2.0)::double as engagement
        from chosen""")
    return {"seconds": round(time.perf_counter() - t0, 2), "events": n_events, "users": n_users,
            "items": n_items, "fine_clusters": n_fine, "coarse_clusters": n_coarse}


def _duckdb_settings(con, memory_limit: str, temp_dir: Path) -> None:
    """DuckDB's buffer manager stays under memory_limit and spills to temp_dir beyond it."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    con.execute(f"set memory_limit = '{memory_limit}'")
    con.execute(f"set temp_directory = '{temp_dir}'")


# ---- dbt -------------------------------------------------------------------------------
def bench_profiles(work: Path, memory_limit: str) -> Path:
    """A profiles dir whose DuckDB target is the project's plus memory_limit (dbt-duckdb
    `settings`), so large sizes spill to disk instead of swapping; the spark target is
    the project's own."""
    import yaml

    profiles = yaml.safe_load((config.DBT_PROJECT_DIR / "profiles.yml").read_text())
    outputs = profiles["interest_explorer"]["outputs"]
    # temp_directory stays DuckDB's default (<database file>.tmp, beside the file): dbt-duckdb
    # SETs its settings on every new cursor, and DuckDB refuses to switch the temp
    # directory once it has spilled, even to the same path
    outputs["dev"]["settings"] = {"memory_limit": memory_limit}
    folder = work / "profiles"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "profiles.yml").write_text(yaml.safe_dump(profiles, sort_keys=False))
    return folder


def _descendants(root: int) -> list[int]:
    """Live descendants of ``root`` (Linux /proc)."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        kids = [c for c, pp in parent.items() if pp == pid]
        out += kids
        todo += kids
    return out


def _proc_usage(pid: int) -> tuple[float, float] | None:
    """(peak RSS MB, CPU s) of a live process."""
    try:
        hwm = next(int(line.split()[1]) / 1024.0 for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmHWM:"))
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return hwm, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, IndexError, ValueError):
        return None


def _run_measured(cmd: list[str], env: dict, cwd: Path, watch: dict | None = None) -> tuple[float, float, float, int, str]:
    """Run a subprocess; return (wall s, CPU s (user + sys, all threads), peak RSS MB of that
    child, rc, output tail). The parent stays small (data is generated in a subprocess),
    so the child's peak RSS is its own, not the forked parent's. With ``watch`` (a dict),
    descendants the child does not wait for (Spark's JVM) are polled every 0.5 s: their
    largest peak RSS and summed CPU seconds go into it."""
    log = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    seen: dict[int, tuple[float, float]] = {}
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG if watch is not None else 0)
        if pid:
            break
        for child in _descendants(proc.pid):
            usage = _proc_usage(child)
            if usage is not None:
                seen[child] = usage
        time.sleep(0.5)
    if watch is not None:
        watch["descendants_peak_mb"] = round(max((u[0] for u in seen.values()), default=0.0))
        watch["descendants_cpu_s"] = round(sum(u[1] for u in seen.values()), 2)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.seek(0)
    tail = log.read().decode(errors="replace")[-3000:]
    return wall, rusage.ru_utime + rusage.ru_stime, rusage.ru_maxrss / 1024.0, proc.returncode, tail


def _dbt(args: list[str], db: Path, target: Path, profiles: Path, env: dict | None = None,
         watch: dict | None = None) -> tuple[float, float, float, dict]:
    env = dict(env or os.environ, DUCKDB_DATABASE=str(db))
    cmd = [str(DBT), *args, "--profiles-dir", str(profiles),
           "--target-path", str(target), "--log-path", str(target / "logs")]
    wall, cpu, peak_mb, rc, tail = _run_measured(cmd, env, config.DBT_PROJECT_DIR, watch)
    if rc != 0:
        raise RuntimeError(f"dbt {' '.join(args)} failed (rc={rc}):\n{tail}")
    run_results = target / "run_results.json"
    results = json.loads(run_results.read_text())["results"] if args[0] != "parse" else []
    node_seconds = {r["unique_id"]: r["execution_time"] for r in results}
    return wall, cpu, peak_mb, node_seconds


def run_dbt(db: Path, work: Path, profiles: Path, build_only: bool = False) -> dict:
    """One `dbt run` subprocess per stage, then one full `dbt build`; with ``build_only``
    the build alone, each mart's model_s then from the build's run_results.json (the
    marts overlap with tests on dbt's 2 threads there).

    model_s is the model's execution_time from run_results.json (no dbt start-up);
    cpu_s is the whole subprocess, start-up included (the query's own CPU is measured by
    duckdb_in_process)."""
    target = work / "dbt_target"
    _dbt(["parse"], db, target, profiles)  # parse once so every stage starts from the same manifest
    stages = {}
    if build_only:
        wall, cpu, peak, nodes = _dbt(["build", *FOUNDATION_SELECT], db, target, profiles)
        stages = {stage: {"model_s": round(nodes[f"model.interest_explorer.{model}"], 2)}
                  for stage, model in STAGES.items()}
        return {
            "stages": stages,
            "models_total_s": round(sum(v["model_s"] for v in stages.values()), 2),
            "peak_mb": round(peak),
            "build": {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_mb": round(peak),
                      "model_nodes_s": round(sum(v for k, v in nodes.items() if k.startswith("model.")), 2),
                      "test_nodes_s": round(sum(v for k, v in nodes.items() if k.startswith(("test.", "unit_test."))), 2),
                      "note": "--build-only: the one `dbt build` of the foundation (views, 4 marts, data and unit "
                              "tests) with dbt start-up; stages' model_s are its node times (2 threads)"},
        }
    wall, cpu, peak, _ = _dbt(["run", "--select", *STAGING], db, target, profiles)
    stages["staging"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_mb": round(peak)}
    for stage, model in STAGES.items():
        wall, cpu, peak, nodes = _dbt(["run", "--select", model], db, target, profiles)
        stages[stage] = {"wall_s": round(wall, 2), "model_s": round(nodes[f"model.interest_explorer.{model}"], 2),
                         "cpu_s": round(cpu, 2),
                         "peak_mb": round(peak)}
    build_wall, build_cpu, build_peak, nodes = _dbt(["build", *FOUNDATION_SELECT], db, target, profiles)
    return {
        "stages": stages,
        "models_total_s": round(sum(stages[s]["model_s"] for s in STAGES), 2),
        "peak_mb": max(v["peak_mb"] for v in stages.values()),
        "build": {"wall_s": round(build_wall, 2), "cpu_s": round(build_cpu, 2), "peak_mb": round(build_peak),
                  "model_nodes_s": round(sum(v for k, v in nodes.items() if k.startswith("model.")), 2),
                  "test_nodes_s": round(sum(v for k, v in nodes.items() if k.startswith(("test.", "unit_test."))), 2),
                  "note": "one `dbt build` of the foundation (views, 4 marts, data and unit tests) with dbt "
                          "start-up; *_nodes_s sum node times that overlap across dbt's 2 threads"},
    }


def duckdb_in_process(db: Path, work: Path, memory_limit: str) -> dict:
    """Each mart's SQL as dbt compiled it, run again in this process into a scratch table:
    CPU seconds (all DuckDB threads) of the query alone, free of dbt's start-up noise that
    dominates a subprocess's CPU at small sizes."""
    compiled = work / "dbt_target" / "compiled" / "interest_explorer" / "models" / "marts"
    stages = {}
    with warehouse.connect(db) as con:
        _duckdb_settings(con, memory_limit, work / "duckdb_tmp")
        for stage, model in STAGES.items():
            sql = (compiled / f"{model}.sql").read_text()
            t0, c0 = time.perf_counter(), _cpu()
            con.execute(f"create or replace table main.bench_scratch as {sql}")
            stages[stage] = {"wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(_cpu() - c0, 2)}
            con.execute("drop table main.bench_scratch")
    return {**stages,
            "total_wall_s": round(sum(v["wall_s"] for v in stages.values()), 2),
            "total_cpu_s": round(sum(v["cpu_s"] for v in stages.values()), 2)}


def dbt_counts(db: Path) -> dict:
    with warehouse.connect(db, read_only=True) as con:
        def one(sql):
            return con.execute(sql).fetchone()[0]
        return {
            "sequences": one(f"select count(*) from {config.USER_CLUSTER_SEQUENCES}"),
            "novel_examples": one(f"select count(*) from {config.NOVEL_TRANSITION_EXAMPLES}"),
            "training_pairs": one(f"select count(*) from {config.TRAINING_PAIRS}"),
            "uci_at_n": one(f"select count(*) from {config.UCI_AT_N}"),
            "uci_sum": int(one(f"select sum(uci) from {config.UCI_AT_N}")),
        }


# ---- pandas baseline --------------------------------------------------------------------
def _hwm_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _hwm_mb(field: str = "VmHWM") -> float:
    """Peak RSS (VmHWM, reset per stage) or peak address space (VmPeak: what RLIMIT_AS caps)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no {field} in /proc/self/status")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _unit_hash(*cols: pd.Series) -> np.ndarray:
    """Deterministic [0, 1) from columns (pandas' own hash; DuckDB's hash() differs)."""
    h = np.zeros(len(cols[0]), dtype=np.uint64)
    for c in cols:
        h = h * np.uint64(1_000_003) ^ pd.util.hash_array(np.asarray(c))
    return h / 2.0**64


def pandas_derivations(db: Path, v: dict, user_share: float) -> dict:
    """The four marts in plain pandas, same definitions as the dbt models (K = 2)."""
    k = int(v["k"])
    if k != 2:
        raise ValueError("the pandas baseline implements K = 2 (the default)")
    stages: dict[str, dict] = {}
    clear_ok = _hwm_reset()

    def timed(name, fn):
        _hwm_reset()
        t0, c0 = time.perf_counter(), _cpu()
        out = fn()
        stages[name] = {"wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(_cpu() - c0, 2),
                        "peak_mb": round(_hwm_mb()), "address_space_peak_mb": round(_hwm_mb("VmPeak"))}
        return out

    def load():
        with warehouse.connect(db, read_only=True) as con:
            inter = con.execute(f"select * from {config.RAW_INTERACTIONS}").df()
            ic = con.execute(f"select * from {config.ITEM_CLUSTERS}").df()
        if user_share < 1.0:
            users = inter["user_id"].drop_duplicates().sort_values()
            keep = users[_unit_hash(users) < user_share]
            inter = inter[inter["user_id"].isin(keep)]
        return inter, ic

    inter, ic = timed("load", load)

    def sequences():
        pos = inter.loc[inter["engagement"] >= v["positive_threshold"], ["user_id", "item_id", "event_ts"]]
        ev = pos.merge(ic, on="item_id", how="inner")
        ev = ev.sort_values(["user_id", "level", "event_ts", "item_id"], kind="stable", ignore_index=True)
        prev = ev.groupby(["user_id", "level"], sort=False)["cluster_id"].shift()
        ev["starts_run"] = (ev["cluster_id"] != prev).astype("int64")
        ev["seq_pos"] = ev.groupby(["user_id", "level"], sort=False)["starts_run"].cumsum()
        seq = (ev.groupby(["user_id", "level", "seq_pos"], sort=False)
                 .agg(cluster_id=("cluster_id", "first"), first_ts=("event_ts", "min"),
                      last_ts=("event_ts", "max"), n_events=("event_ts", "size"))
                 .reset_index())
        return ev, seq

    ev, seq = timed("sequences", sequences)

    def novel_examples():
        s = seq.sort_values(["user_id", "level", "seq_pos"], ignore_index=True)
        g = s.groupby(["user_id", "level"], sort=False)["cluster_id"]
        s["prev_2"], s["prev_1"] = g.shift(2), g.shift(1)
        has_history = s["prev_2"].notna()
        if v["novelty_mode"] == "strict":
            first = s.groupby(["user_id", "level", "cluster_id"], sort=False)["seq_pos"].transform("min")
            keep = has_history & (s["seq_pos"] == first)
        else:
            keep = has_history & (s["cluster_id"] != s["prev_2"])
        ex = s.loc[keep, ["user_id", "level", "seq_pos", "cluster_id", "first_ts", "prev_2", "prev_1"]].copy()
        ex["prev_2"] = ex["prev_2"].astype("int64")
        ex["prev_1"] = ex["prev_1"].astype("int64")
        ex["history"] = [[a, b] for a, b in zip(ex["prev_2"], ex["prev_1"])]
        ex = ex.rename(columns={"cluster_id": "next_cluster_id", "first_ts": "event_ts"})
        ex["k"] = k
        ex["split"] = np.where(_unit_hash(ex["user_id"], np.full(len(ex), v["seed"])) < v["eval_share"], "eval", "train")
        return ex

    ex = timed("novel_examples", novel_examples)

    def training_pairs():
        t = ex.copy()
        t["sample_key"] = _unit_hash(t["user_id"], t["level"], t["k"], t["seq_pos"], np.full(len(t), v["seed"]))
        t = t.sort_values(["sample_key", "user_id", "seq_pos"], ignore_index=True)
        hist_rank = t.groupby(["level", "k", "split", "prev_2", "prev_1"], sort=False).cumcount()
        t = t[hist_rank < int(v["max_per_history"])]
        label_rank = t.groupby(["level", "k", "split", "next_cluster_id"], sort=False).cumcount()
        return t[label_rank < int(v["max_per_label"])]

    pairs = timed("training_pairs", training_pairs)

    def uci_at_n():
        w = int(v["uci_window_days"])
        days = (ev["event_ts"].values.astype("datetime64[D]").astype("int64"))
        e = pd.DataFrame({"user_id": ev["user_id"], "level": ev["level"], "cluster_id": ev["cluster_id"],
                          "window_index": np.floor_divide(days, w)})
        counts = e.groupby(["user_id", "level", "window_index", "cluster_id"], sort=False).size().rename("n_positive").reset_index()
        keys = ["user_id", "level", "window_index"]
        parts = []
        for n in v["uci_ns"]:
            part = (counts["n_positive"] >= n).groupby([counts[c] for c in keys], sort=False).sum().rename("uci").reset_index()
            part["n"] = n
            parts.append(part)
        out = pd.concat(parts, ignore_index=True)
        epoch = np.datetime64("1970-01-01", "D")
        out["window_start"] = epoch + (out["window_index"] * w).astype("timedelta64[D]")
        out["window_end"] = epoch + ((out["window_index"] + 1) * w).astype("timedelta64[D]")
        return out

    uci = timed("uci_at_n", uci_at_n)

    def persist():
        # dbt materializes its marts; to compare like with like, write the pandas results
        # to a scratch DuckDB file as well (reported separately from the derivations)
        import polars as pl
        scratch = db.with_suffix(".pandas_out.duckdb")
        frames = {
            "main.pd_sequences": seq[["user_id", "level", "seq_pos", "cluster_id", "first_ts", "last_ts", "n_events"]],
            "main.pd_novel_examples": ex[["user_id", "level", "k", "history", "next_cluster_id", "event_ts", "seq_pos", "split"]],
            "main.pd_training_pairs": pairs[["level", "k", "history", "next_cluster_id", "split", "user_id", "event_ts", "seq_pos"]],
            "main.pd_uci_at_n": uci[["user_id", "level", "window_start", "window_end", "n", "uci"]],
        }
        with warehouse.connect(scratch) as con:
            warehouse.write_tables(con, {t: pl.from_pandas(f) for t, f in frames.items()})
        scratch.unlink()

    timed("write", persist)
    return {
        "stages": stages,
        "peak_reset_per_stage": clear_ok,
        "counts": {"sequences": len(seq), "novel_examples": len(ex), "training_pairs": len(pairs),
                   "uci_at_n": len(uci), "uci_sum": int(uci["uci"].sum())},
    }


# ---- polars baseline --------------------------------------------------------------------
def export_inputs(db: Path, folder: Path, memory_limit: str) -> float:
    """raw.interactions and ml.item_clusters as Parquet for the polars scans (seconds)."""
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with warehouse.connect(db, read_only=True) as con:
        _duckdb_settings(con, memory_limit, folder.parent / "duckdb_tmp")
        for table, name in ((config.RAW_INTERACTIONS, "interactions"), (config.ITEM_CLUSTERS, "item_clusters")):
            con.execute(f"copy {table} to '{folder / name}.parquet' (format parquet)")
    return round(time.perf_counter() - t0, 2)


def polars_derivations(inputs: Path, out: Path, v: dict) -> dict:
    """The four marts as polars lazy queries run by the streaming engine, each sunk to
    Parquet (materialized, as dbt's tables are) and read back by the next stage."""
    import polars as pl

    k = int(v["k"])
    if k != 2:
        raise ValueError("the polars baseline implements K = 2 (the default)")
    out.mkdir(parents=True, exist_ok=True)
    stages: dict[str, dict] = {}
    clear_ok = _hwm_reset()

    def timed(name, plan):
        _hwm_reset()
        t0, c0 = time.perf_counter(), _cpu()
        plan.sink_parquet(out / f"{name}.parquet", engine="streaming")
        stages[name] = {"wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(_cpu() - c0, 2),
                        "peak_mb": round(_hwm_mb()), "address_space_peak_mb": round(_hwm_mb("VmPeak"))}
        return pl.scan_parquet(out / f"{name}.parquet")

    def unit_hash(*cols) -> pl.Expr:  # polars' own hash (DuckDB's and pandas' differ)
        return pl.struct(*cols).hash(seed=int(v["seed"])).cast(pl.Float64) / 2.0**64

    user_level = ["user_id", "level"]
    positive = (pl.scan_parquet(inputs / "interactions.parquet")
                .filter(pl.col("engagement") >= v["positive_threshold"])
                .select("user_id", "item_id", "event_ts")
                .join(pl.scan_parquet(inputs / "item_clusters.parquet"), on="item_id", how="inner"))
    ev = (positive.sort("user_id", "level", "event_ts", "item_id")
          .with_columns(starts_run=(pl.col("cluster_id") != pl.col("cluster_id").shift().over(user_level))
                        .fill_null(True).cast(pl.Int64))
          .with_columns(seq_pos=pl.col("starts_run").cum_sum().over(user_level)))
    seq = timed("sequences", ev.group_by("user_id", "level", "seq_pos").agg(
        cluster_id=pl.col("cluster_id").first(), first_ts=pl.col("event_ts").min(),
        last_ts=pl.col("event_ts").max(), n_events=pl.len()))

    s = (seq.sort("user_id", "level", "seq_pos")
         .with_columns(prev_2=pl.col("cluster_id").shift(2).over(user_level),
                       prev_1=pl.col("cluster_id").shift(1).over(user_level)))
    if v["novelty_mode"] == "strict":
        keep = pl.col("prev_2").is_not_null() & (
            pl.col("seq_pos") == pl.col("seq_pos").min().over("user_id", "level", "cluster_id"))
    else:
        keep = pl.col("prev_2").is_not_null() & (pl.col("cluster_id") != pl.col("prev_2"))
    ex = timed("novel_examples", s.filter(keep).select(
        "user_id", "level", pl.lit(k).alias("k"), pl.concat_list("prev_2", "prev_1").alias("history"),
        "prev_2", "prev_1", pl.col("cluster_id").alias("next_cluster_id"), pl.col("first_ts").alias("event_ts"),
        "seq_pos", pl.when(unit_hash("user_id") < v["eval_share"]).then(pl.lit("eval")).otherwise(pl.lit("train"))
        .alias("split")))

    ranked = ex.with_columns(sample_key=unit_hash("user_id", "level", "k", "seq_pos")).sort(
        "sample_key", "user_id", "seq_pos")
    capped = ranked.filter(pl.int_range(pl.len()).over("level", "k", "split", "prev_2", "prev_1")
                           < int(v["max_per_history"]))
    pairs = timed("training_pairs", capped.filter(
        pl.int_range(pl.len()).over("level", "k", "split", "next_cluster_id") < int(v["max_per_label"])))

    w = int(v["uci_window_days"])
    keys = ["user_id", "level", "window_index"]
    per_window = (positive.with_columns(window_index=pl.col("event_ts").dt.epoch("d") // w)
                  .group_by(*keys, "cluster_id").agg(n_positive=pl.len())
                  .group_by(*keys).agg([(pl.col("n_positive") >= n).sum().alias(str(n)) for n in v["uci_ns"]]))
    uci = timed("uci_at_n", per_window.unpivot(index=keys, variable_name="n", value_name="uci").select(
        "user_id", "level",
        (pl.col("window_index") * w).cast(pl.Int32).cast(pl.Date).alias("window_start"),
        ((pl.col("window_index") + 1) * w).cast(pl.Int32).cast(pl.Date).alias("window_end"),
        pl.col("n").cast(pl.Int32), "uci"))

    def height(lf) -> int:
        return int(lf.select(pl.len()).collect().item())

    return {
        "stages": stages,
        "engine": "streaming",
        "peak_reset_per_stage": clear_ok,
        "counts": {"sequences": height(seq), "novel_examples": height(ex), "training_pairs": height(pairs),
                   "uci_at_n": height(uci), "uci_sum": int(uci.select(pl.col("uci").sum()).collect().item())},
    }


# ---- capped worker subprocesses ---------------------------------------------------------
# What a process sees when the address-space cap refuses an allocation: numpy/pandas
# MemoryError, Rust's (polars) abort message, DuckDB's own out-of-memory error.
OOM_MARKERS = ("memoryerror", "unable to allocate", "memory allocation of", "out of memory",
               "cannot allocate memory", "std::bad_alloc", "failed to allocate")  # matched lower-case


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def run_capped(cmd: list[str], cap_mb: int, timeout: float, kind: str = "as") -> dict:
    """Run a baseline worker under a memory cap of cap_mb: kind 'as' is RLIMIT_AS (address
    space, so reserved virtual memory counts too: stricter than RSS; an allocation past
    it fails inside the worker), kind 'rss' polls the worker's resident set every 50 ms
    and kills it past the cap. Either way the machine's memory is never at stake.
    Returns outcome ('ok', 'exceeded_cap', 'timeout', 'failed'), wall seconds, the
    worker's peak RSS and rc."""
    cap = cap_mb * 1024 * 1024

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    log = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, preexec_fn=limit if kind == "as" else None)
    timed_out = killed_at_cap = False
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - t0 > timeout:
            proc.kill()
            timed_out = True
        if kind == "rss" and not killed_at_cap and _rss_mb(proc.pid) > cap_mb:
            proc.kill()
            killed_at_cap = True
        time.sleep(0.05 if kind == "rss" else 0.2)
    rc = os.waitstatus_to_exitcode(status)
    log.seek(0)
    tail = log.read().decode(errors="replace")[-2000:]
    outcome = "ok" if rc == 0 else "timeout" if timed_out else (
        "exceeded_cap" if killed_at_cap or (kind == "as" and (rc < 0 or any(m in tail.lower() for m in OOM_MARKERS)))
        else "failed")
    res = {"outcome": outcome, "wall_s": round(time.perf_counter() - t0, 2), "rc": rc,
           "peak_rss_mb": round(rusage.ru_maxrss / 1024.0), "cap_mb": cap_mb, "cap_kind": kind}
    if outcome != "ok":
        res["stderr_tail"] = tail[-600:]
    return res


def run_pandas(db: Path, v: dict, user_share: float, timeout: float, cap_mb: int, kind: str) -> dict:
    out = db.with_suffix(".pandas.json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--pandas-worker", str(db), "--worker-out", str(out),
           "--vars", json.dumps(v), "--pandas-sample", str(user_share)]
    run = run_capped(cmd, cap_mb, timeout, kind)
    return {**json.loads(out.read_text()), "process": run} if run["outcome"] == "ok" else {"process": run}


def run_polars(inputs: Path, out: Path, v: dict, timeout: float, cap_mb: int, kind: str) -> dict:
    result = out / "polars.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--polars-worker", str(inputs), "--worker-out", str(result),
           "--vars", json.dumps(v), "--polars-out", str(out)]
    run = run_capped(cmd, cap_mb, timeout, kind)
    return {**json.loads(result.read_text()), "process": run} if run["outcome"] == "ok" else {"process": run}


# ---- spark -------------------------------------------------------------------------------
def run_spark(db: Path, work: Path, n_events: int) -> dict:
    """The staging views and the four marts on a local Spark session (the profile's spark
    target, its own folder per size): one `dbt run`, so the session starts once; model_s
    per mart from run_results.json, counts read back from Spark's Parquet marts."""
    from models_ml import spark

    spark.require_spark()
    spark_dir = work / f"spark_{n_events}"
    shutil.rmtree(spark_dir, ignore_errors=True)
    t0 = time.perf_counter()
    spark.export_sources(database=db, spark_dir=spark_dir)
    export_s = round(time.perf_counter() - t0, 2)
    # local mode runs in the driver JVM, whose default 1 GB heap is too small for 10M events
    env = dict(spark.dbt_env(spark_dir), PYSPARK_SUBMIT_ARGS=f"--driver-memory {SPARK_DRIVER_MEMORY} pyspark-shell")
    target = spark_dir / "dbt_target"
    args = ["run", "--target", "spark", "--vars", json.dumps(config.dbt_vars()),
            "--select", *STAGING, *STAGES.values()]
    jvm: dict = {}
    wall, cpu, peak, nodes = _dbt(args, db, target, config.DBT_PROJECT_DIR, env, watch=jvm)
    stages = {s: {"model_s": round(nodes[f"model.interest_explorer.{m}"], 2)} for s, m in STAGES.items()}
    marts = {s: spark.read_mart(f"{config.MARTS_SCHEMA}.{m}", spark_dir) for s, m in STAGES.items()}
    counts = {s: df.height for s, df in marts.items()}
    counts["uci_sum"] = int(marts["uci_at_n"]["uci"].sum())
    res = {"export_s": export_s, "run_wall_s": round(wall, 2), "dbt_process_cpu_s": round(cpu, 2),
           "dbt_process_peak_mb": round(peak), "jvm_peak_mb": jvm["descendants_peak_mb"],
           "jvm_cpu_s": jvm["descendants_cpu_s"],
           "stages": stages, "models_total_s": round(sum(v["model_s"] for v in stages.values()), 2),
           "counts": counts, "driver_memory": SPARK_DRIVER_MEMORY,
           "note": "run_wall_s includes the JVM, session and metastore start and registering the sources; "
                   "jvm_* are the dbt process's descendants (the local-mode driver JVM), polled every 0.5 s"}
    shutil.rmtree(spark_dir, ignore_errors=True)
    return res


# ---- driver ------------------------------------------------------------------------------
SPARK_DRIVER_MEMORY = "4g"


def _exponent(small: float, large: float, n_small: int, n_large: int) -> float:
    return round(math.log(large / small) / math.log(n_large / n_small), 3)


def _generate_in_subprocess(db: Path, n_events: int, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--generate-worker", str(db), "--sizes", str(n_events),
           "--users", str(args.users), "--items", str(args.items), "--fine", str(args.fine), "--coarse", str(args.coarse),
           "--memory-limit", args.memory_limit]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"data generation failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def _baseline_totals(res: dict, scale: float = 1.0) -> tuple[float, float]:
    derivations = [s for s in res["stages"] if s not in ("load", "write")]
    return (round(scale * sum(res["stages"][s]["wall_s"] for s in derivations), 2),
            round(scale * sum(res["stages"][s]["cpu_s"] for s in derivations), 2))


def bench_size(n_events: int, args, work: Path, skip: dict[str, int]) -> dict:
    """One size. ``skip``: baseline -> the smallest size at which it exceeded its cap
    (larger sizes are not attempted)."""
    db = work / f"scaling_{n_events}.duckdb"
    load_before = [round(x, 2) for x in os.getloadavg()]
    if args.reuse_db and db.exists():  # a kept file of the same size (--keep, or a failed run)
        with warehouse.connect(db, read_only=True) as con:
            n, pos = con.execute(f"select count(*), count(*) filter (where engagement >= ?) "
                                 f"from {config.RAW_INTERACTIONS}", [config.dbt_vars()["positive_threshold"]]).fetchone()
        if n != n_events:
            raise ValueError(f"{db} holds {n} events, not {n_events}")
        data = {"reused": str(db), "events": n, "positive_events": pos}
    else:
        if db.exists():
            db.unlink()
        data = _generate_in_subprocess(db, n_events, args)
    v = config.dbt_vars()
    profiles = bench_profiles(work, args.memory_limit)
    dbt_res = run_dbt(db, work, profiles, args.build_only)
    dbt_res["counts"] = dbt_counts(db)
    if not args.skip_in_process:
        dbt_res["in_process"] = duckdb_in_process(db, work, args.memory_limit)
    dbt_peak = max(dbt_res["peak_mb"], dbt_res["build"]["peak_mb"])
    res = {
        "data": data,
        "loadavg_1_5_15": {"before": load_before},
        "dbt": dbt_res,
        "duckdb_memory_limit": args.memory_limit,
        "dbt_peak_mb": dbt_peak,
        "ratios": {"note": "baseline derivations (load from DuckDB / Parquet export and pandas' writes excluded "
                           "unless named) over the dbt models' execution_time (which includes materializing the "
                           "tables; dbt start-up excluded); the same run, the same data"},
    }
    models_s = dbt_res["models_total_s"]
    for name in args.baselines:
        if name in skip and n_events >= skip[name]:
            res[name] = {"outcome": "not_attempted",
                         "note": f"exceeded the {args.cap_mb} MB cap at {skip[name]} events already"}
            continue
        if name == "pandas":
            share = args.pandas_sample
            out = run_pandas(db, v, share, args.baseline_timeout, args.cap_mb, args.cap_kind)
            scale = 1.0 / share
            if share < 1.0:
                out["extrapolation"] = (f"pandas ran on a {share:.0%} user sample; its seconds are scaled x{scale:g} "
                                        "(linear in events) in the totals and ratios; peak MB are not scaled")
        else:
            scale = 1.0
            inputs = work / f"parquet_{n_events}"
            export_s = export_inputs(db, inputs, args.memory_limit)
            out = run_polars(inputs, work / f"polars_{n_events}", v, args.baseline_timeout, args.cap_mb,
                             args.cap_kind)
            out["export_parquet_s"] = export_s
            shutil.rmtree(inputs, ignore_errors=True)
            shutil.rmtree(work / f"polars_{n_events}", ignore_errors=True)
        res[name] = out
        if out["process"]["outcome"] != "ok":
            if out["process"]["outcome"] == "exceeded_cap":
                skip[name] = n_events
            continue
        wall, cpu = _baseline_totals(out, scale)
        out["total_wall_s"], out["total_cpu_s"] = wall, cpu
        out["peak_mb"] = max(st["peak_mb"] for st in out["stages"].values())
        out["address_space_peak_mb"] = max(st.get("address_space_peak_mb", 0) for st in out["stages"].values())
        res["ratios"][f"{name}_over_dbt_model_wall"] = round(wall / models_s, 2)
        res["ratios"][f"{name}_per_stage_wall"] = {
            s: round(scale * out["stages"][s]["wall_s"] / dbt_res["stages"][s]["model_s"], 2) for s in STAGES}
        if "in_process" in dbt_res:
            res["ratios"][f"{name}_over_duckdb_in_process_cpu"] = round(
                cpu / max(dbt_res["in_process"]["total_cpu_s"], 1e-9), 2)
        if name == "pandas":
            res["ratios"]["pandas_with_write_over_dbt_model_wall"] = round(
                (wall + scale * out["stages"]["write"]["wall_s"]) / models_s, 2)
        if name == "pandas" and args.pandas_sample < 1.0:
            continue
        keys = ("sequences", "novel_examples", "uci_at_n", "uci_sum")  # training pairs: hash-dependent
        mismatches = {key: (dbt_res["counts"][key], out["counts"][key]) for key in keys
                      if dbt_res["counts"][key] != out["counts"][key]}
        res[f"dbt_matches_{name}"] = not mismatches
        if mismatches:
            res[f"{name}_mismatches"] = mismatches
    if "polars" in res and "total_wall_s" in res["polars"]:
        res["dbt_models_at_least_as_fast_as_polars"] = models_s <= res["polars"]["total_wall_s"]
    if args.target == "spark":
        sp = run_spark(db, work, n_events)
        res["spark"] = sp
        res["ratios"]["spark_over_dbt_model_wall"] = round(sp["models_total_s"] / models_s, 2)
        res["dbt_matches_spark"] = all(dbt_res["counts"][key] == sp["counts"][key]
                                       for key in ("sequences", "novel_examples", "training_pairs", "uci_at_n", "uci_sum"))
    res["loadavg_1_5_15"]["after"] = [round(x, 2) for x in os.getloadavg()]
    res["loadavg_1_5_15"]["note"] = "the machine is shared: wall seconds inflate with load, CPU seconds much less"
    if not args.keep:
        db.unlink()
    shutil.rmtree(work / "duckdb_tmp", ignore_errors=True)
    return res


def summary(results: dict[str, dict], sizes: list[int]) -> dict:
    """Growth exponents from the smallest size, the 8 GB and polars targets, and each
    baseline's largest size within its cap."""
    lo = str(sizes[0])
    out: dict = {"growth_exponent_from_smallest": {
        "note": f"log(t_n / t_{sizes[0]}) / log(n / {sizes[0]}); 1.0 = linear, below 1 = better than linear"}}
    for n in sizes[1:]:
        a, b = results[lo], results[str(n)]
        e = {"dbt_models_wall": _exponent(a["dbt"]["models_total_s"], b["dbt"]["models_total_s"], sizes[0], n),
             "dbt_build_wall": _exponent(a["dbt"]["build"]["wall_s"], b["dbt"]["build"]["wall_s"], sizes[0], n)}
        if "in_process" in a["dbt"] and "in_process" in b["dbt"]:
            e["duckdb_in_process_cpu"] = _exponent(a["dbt"]["in_process"]["total_cpu_s"],
                                                   b["dbt"]["in_process"]["total_cpu_s"], sizes[0], n)
        for name in ("pandas", "polars"):
            if "total_wall_s" in a.get(name, {}) and "total_wall_s" in b.get(name, {}):
                e[f"{name}_wall"] = _exponent(a[name]["total_wall_s"], b[name]["total_wall_s"], sizes[0], n)
        out["growth_exponent_from_smallest"][str(n)] = e
    out["dbt_peak_mb"] = {str(n): results[str(n)]["dbt_peak_mb"] for n in sizes}
    out["dbt_peak_under_8gb"] = all(results[str(n)]["dbt_peak_mb"] < 8192 for n in sizes)
    for name in ("pandas", "polars"):
        held = [n for n in sizes if results[str(n)].get(name, {}).get("process", {}).get("outcome") == "ok"]
        failed = [n for n in sizes if results[str(n)].get(name, {}).get("process", {}).get("outcome") == "exceeded_cap"]
        if held or failed:
            out[f"{name}_largest_within_cap"] = max(held) if held else None
            out[f"{name}_first_over_cap"] = min(failed) if failed else None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,10000000", help="comma-separated event counts")
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--fine", type=int, default=40)
    ap.add_argument("--coarse", type=int, default=8)
    ap.add_argument("--target", choices=("duckdb", "spark"), default="duckdb",
                    help="spark: the marts on a local Spark session as well (baselines off unless --baselines)")
    ap.add_argument("--baselines", default=None, help="comma-separated: pandas,polars (default both; none with "
                                                       "--target spark)")
    ap.add_argument("--memory-limit", default="4GB", help="DuckDB memory_limit (dbt and the bench's own connections)")
    ap.add_argument("--cap-mb", type=int, default=8192, help="memory cap of each baseline worker")
    ap.add_argument("--cap-kind", choices=("as", "rss"), default="as",
                    help="as: address space (RLIMIT_AS, the default); rss: resident set, polled and killed past the cap")
    ap.add_argument("--pandas-sample", type=float, default=1.0,
                    help="share of users the pandas baseline runs on; its seconds are scaled linearly (stated in the JSON)")
    ap.add_argument("--baseline-timeout", type=float, default=1800.0)
    ap.add_argument("--skip-in-process", action="store_true", help="skip re-running the marts' SQL in process")
    ap.add_argument("--build-only", action="store_true",
                    help="one `dbt build` per size instead of a `dbt run` per stage and then the build")
    ap.add_argument("--out", default=None, help="also write the JSON here, after every size (partial runs are kept)")
    ap.add_argument("--workdir", default=None, help="where the temporary DuckDB files go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated DuckDB files")
    ap.add_argument("--reuse-db", action="store_true",
                    help="use scaling_<n>.duckdb already in --workdir (same generator) instead of generating it")
    ap.add_argument("--pandas-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--polars-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--polars-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--generate-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--vars", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.generate_worker:
        db = Path(args.generate_worker)
        data = generate(db, int(args.sizes), args.users, args.items, args.fine, args.coarse, args.memory_limit)
        with warehouse.connect(db, read_only=True) as con:
            data["positive_events"] = con.execute(
                f"select count(*) from {config.RAW_INTERACTIONS} where engagement >= ?",
                [config.dbt_vars()["positive_threshold"]]).fetchone()[0]
        print(json.dumps(data))
        return 0
    if args.pandas_worker:
        res = pandas_derivations(Path(args.pandas_worker), json.loads(args.vars), args.pandas_sample)
        Path(args.worker_out).write_text(json.dumps(res))
        return 0
    if args.polars_worker:
        res = polars_derivations(Path(args.polars_worker), Path(args.polars_out), json.loads(args.vars))
        Path(args.worker_out).write_text(json.dumps(res))
        return 0
    if not 0.0 < args.pandas_sample <= 1.0:
        ap.error("--pandas-sample must be in (0, 1]")
    if args.baselines is None:
        args.baselines = "" if args.target == "spark" else "pandas,polars"
    args.baselines = [b for b in args.baselines.split(",") if b and b != "none"]
    if set(args.baselines) - {"pandas", "polars"}:
        ap.error("--baselines takes pandas, polars or none")

    import polars as pl

    sizes = [int(s) for s in args.sizes.split(",")]  # in the order given: the largest need not come last
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="ie_scaling_"))
    work.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "warehouse_scaling",
        "target": args.target,
        "machine": {"cpus": os.cpu_count(), "duckdb": duckdb.__version__, "pandas": pd.__version__,
                    "polars": pl.__version__, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                    "niceness": os.nice(0)},
        "caps": {"baseline_cap_mb": args.cap_mb, "baseline_cap_kind": args.cap_kind,
                 "duckdb_memory_limit": args.memory_limit,
                 "note": "pandas and polars run in worker subprocesses under the cap (as: RLIMIT_AS, address space, "
                         "reservations included; rss: resident set, polled): 'exceeded_cap' means the worker passed "
                         "that cap, not that the machine ran out of memory"},
        "dbt_vars": config.dbt_vars(),
        "sizes": {},
    }
    skip: dict[str, int] = {}
    try:
        for n in sizes:
            doc["sizes"][str(n)] = bench_size(n, args, work, skip)
            done = sorted(m for m in sizes if str(m) in doc["sizes"])
            doc["summary"] = summary(doc["sizes"], done)
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
