"""LoRA steps on this machine's accelerator: what `IE_LLM_STEPS` gives a GPU user, measured.

For each step count, from one warehouse's LLM inputs: fine-tune (the pipeline's
configuration, `pipeline.finetune_config()`, with the steps replaced and an evaluation
every max(its eval_every, steps // 6) steps), then run every pair-inference partition.
CUDA trains in bf16 when present (`base_lm.runtime`), else the CPU in fp32. Prints JSON:
per run the model_version, its configuration, seconds of trunk build, fine-tuning and
pair inference, seconds a step (evaluations included) and its ratio to the first run's
(the baseline: list the CPU default, 150, first), the eval-sample curve, device and
dtype, peak GPU memory.

    python bench/llm_steps.py --steps 150 1500 600 [--archive DIR]

With --archive each adapter, its pair shards included, is also written as
DIR/<model_version>.tar.gz (paths relative to the models dir's llm/). To score it on the
warehouse's machine, unpack it there into `<models dir>/llm/` and materialize with the
version pinned:

    IE_LLM_MODEL_VERSION=<model_version> python -m orchestration.materialize --select 'ml/finetune_history*'

The fine-tuning asset finds the adapter complete and reuses it, every pair partition
resumes its shards from it, and lookup_evaluation scores the lookup built on it. The
adapter records its base model's absolute path, so a machine without the warehouse runs
this on a copy of the checkout at the same absolute path and a copy of the warehouse
file. To score an adapter without replacing the warehouse's lookup, serve it on a copy
in another folder under the same file name: dbt's views name the DuckDB catalog after
the file's stem, so a renamed copy breaks them. bench/results/llm_steps_h200_*.json hold
the runs on one H200 (bench/EXPERIMENTS.md, "More steps on a GPU").
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models_ml import config  # noqa: E402
from models_ml import warehouse as wh  # noqa: E402
from models_ml.llm import base as base_lm  # noqa: E402
from models_ml.llm import finetune as ft  # noqa: E402
from models_ml.llm import pipeline  # noqa: E402
from models_ml.llm.finetune import LlmInputs  # noqa: E402


def run(inputs: LlmInputs, steps: int, archive: Path | None) -> dict:
    """One step count: fine-tune, every pair partition, the adapter archived."""
    base = pipeline.finetune_config()
    cfg = replace(base, steps=steps, eval_every=max(base.eval_every, steps // 6))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = pipeline.run_finetune(inputs, cfg, progress=False)
    finetune_s = time.perf_counter() - t0
    meta = ft.read_training(result.adapter_dir)
    m = pipeline.lookup_depth(inputs.descriptions, inputs.k)
    n_partitions = config.llm_pair_partitions()
    t1 = time.perf_counter()
    histories = 0
    for p in range(n_partitions):
        _, _, stats = pipeline.run_pair_partition(result.adapter_dir, inputs, m, p, n_partitions, progress=False)
        histories += stats["histories"]
    pairs_s = time.perf_counter() - t1
    if archive is not None:
        archive.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive / f"{result.model_version}.tar.gz", "w:gz") as tar:
            tar.add(result.adapter_dir, arcname=result.model_version)
    trunk = meta.get("trunk_cache") or {}
    return {
        "model_version": result.model_version,
        "steps": steps,
        "config": asdict(cfg),
        "reused": bool(result.extra.get("reused")),
        "device": meta.get("device"),
        "dtype": meta.get("dtype"),
        "trunk_build_s": round(trunk.get("build_seconds", 0.0), 2),
        "train_s": round(result.train_seconds, 2),
        "finetune_wall_s": round(finetune_s, 2),
        "s_per_step_with_evals": round((result.train_seconds - trunk.get("build_seconds", 0.0)) / steps, 4),
        "pair_inference_s": round(pairs_s, 2),
        "histories": histories,
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None,
        "eval_sample_curve": [asdict(p) for p in result.history],
        "serve": f"IE_LLM_MODEL_VERSION={result.model_version}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, nargs="+", default=[150, 1500], help="step counts, the baseline first")
    ap.add_argument("--archive", type=Path, default=None, help="write each adapter as DIR/<model_version>.tar.gz")
    args = ap.parse_args()
    level, k = config.llm_level(), config.history_len()
    with wh.connect(read_only=True) as con:  # DUCKDB_DATABASE: it also names the models dir
        inputs = pipeline.read_llm_inputs(con, level, k)
    t0 = time.perf_counter()
    base_path = base_lm.base_model_path()
    out = {"warehouse": str(config.database_path()), "models_dir": str(config.models_dir()),
           "level": level, "k": k, "train_pairs": inputs.train_pairs.height,
           "clusters": len(inputs.descriptions), "base_model": str(base_path),
           "base_model_s": round(time.perf_counter() - t0, 2),
           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
           "torch": torch.__version__, "runs": []}
    for steps in args.steps:
        out["runs"].append(run(inputs, steps, args.archive))
        first = out["runs"][0]
        last = out["runs"][-1]
        last["s_per_step_vs_first"] = round(last["s_per_step_with_evals"] / first["s_per_step_with_evals"], 3)
        print(json.dumps(last), file=sys.stderr, flush=True)  # a run killed later keeps this one
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
