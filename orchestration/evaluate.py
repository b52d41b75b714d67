"""`make evaluate` (python -m orchestration.evaluate): the paper's open question, K and
granularity, on the current source. Every K in (1, 2, 3) at every cluster level is
evaluated with the user split, and the default level and K with both split modes; each
run re-materializes the dbt marts, the LLM and the evaluation groups with that
configuration (Dagster runs in a subprocess, orchestration.materialize, on the same
warehouse), and lookup_evaluation keeps every run's rows.

Every run but the default configuration is a comparison run, sized so that the whole
evaluation of ml-latest-small fits an hour of the 2-core CPU: it fine-tunes with fewer
LoRA steps (IE_EVAL_LLM_STEPS, default 15, evaluated at step 0 and at the end only; the
report lists each adapter's steps), without the zero-shot policy (the base model alone
costs as much as the lookup), and where a level and K give more than
IE_EVAL_MAX_HISTORIES ordered histories (default 5000) its LLM lookups cover only the
histories the evaluation reads (eval split and validation fold). The default
configuration runs last with the settings `make materialize` uses, so the warehouse is
left as that builds it (an adapter already fine-tuned on the same inputs is reused) and
the report (reports/<warehouse>/) is written from every run. A warehouse without clusters
(a fresh clone) is ingested and clustered first.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

from models_ml import config
from models_ml import warehouse as wh
from models_ml.cli import report

SELECTION = "group:warehouse or group:llm or group:evaluation"
SETUP = "group:ingestion or group:clusters"  # what every run reads and none rebuilds
HISTORY_LENGTHS = (1, 2, 3)
# evaluation measures every configuration, the losing ones too: the refresh gates off
GATES_OFF = {"IE_GATE_MATCH_RATE": "0", "IE_GATE_RECALL_MARGIN": "-1", "IE_GATE_NDCG_MARGIN": "-1"}


def configurations(n_clusters: dict[int, int]) -> list[dict]:
    """(level, k, split_mode, full: the default configuration?) of every run, the default
    one last."""
    level, k = config.llm_level(), config.history_len()
    runs = []
    for lv in config.LEVELS:
        for kk in HISTORY_LENGTHS:
            if (lv, kk) != (level, k) and n_clusters.get(lv, 0) > kk:
                runs.append({"level": lv, "k": kk, "split_mode": "user", "full": False})
    other = [m for m in config.SPLIT_MODES if m != config.split_mode()]
    runs += [{"level": level, "k": k, "split_mode": m, "full": False} for m in other]
    runs.append({"level": level, "k": k, "split_mode": config.split_mode(), "full": True})
    return runs


def run_env(run: dict, n_clusters: dict[int, int]) -> dict[str, str]:
    env = dict(os.environ, IE_LEVEL=str(run["level"]), IE_K=str(run["k"]), IE_SPLIT_MODE=run["split_mode"])
    for name, off in GATES_OFF.items():
        env.setdefault(name, off)
    if run["full"]:
        return env
    steps = str(config.env_int("IE_EVAL_LLM_STEPS", 15, minimum=1))
    env.update(IE_LLM_STEPS=steps, IE_LLM_EVAL_EVERY=steps, IE_ZERO_SHOT="0")
    histories = math.perm(n_clusters[run["level"]], run["k"])
    if histories > config.env_int("IE_EVAL_MAX_HISTORIES", 5000, minimum=1):
        env["IE_LLM_HISTORIES"] = "evaluated"
    return env


def needs_setup() -> bool:
    """A new warehouse (or one never clustered) is ingested and clustered once first, so
    `make evaluate` works on a fresh clone as `make materialize` does."""
    if not config.database_path().exists():
        return True
    with wh.connect(read_only=True) as con:
        return not wh.table_exists(con, config.CLUSTERS)


def materialize(selection: str, env: dict[str, str]) -> int:
    # the helper, not the CLI: the llm group holds the partitioned pair inference
    return subprocess.run([sys.executable, "-m", "orchestration.materialize", "--select", selection],
                          cwd=config.REPO_ROOT, env=env).returncode


def main() -> int:
    if needs_setup():
        print(f"== {config.database_path()}: no clusters yet, materializing {SETUP} first", flush=True)
        rc = materialize(SETUP, dict(os.environ))
        if rc != 0:
            print(f"   setup: rc {rc}", flush=True)
            return rc
    with wh.connect(read_only=True) as con:
        n_clusters = dict(wh.query(con, f"select level, count(*) from {config.CLUSTERS} group by level").iter_rows())
    out = config.reports_dir()
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / report.RUNS_FILE
    log_path.unlink(missing_ok=True)  # a previous evaluation's log is not this one's
    log = []
    for run in configurations(n_clusters):
        env = run_env(run, n_clusters)
        label = f"level {run['level']} k {run['k']} split {run['split_mode']}"
        print(f"== {label}" + ("" if run["full"] else f" ({env['IE_LLM_STEPS']} LoRA steps)"), flush=True)
        t0 = time.perf_counter()
        rc = materialize(SELECTION, env)
        seconds = time.perf_counter() - t0
        log.append({**run, "lora_steps": int(env.get("IE_LLM_STEPS", config.llm_finetune_steps())),
                    "histories": env.get("IE_LLM_HISTORIES", config.llm_histories()),
                    "seconds": round(seconds, 1), "returncode": rc})
        log_path.write_text(json.dumps(log, indent=2))  # after every run: a stopped evaluation keeps its log
        print(f"   {label}: rc {rc} in {seconds:.0f} s", flush=True)
        if rc != 0:
            break
    # the report once more, now with every run's log (the last run wrote it before its own entry)
    with wh.connect(read_only=True) as con:
        print(f"report: {report.build_report(con).path}")
    print(json.dumps(log))
    return 0 if all(r["returncode"] == 0 for r in log) else 1


if __name__ == "__main__":
    sys.exit(main())
