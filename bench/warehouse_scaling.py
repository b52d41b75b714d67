"""Warehouse scaling: the dbt marts (DuckDB) against the same derivations in pandas.

For each size (events) it generates synthetic raw.interactions / raw.items /
ml.clusters / ml.item_clusters (100k users, 20k items, 40 fine and 8 coarse clusters
by default) into a temporary DuckDB file, then

* dbt: one `dbt run --select <model>` subprocess per stage (sequences, novel examples,
  training pairs, UCI@N; the staging views first), timed by wall clock and by the
  model's execution_time in run_results.json, peak RSS of that subprocess from
  os.wait4; then one full `dbt build` of the foundation (models + data + unit tests);
  then each mart's compiled SQL once more in this process, for the query's own CPU
  seconds (all DuckDB threads) without dbt's start-up;
* pandas: the same derivations written in plain pandas (sort, groupby-shift, cumsum,
  groupby-cumcount) in a worker subprocess, each stage timed with its own peak RSS
  (VmHWM reset per stage through /proc/self/clear_refs).

The derivations are checked against each other (row counts of sequences, examples
and UCI@N must match; training pairs differ only through the hash used for sampling)
and one JSON document is printed: per size and stage seconds and peak MB, the ratios
pandas/dbt (wall and CPU, and the wall ratio that perfect use of every core would give
at the measured CPU ratio) and the scaling exponent between the smallest and largest size.

    .venv/bin/python bench/warehouse_scaling.py                    # 1M and 10M events
    .venv/bin/python bench/warehouse_scaling.py --sizes 100000     # quick check
    .venv/bin/python bench/warehouse_scaling.py --pandas-sample 0.2  # pandas on 20% of users, scaled x5
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
def generate(db: Path, n_events: int, n_users: int, n_items: int, n_fine: int, n_coarse: int) -> dict:
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
    interactions = mem.sql(f"""
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
        from chosen""").pl()
    mem.close()
    with warehouse.connect(db) as con:
        warehouse.write_tables(con, {
            config.RAW_ITEMS: items, config.RAW_INTERACTIONS: interactions,
            config.CLUSTERS: clusters, config.ITEM_CLUSTERS: item_clusters,
        })
    return {"seconds": round(time.perf_counter() - t0, 2), "events": n_events, "users": n_users,
            "items": n_items, "fine_clusters": n_fine, "coarse_clusters": n_coarse}


# ---- dbt -------------------------------------------------------------------------------
def _run_measured(cmd: list[str], env: dict, cwd: Path) -> tuple[float, float, float, int, str]:
    """Run a subprocess; return (wall s, CPU s (user + sys, all threads), peak RSS MB of that
    child, rc, output tail). The parent stays small (data is generated in a subprocess),
    so the child's peak RSS is its own, not the forked parent's."""
    log = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.seek(0)
    tail = log.read().decode(errors="replace")[-3000:]
    return wall, rusage.ru_utime + rusage.ru_stime, rusage.ru_maxrss / 1024.0, proc.returncode, tail


def _dbt(args: list[str], db: Path, target: Path) -> tuple[float, float, float, dict]:
    env = dict(os.environ, DUCKDB_DATABASE=str(db))
    cmd = [str(DBT), *args, "--profiles-dir", str(config.DBT_PROJECT_DIR),
           "--target-path", str(target), "--log-path", str(target / "logs")]
    wall, cpu, peak_mb, rc, tail = _run_measured(cmd, env, config.DBT_PROJECT_DIR)
    if rc != 0:
        raise RuntimeError(f"dbt {' '.join(args)} failed (rc={rc}):\n{tail}")
    run_results = target / "run_results.json"
    results = json.loads(run_results.read_text())["results"] if args[0] != "parse" else []
    node_seconds = {r["unique_id"]: r["execution_time"] for r in results}
    return wall, cpu, peak_mb, node_seconds


def run_dbt(db: Path, work: Path) -> dict:
    """One `dbt run` subprocess per stage, then one full `dbt build`.

    model_s is the model's execution_time from run_results.json (no dbt start-up);
    cpu_s is the whole subprocess, start-up included (the query's own CPU is measured by
    duckdb_in_process)."""
    target = work / "dbt_target"
    _dbt(["parse"], db, target)  # parse once so every stage starts from the same manifest
    stages = {}
    wall, cpu, peak, _ = _dbt(["run", "--select", *STAGING], db, target)
    stages["staging"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_mb": round(peak)}
    for stage, model in STAGES.items():
        wall, cpu, peak, nodes = _dbt(["run", "--select", model], db, target)
        stages[stage] = {"wall_s": round(wall, 2), "model_s": round(nodes[f"model.interest_explorer.{model}"], 2),
                         "cpu_s": round(cpu, 2),
                         "peak_mb": round(peak)}
    build_wall, build_cpu, build_peak, nodes = _dbt(["build", *FOUNDATION_SELECT], db, target)
    return {
        "stages": stages,
        "models_total_s": round(sum(stages[s]["model_s"] for s in STAGES), 2),
        "build": {"wall_s": round(build_wall, 2), "cpu_s": round(build_cpu, 2), "peak_mb": round(build_peak),
                  "model_nodes_s": round(sum(v for k, v in nodes.items() if k.startswith("model.")), 2),
                  "test_nodes_s": round(sum(v for k, v in nodes.items() if k.startswith(("test.", "unit_test."))), 2),
                  "note": "one `dbt build` of the foundation (views, 4 marts, data and unit tests) with dbt "
                          "start-up; *_nodes_s sum node times that overlap across dbt's 2 threads"},
    }


def duckdb_in_process(db: Path, work: Path) -> dict:
    """Each mart's SQL as dbt compiled it, run again in this process into a scratch table:
    CPU seconds (all DuckDB threads) of the query alone, free of dbt's start-up noise that
    dominates a subprocess's CPU at small sizes."""
    compiled = work / "dbt_target" / "compiled" / "interest_explorer" / "models" / "marts"
    stages = {}
    with warehouse.connect(db) as con:
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


def _hwm_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status")


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
                        "peak_mb": round(_hwm_mb())}
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


def run_pandas(db: Path, v: dict, user_share: float, timeout: float) -> dict:
    out = db.with_suffix(".pandas.json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--pandas-worker", str(db), "--worker-out", str(out),
           "--vars", json.dumps(v), "--pandas-sample", str(user_share)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"pandas worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


# ---- driver ------------------------------------------------------------------------------
def _exponent(small: float, large: float, n_small: int, n_large: int) -> float:
    return round(math.log(large / small) / math.log(n_large / n_small), 3)


def _generate_in_subprocess(db: Path, n_events: int, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--generate-worker", str(db), "--sizes", str(n_events),
           "--users", str(args.users), "--items", str(args.items), "--fine", str(args.fine), "--coarse", str(args.coarse)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"data generation failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def bench_size(n_events: int, args, work: Path) -> dict:
    db = work / f"scaling_{n_events}.duckdb"
    if db.exists():
        db.unlink()
    load_before = [round(x, 2) for x in os.getloadavg()]
    data = _generate_in_subprocess(db, n_events, args)
    v = config.dbt_vars()
    dbt_res = run_dbt(db, work)
    dbt_res["counts"] = dbt_counts(db)
    dbt_res["in_process"] = duckdb_in_process(db, work)
    share = args.pandas_sample
    pd_res = run_pandas(db, v, share, args.pandas_timeout)
    scale = 1.0 / share
    if share < 1.0:
        pd_res["extrapolation"] = (f"pandas ran on a {share:.0%} user sample; its seconds are scaled x{scale:g} "
                                   "(linear in events) in pandas_total_* and the ratios; peak MB are not scaled")
    derivations = [s for s in pd_res["stages"] if s not in ("load", "write")]
    pandas_wall = round(scale * sum(pd_res["stages"][s]["wall_s"] for s in derivations), 2)
    pandas_cpu = round(scale * sum(pd_res["stages"][s]["cpu_s"] for s in derivations), 2)
    res = {
        "data": data,
        "loadavg_1_5_15": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()],
                           "note": "the machine is shared: wall seconds inflate with load, CPU seconds much less"},
        "dbt": dbt_res,
        "pandas": pd_res,
        "pandas_total_wall_s": pandas_wall,
        "pandas_total_cpu_s": pandas_cpu,
        "pandas_load_s": round(scale * pd_res["stages"]["load"]["wall_s"], 2),
        "pandas_write_s": round(scale * pd_res["stages"]["write"]["wall_s"], 2),
        "ratios": {
            "note": "pandas derivations in memory (load from DuckDB and writing excluded unless named) over dbt "
                    "models (execution_time, which includes materializing the tables; dbt start-up excluded)",
            "pandas_over_dbt_model_wall": round(pandas_wall / dbt_res["models_total_s"], 2),
            "pandas_over_duckdb_in_process_wall": round(pandas_wall / max(dbt_res["in_process"]["total_wall_s"], 1e-9), 2),
            "pandas_over_duckdb_in_process_cpu": round(pandas_cpu / max(dbt_res["in_process"]["total_cpu_s"], 1e-9), 2),
            "pandas_with_write_over_dbt_model_wall": round(
                (pandas_wall + scale * pd_res["stages"]["write"]["wall_s"]) / dbt_res["models_total_s"], 2),
            "pandas_over_dbt_build_wall": round(pandas_wall / dbt_res["build"]["wall_s"], 2),
            # pandas runs on one core, DuckDB on all: with perfect parallel scaling the wall ratio
            # reaches at most (CPU-seconds ratio) x cores for the same per-core work
            "wall_ceiling_at_current_cpu_ratio": round(
                pandas_cpu / max(dbt_res["in_process"]["total_cpu_s"], 1e-9) * (os.cpu_count() or 1), 2),
            "per_stage_wall": {
                s: round(scale * pd_res["stages"][s]["wall_s"] / dbt_res["stages"][s]["model_s"], 2) for s in STAGES},
        },
    }
    if share >= 1.0:
        mismatches = {key: (dbt_res["counts"][key], pd_res["counts"][key])
                      for key in ("sequences", "novel_examples", "uci_at_n", "uci_sum")
                      if dbt_res["counts"][key] != pd_res["counts"][key]}
        res["dbt_matches_pandas"] = not mismatches
        if mismatches:
            res["mismatches"] = mismatches
    if not args.keep:
        db.unlink()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,10000000", help="comma-separated event counts")
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--fine", type=int, default=40)
    ap.add_argument("--coarse", type=int, default=8)
    ap.add_argument("--pandas-sample", type=float, default=1.0,
                    help="share of users the pandas baseline runs on; its seconds are scaled linearly (stated in the JSON)")
    ap.add_argument("--pandas-timeout", type=float, default=1800.0)
    ap.add_argument("--workdir", default=None, help="where the temporary DuckDB files go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated DuckDB files")
    ap.add_argument("--pandas-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--generate-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--vars", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.generate_worker:
        db = Path(args.generate_worker)
        data = generate(db, int(args.sizes), args.users, args.items, args.fine, args.coarse)
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
    if not 0.0 < args.pandas_sample <= 1.0:
        ap.error("--pandas-sample must be in (0, 1]")

    sizes = sorted(int(s) for s in args.sizes.split(","))
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="ie_scaling_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results = {str(n): bench_size(n, args, work) for n in sizes}
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    doc = {
        "benchmark": "warehouse_scaling",
        "machine": {"cpus": os.cpu_count(), "duckdb": duckdb.__version__, "pandas": pd.__version__},
        "dbt_vars": config.dbt_vars(),
        "sizes": results,
    }
    if len(sizes) > 1:
        lo, hi = str(sizes[0]), str(sizes[-1])
        doc["scaling_exponent"] = {
            "note": f"log(t_large / t_small) / log({sizes[-1]} / {sizes[0]}); 1.0 = linear",
            "dbt_models_wall": _exponent(results[lo]["dbt"]["models_total_s"], results[hi]["dbt"]["models_total_s"], sizes[0], sizes[-1]),
            "duckdb_in_process_cpu": _exponent(results[lo]["dbt"]["in_process"]["total_cpu_s"],
                                               results[hi]["dbt"]["in_process"]["total_cpu_s"], sizes[0], sizes[-1]),
            "dbt_build_wall": _exponent(results[lo]["dbt"]["build"]["wall_s"], results[hi]["dbt"]["build"]["wall_s"], sizes[0], sizes[-1]),
            "pandas_wall": _exponent(results[lo]["pandas_total_wall_s"], results[hi]["pandas_total_wall_s"], sizes[0], sizes[-1]),
        }
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
