"""LoRA fine-tuning step time: (a) the full model every step, (b) the frozen trunk's
outputs computed once (finetune.Trunk) and only the adapted layers each step, from the
same initial weights on the same batches in one run. Prints JSON: the median seconds a
step of each (the first step, a warm-up, left out), their ratio, the trunk's one-off
build time and memory, the steps after which (b) has paid for its build, and the largest
loss difference between the two runs (correctness: they compute the same loss).

    .venv/bin/python bench/finetune_step.py [--db FILE] [--steps 12]

The training data is the warehouse's fine-tuning input at the LLM level (the default
configuration's batch size and LoRA layers), so the prompts are the real ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models_ml import config  # noqa: E402
from models_ml import warehouse as wh  # noqa: E402
from models_ml.llm import base as base_lm  # noqa: E402
from models_ml.llm import finetune as ft  # noqa: E402
from models_ml.llm import pipeline  # noqa: E402
from models_ml.llm.decoding import LM  # noqa: E402
from models_ml.llm.tokens import PromptEncoder  # noqa: E402


def run_steps(lm: LM, model, enc, batches, cfg: ft.FinetuneConfig, trunk) -> tuple[list[float], float]:
    """(losses, median seconds per step after the first, a warm-up) of optimiser steps
    on ``batches``."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    losses, seconds = [], []
    for batch in batches:
        t0 = time.perf_counter()
        losses.append(ft.train_step(lm, enc, batch, params, opt, cfg, trunk))
        seconds.append(time.perf_counter() - t0)
    return losses, float(np.median(seconds[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default=None, help="warehouse file (default DUCKDB_DATABASE / config)")
    ap.add_argument("--steps", type=int, default=12, help="steps of each variant (the first is a warm-up)")
    args = ap.parse_args()
    level, k = config.llm_level(), config.history_len()
    with wh.connect(args.db, read_only=True) as con:
        inputs = pipeline.read_llm_inputs(con, level, k)
    cfg = pipeline.finetune_config()
    base_path = base_lm.base_model_path()
    tok = base_lm.load_tokenizer(base_path)
    enc = PromptEncoder(tok, inputs.descriptions)
    groups = ft.group_examples(ft.examples_from(inputs.train_pairs))
    rng = np.random.default_rng(cfg.seed)
    batches = [[groups[i] for i in rng.choice(len(groups), cfg.batch_histories, replace=False)]
               for _ in range(args.steps)]

    torch.manual_seed(cfg.seed)
    model = ft._lora_model(base_path, base_lm.runtime(), cfg)
    lm = LM(model)
    lm.pad_id = int(tok.pad_token_id)
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.train()

    full_losses, full_s = run_steps(lm, model, enc, batches, cfg, None)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in start:
                p.copy_(start[n])
    first = ft.first_adapted_layer(model, cfg.adapt_layers)
    t0 = time.perf_counter()
    trunk = ft.Trunk.build(lm, enc, groups, first)
    build_s = time.perf_counter() - t0
    trunk_losses, trunk_s = run_steps(lm, model, enc, batches, cfg, trunk)
    print(json.dumps({
        "bench": "finetune_step",
        "level": level, "k": k,
        "train_examples": inputs.train_pairs.height, "prompts": len(groups),
        "batch_histories": cfg.batch_histories, "adapt_layers": cfg.adapt_layers, "first_adapted_layer": first,
        "steps_timed": args.steps, "threads": torch.get_num_threads(),
        "full_s_per_step": round(full_s, 3),
        "trunk_s_per_step": round(trunk_s, 3),
        "speedup": round(full_s / trunk_s, 2),
        "trunk_build_s": round(build_s, 1),
        "trunk_mib": round(trunk.n_floats * 4 / 2**20, 1),
        "break_even_steps": round(build_s / max(1e-9, full_s - trunk_s), 1),
        "max_loss_difference": max(abs(a - b) for a, b in zip(full_losses, trunk_losses)),
        "losses_full": [round(x, 4) for x in full_losses],
    }, indent=2))


if __name__ == "__main__":
    main()
