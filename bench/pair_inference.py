"""Pair inference throughput: (a) naive one-at-a-time unconstrained `generate`,
(b) batched `generate`, (c) ours (shared-prefix KV cache, trie-constrained exact
best-first top-m, head restricted to allowed tokens), on the same model and the same
histories in one run. Prints JSON: histories/second, the ratios, and the share of
this machine's measured matmul FLOP/s that (c) reaches given the FLOPs it must do.
Correctness: (c)'s top-1 must equal exhaustive scoring of every candidate on a sample.

    .venv/bin/python bench/pair_inference.py [--db FILE] [--adapter DIR] [--shards 2]

Histories are whole shards (every history starting with the first S clusters), the
unit all-pairs inference runs in. The model is the current fine-tuned adapter when
there is one (--adapter, else IE_MODELS_DIR/llm/current.json), else the base model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models_ml import config  # noqa: E402
from models_ml import warehouse as wh  # noqa: E402
from models_ml.llm import base as base_lm  # noqa: E402
from models_ml.llm import finetune as ft  # noqa: E402
from models_ml.llm import pairs, pipeline  # noqa: E402
from models_ml.llm.decoding import LM, exhaustive_scores  # noqa: E402
from models_ml.llm.tokens import PromptEncoder, level_descriptions  # noqa: E402


def matmul_peak(seconds: float = 2.0) -> float:
    """Best dense fp32 matmul FLOP/s over a few sizes (the machine's practical peak)."""
    best = 0.0
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            a @ b
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


def flops_per_token(model, context: int) -> float:
    """Forward FLOPs of one token: 2 x non-embedding weights + attention over ``context``."""
    cfg = model.config.get_text_config()
    emb = model.get_input_embeddings().weight.numel()
    weights = sum(p.numel() for p in model.parameters()) - emb
    if not getattr(cfg, "tie_word_embeddings", False):
        weights -= model.get_output_embeddings().weight.numel()
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return 2 * weights + 4 * cfg.num_hidden_layers * heads * head_dim * context


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default=None, help="warehouse file (default DUCKDB_DATABASE / config)")
    ap.add_argument("--adapter", default=None, help="fine-tuned adapter directory")
    ap.add_argument("--level", type=int, default=None)
    ap.add_argument("--k", type=int, default=None)
    ap.add_argument("--shards", type=int, default=2, help="first clusters whose histories are timed")
    ap.add_argument("--batch", type=int, default=32, help="batch size of (b)")
    ap.add_argument("--m", type=int, default=None)
    ap.add_argument("--check", type=int, default=8, help="histories checked against exhaustive scoring")
    args = ap.parse_args()
    level = args.level or config.llm_level()
    k = args.k or config.history_len()
    m = args.m or config.llm_top_m()

    with wh.connect(args.db, read_only=True) as con:
        descriptions = level_descriptions(wh.read_table(con, config.CLUSTERS), level)
    adapter = Path(args.adapter) if args.adapter else None
    if adapter is None:
        try:
            adapter = pipeline.current_adapter_dir()
            ft.read_training(adapter)
        except ft.AdapterError:
            adapter = None
    if adapter is not None:
        model, tok, meta = ft.load_finetuned(adapter)
        model_name = meta["model_version"]
    else:
        path = base_lm.base_model_path()
        model, tok = base_lm.load_model(path), base_lm.load_tokenizer(path)
        model_name = f"base:{path.name}"
    enc = PromptEncoder(tok, descriptions)
    firsts = sorted(descriptions)[: args.shards]
    histories = [h for h in pairs.all_histories(descriptions, k) if h[0] in firsts]
    prompts = [enc.prompt_ids(h) for h in histories]
    max_new = enc.trie.max_len
    pad = tok.pad_token_id
    peak_before = matmul_peak()

    # (a) naive: one history at a time, unconstrained greedy generate
    t0 = time.perf_counter()
    naive = []
    with torch.inference_mode():
        for p in prompts:
            x = torch.tensor([p])
            out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new, do_sample=False,
                                 pad_token_id=pad, eos_token_id=enc.eos_id)
            naive.append(out[0, len(p):].tolist())
    t_naive = time.perf_counter() - t0

    # (b) batched generate (left padding)
    t0 = time.perf_counter()
    batched = []
    with torch.inference_mode():
        for s in range(0, len(prompts), args.batch):
            chunk = prompts[s : s + args.batch]
            width = max(len(p) for p in chunk)
            x = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros_like(x)
            for i, p in enumerate(chunk):
                x[i, width - len(p):] = torch.tensor(p)
                mask[i, width - len(p):] = 1
            out = model.generate(x, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                                 pad_token_id=pad, eos_token_id=enc.eos_id)
            batched.extend(out[:, width:].tolist())
    t_batched = time.perf_counter() - t0

    # (c) ours: top-m constrained, shared prefixes
    lm = LM(model)
    t0 = time.perf_counter()
    ours = pairs.infer_histories(lm, enc, histories, m)
    t_ours = time.perf_counter() - t0
    tokens = lm.tokens_processed
    peak = max(peak_before, matmul_peak())

    # correctness: top-1 against exhaustive scoring of every candidate
    step = max(1, len(histories) // args.check)
    sample = histories[::step][: args.check]
    agree = 0
    for h in sample:
        ex = exhaustive_scores(lm, enc.trie, enc.prompt_ids(h), frozenset(h))
        best = max(ex.items(), key=lambda kv: (kv[1], -kv[0]))[0]
        agree += int(ours[h][0][0] == best)

    context = len(enc.head_ids) + sum(len(s) for s in enc.history_segments(histories[0])) + max_new
    flops = tokens * flops_per_token(model, context)
    n = len(histories)
    result = {
        "model": model_name,
        "device": str(next(model.parameters()).device),
        "threads": torch.get_num_threads(),
        "level": level,
        "k": k,
        "m": m,
        "clusters": len(descriptions),
        "histories": n,
        "prompt_tokens_mean": sum(len(p) for p in prompts) / n,
        "naive_generate_hist_per_s": n / t_naive,
        "batched_generate_hist_per_s": n / t_batched,
        "ours_hist_per_s": n / t_ours,
        "speedup_vs_naive": t_naive / t_ours,
        "speedup_vs_batched": t_batched / t_ours,
        "ours_tokens_processed": tokens,
        "ours_tokens_per_history": tokens / n,
        "ours_gflop": flops / 1e9,
        "matmul_peak_gflops": peak / 1e9,
        "ours_share_of_matmul_peak": flops / t_ours / peak,
        "unconstrained_match_rate_naive": sum(enc.parse(o) is not None for o in naive) / n,
        "naive_batched_top1_agree": sum(a == b for a, b in zip(
            [enc.parse(o) for o in naive], [enc.parse(o) for o in batched])) / n,
        "exhaustive_top1_checked": len(sample),
        "exhaustive_top1_identical": agree,
        "all_pairs_estimate_s": t_ours / n * len(pairs.all_histories(descriptions, k)),
    }
    print(json.dumps(result, indent=2))
    if agree != len(sample):
        sys.exit(f"top-1 differs from exhaustive scoring on {len(sample) - agree} of {len(sample)} histories")


if __name__ == "__main__":
    main()
