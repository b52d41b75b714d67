"""Is a verdict on the demo data one world's noise? The main job on several independent
demo worlds (IE_DEMO_SEED: each seed draws its own theme successors, pair successors and
users), then lookup_evaluation's paired differences of the shipped `llm` lookup against
each count policy (and the scorer without the LLM, counts_alignment), per world and
pooled over the worlds. Prints JSON.

    .venv/bin/python bench/demo_worlds.py [--seeds 1 2 3 4] [--split-mode user] [--no-run]

Each world gets its own warehouse, warehouse/demo_seed<seed>[_time].duckdb, and Dagster
home; the run is `make materialize`'s (every asset, the default LLM settings) with the
refresh gates off, as `make evaluate` runs them, so a losing world is measured too. A
world already built re-uses its adapter and pair-inference shards. --no-run only reads.
About 10 minutes a world on the 2-core CPU. The embedded demo is seed 7.

Pooling: the worlds are independent, so the pooled difference is the transition-weighted
mean of the worlds' differences, and its standard error combines theirs, each read off
the world's 95% paired-bootstrap interval as (high - low) / (2 * 1.96).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models_ml import config  # noqa: E402
from models_ml import warehouse as wh  # noqa: E402
from models_ml.cli.report import COUNT_POLICIES, adapter_history  # noqa: E402
from models_ml.counts import SELECTION_M  # noqa: E402
from orchestration.evaluate import GATES_OFF  # noqa: E402

Z95 = 1.959964
ABLATION = "counts_alignment"  # the shipped scorer without the LLM's features


def thin_segment() -> str:
    """lookup_evaluation's label of the histories seen fewer than the second bound of var
    history_seen_bounds times in train (by default seen_0_4: the issue's thin histories)."""
    return f"seen_0_{int(config.dbt_vars()['history_seen_bounds'][1]) - 1}"


def pool(rows: list[tuple[float, float, float, int]]) -> dict:
    """Fixed-effect pooling of independent worlds' (difference, ci_low, ci_high, n):
    n-weighted mean, standard errors from the 95% intervals; with how many worlds lie
    above, at and below zero."""
    total = sum(n for *_, n in rows)
    value = sum(d * n for d, _, _, n in rows) / total
    se = math.sqrt(sum((n / total * (hi - lo) / (2 * Z95)) ** 2 for _, lo, hi, n in rows))
    # int(): numpy differences would make numpy counts, which json cannot write
    return {"value": float(value), "ci_low": float(value - Z95 * se), "ci_high": float(value + Z95 * se),
            "n": int(total), "worlds_above": int(sum(d > 0 for d, *_ in rows)),
            "worlds_level": int(sum(d == 0 for d, *_ in rows)), "worlds_below": int(sum(d < 0 for d, *_ in rows))}


def world_paths(seed: int, split_mode: str) -> tuple[Path, Path]:
    stem = f"demo_seed{seed}" + ("" if split_mode == "user" else f"_{split_mode}")
    return config.REPO_ROOT / "warehouse" / f"{stem}.duckdb", config.REPO_ROOT / ".dagster_home" / stem


def build_world(seed: int, split_mode: str) -> dict:
    db, home = world_paths(seed, split_mode)
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, IE_SOURCE="demo", IE_DEMO_SEED=str(seed), IE_SPLIT_MODE=split_mode,
               DUCKDB_DATABASE=str(db), DAGSTER_HOME=str(home), **GATES_OFF)
    t0 = time.perf_counter()
    # the run's log goes to stderr: stdout is the JSON alone
    rc = subprocess.run([sys.executable, "-m", "orchestration.materialize", "--select", "*"],
                        cwd=config.REPO_ROOT, env=env, stdout=sys.stderr).returncode
    return {"returncode": rc, "seconds": round(time.perf_counter() - t0, 1)}


def read_world(db: Path, split_mode: str, level: int, k: int) -> dict[tuple[str, str], tuple]:
    """{(policy, metric): (value, ci_low, ci_high, n)} of the world's lookup_evaluation,
    ("llm", "match_rate") of the adapter its llm lookup was decoded with, and
    ("verdict", target, metric): (met, baseline) of its lookup_verdict."""
    if not db.exists():
        raise FileNotFoundError(f"{db}: this demo world is not built; run without --no-run")
    with wh.connect(db, read_only=True) as con:
        key = [level, k, split_mode]
        rows = wh.query(con, f"select policy, metric, value, ci_low, ci_high, n, model_version from {config.LOOKUP_EVALUATION} "
                             "where level = ? and k = ? and split_mode = ?", key)
        if not rows.height:
            raise ValueError(f"{db}: lookup_evaluation has no rows at level {level}, k {k}, split {split_mode}")
        if not wh.table_exists(con, config.LOOKUP_VERDICT):
            raise ValueError(f"{db}: {config.LOOKUP_VERDICT} does not exist; rebuild the world (run without --no-run)")
        verdict = wh.query(con, f"select target, metric, met, baseline from {config.LOOKUP_VERDICT} "
                                "where level = ? and k = ? and split_mode = ?", key)
        # the match rate of the adapter's last fine-tuning step
        hist = adapter_history(con, rows.filter(rows["policy"] == "llm")["model_version"][0])
    out = {(p, mt): (v, lo, hi, n) for p, mt, v, lo, hi, n, _ in rows.iter_rows()}
    out[("llm", "match_rate")] = (hist.sort("step")["match_rate"][-1] if hist.height else None, None, None, None)
    out.update({("verdict", t, mt): (met, base) for t, mt, met, base in verdict.iter_rows()})
    return out


def world_summary(ev: dict[tuple, tuple], m: int) -> dict:
    """One world's figures and its targets as lookup_verdict judges them at recall@m:
    recall@m not significantly below the best count policy, above every count policy on
    thin histories, distinct top-1 at least markov's; and the adapter's match rate."""
    segment = thin_segment()
    recall, thin = f"recall_at_{m}", f"recall_at_{m}__{segment}"
    out = {p: {"recall": ev[(p, recall)][0], segment: ev[(p, thin)][0], "distinct_top1": ev[(p, "distinct_top1")][0]}
           for p in ("llm", *COUNT_POLICIES, ABLATION) if (p, recall) in ev}
    met, best = ev[("verdict", "recall_at_least_best_count", recall)]
    out["targets"] = {
        "best_count_policy": best,
        "recall_not_below_best": met,
        "thin_above_every_count_policy": ev[("verdict", "thin_above_every_count", thin)][0],
        "distinct_top1_at_least_markov": ev[("verdict", "distinct_top1_at_least_markov", "distinct_top1")][0],
        "match_rate": ev[("llm", "match_rate")][0],
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4], help="IE_DEMO_SEED of each world")
    ap.add_argument("--split-mode", choices=config.SPLIT_MODES, default="user")
    ap.add_argument("--no-run", action="store_true", help="only read worlds already built")
    args = ap.parse_args()
    level, k, m = config.llm_level(), config.history_len(), SELECTION_M
    runs, worlds = {}, {}
    for seed in args.seeds:
        if not args.no_run:
            runs[seed] = build_world(seed, args.split_mode)
            if runs[seed]["returncode"] != 0:
                raise SystemExit(f"demo world {seed}: the main job failed (rc {runs[seed]['returncode']}); "
                                 f"see its Dagster home {world_paths(seed, args.split_mode)[1]}")
        worlds[seed] = read_world(world_paths(seed, args.split_mode)[0], args.split_mode, level, k)
    diffs = sorted({mt for ev in worlds.values() for p, mt in ev if p == "llm" and mt.startswith(f"diff_recall_at_{m}_vs_")})
    pooled = {mt: pool([ev[("llm", mt)] for ev in worlds.values()])
              for mt in diffs if all(("llm", mt) in ev for ev in worlds.values())}
    print(json.dumps({"level": level, "k": k, "split_mode": args.split_mode, "m": m, "seeds": args.seeds,
                      "runs": runs, "worlds": {s: world_summary(ev, m) for s, ev in worlds.items()},
                      "pooled_llm_minus": pooled}, indent=1))


if __name__ == "__main__":
    main()
