"""Novel-interest LLM (group `llm`): LoRA fine-tuning -> ml.finetune_history, all-pairs
constrained inference in static partitions (each stages Parquet files, so partitions
run in parallel processes or on separate workers) -> one unpartitioned step that
validates their union and swaps it into ml.novel_interest_transitions, and the dbt mart
transition_lookup. Thin wiring over models_ml.llm.pipeline; no warehouse connection
is held while a model trains or infers."""

import time

from dagster import (
    AllPartitionMapping,
    AssetCheckResult,
    AssetDep,
    AssetExecutionContext,
    Failure,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
    asset,
    asset_check,
)

from models_ml import config, counts
from models_ml import warehouse as wh
from models_ml.llm import pipeline
from models_ml.llm.pairs import write_lookup
from orchestration.dbt import dbt_asset_group
from orchestration.keys import asset_key
from orchestration.metadata import gate_check_result, gate_figures, image_markdown, markdown_table, table_metadata
from orchestration.resources import WarehouseResource

GROUP = "llm"

# transition_lookup reads the Python lookup table, so it is its own dbt op (no cycle).
transition_lookup_assets = dbt_asset_group(name="llm_dbt_assets", group=GROUP, select="tag:llm")


@asset(
    key=asset_key(config.FINETUNE_HISTORY),
    group_name=GROUP,
    kinds={"pytorch", "duckdb"},
    deps=[
        asset_key(config.TRAINING_PAIRS),
        asset_key(config.NOVEL_TRANSITION_EXAMPLES),
        asset_key(config.CLUSTERS),
    ],
    description=(
        "LoRA fine-tuning of the base LM (SmolLM2-135M-Instruct, or IE_BASE_MODEL) on the balanced "
        "train split of training_pairs at the LLM level; records loss, unconstrained match rate and "
        "eval-split recall@1/@5 every few steps (step 0 = zero-shot) and saves the adapter under "
        "IE_MODELS_DIR/llm/<model_version>."
    ),
)
def llm_finetune(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
    level, k = config.llm_level(), config.history_len()
    with warehouse.connect() as con:
        inputs = pipeline.read_llm_inputs(con, level, k)
    cfg = pipeline.finetune_config()
    context.log.info(
        f"fine-tuning on {inputs.train_pairs.height} pairs, {len(inputs.descriptions)} clusters "
        f"(level {level}, k {k}), {cfg.steps} steps"
        + (f", resampled towards what the counts miss (IE_LLM_RESIDUAL={config.llm_residual():g})"
           if config.llm_residual() > 0 else "")
    )

    def log_point(p) -> None:
        context.log.info(
            f"step {p.step}: loss {p.loss} match_rate {p.match_rate:.3f} "
            f"recall@1 {p.recall_at_1:.3f} recall@5 {p.recall_at_5:.3f}"
        )

    result = pipeline.run_finetune(inputs, cfg, on_eval=log_point)
    if result.extra.get("reused"):
        context.log.info(f"adapter {result.model_version} was fine-tuned on these inputs before: reused")
    frame = pipeline.finetune_history_frame(result, level, k)
    with warehouse.connect() as con:
        pipeline.write_finetune_history(con, frame)
        n_history = wh.row_count(con, config.FINETUNE_HISTORY)
    zero, final = result.history[0], result.history[-1]
    return MaterializeResult(
        metadata={
            **table_metadata(config.FINETUNE_HISTORY, n_history),
            "model_version": result.model_version,
            "adapter_dir": MetadataValue.path(str(result.adapter_dir)),
            "match_rate": MetadataValue.float(final.match_rate),
            "recall_at_1": MetadataValue.float(final.recall_at_1),
            "recall_at_5": MetadataValue.float(final.recall_at_5),
            "zero_shot_recall_at_5": MetadataValue.float(zero.recall_at_5),
            "popularity_recall_at_5": MetadataValue.float(result.baselines["popularity_recall_at_5"]),
            "train_seconds": MetadataValue.float(round(result.train_seconds, 1)),
            "reused_adapter": MetadataValue.bool(bool(result.extra.get("reused"))),
            "training_curve": image_markdown(result.adapter_dir / pipeline.CURVE_FILE, "LoRA fine-tuning curve"),
            "training_curve_path": MetadataValue.path(str(result.adapter_dir / pipeline.CURVE_FILE)),
            "history": MetadataValue.md(markdown_table(frame.drop("model_version", "level", "k"))),
            "config": MetadataValue.json(result.config.__dict__),
        }
    )


@asset_check(
    asset=asset_key(config.FINETUNE_HISTORY),
    name="refresh_gate",
    blocking=True,
    description=(
        "Refresh gate on the current fine-tuned adapter: unconstrained match rate >= IE_GATE_MATCH_RATE "
        "(0.9). Blocking: a fine-tune that does not name the clusters never reaches pair inference. The recall "
        "rule judges the lookup as served (ml/novel_interest_transitions)."
    ),
)
def finetune_refresh_gate() -> AssetCheckResult:
    adapter = pipeline.current_adapter_dir()
    return gate_check_result(pipeline.adapter_gate(adapter), model_version=adapter.name)


# Partition p takes the shards (first history clusters) s with s % n == p.
PAIR_PARTITIONS = StaticPartitionsDefinition([str(p) for p in range(config.llm_pair_partitions())])


@asset(
    key=asset_key(config.PAIR_INFERENCE_PARTITIONS),
    group_name=GROUP,
    kinds={"pytorch", "parquet"},
    partitions_def=PAIR_PARTITIONS,
    deps=[asset_key(config.FINETUNE_HISTORY), asset_key(config.SUCCESSOR_COUNTS)],
    description=(
        "One partition of the all-pairs inference: the fine-tuned model's constrained top-m novel clusters "
        "(trie-constrained decoding, history excluded; resumable shard by shard) for the histories whose first "
        "cluster s has s % IE_LLM_PARTITIONS == partition, staged atomically as one Parquet file under the "
        "warehouse folder (staged/), not in the single-writer DuckDB file, so partitions run in parallel."
    ),
)
def pair_inference_partitions(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
    level, k = config.llm_level(), config.history_len()
    with warehouse.connect(read_only=True) as con:
        inputs = pipeline.read_llm_inputs(con, level, k)
    m = pipeline.lookup_depth(inputs.descriptions, k)
    partition = int(context.partition_key)
    t0 = time.perf_counter()
    path, rows, stats = pipeline.run_pair_partition(pipeline.current_adapter_dir(), inputs, m, partition,
                                                    len(PAIR_PARTITIONS.get_partition_keys()))
    seconds = time.perf_counter() - t0
    context.log.info(f"partition {partition}: shards {stats['shard_ids']}, {stats['histories']} histories, "
                     f"{rows.height} rows in {seconds:.0f}s -> {path}")
    return MaterializeResult(metadata={
        "path": MetadataValue.path(str(path)),
        "dagster/row_count": MetadataValue.int(rows.height),  # the staged file's rows
        "histories": MetadataValue.int(stats["histories"]),
        "shards": MetadataValue.json(stats["shard_ids"]),
        "shards_computed": MetadataValue.int(stats["shards_computed"]),
        "shards_resumed": MetadataValue.int(stats["shards_resumed"]),
        "inference_seconds": MetadataValue.float(round(seconds, 1)),
    })


@asset(
    key=asset_key(config.NOVEL_INTEREST_TRANSITIONS),
    group_name=GROUP,
    kinds={"pytorch", "duckdb"},
    deps=[AssetDep(asset_key(config.PAIR_INFERENCE_PARTITIONS), partition_mapping=AllPartitionMapping()),
          asset_key(config.FINETUNE_HISTORY), asset_key(config.SUCCESSOR_COUNTS)],
    description=(
        "The shipped lookup: for every ordered history of K distinct clusters at the LLM level, the union of the "
        "pair-inference partitions' staged rows, validated (every partition's file readable, of the current "
        "adapter, every expected history exactly once; else the error names the file and the previous table "
        "stays), combined with the counts (IE_LLM_MECHANISM: the feedback-aligned scorer by default), weights "
        "chosen on the validation fold; its first "
        "lookup_depth clusters written atomically with a model_version naming the adapter and the fusion, "
        "and ending with a digest of the ranked rows (+rows-...). Refresh gate before the write: the lookup's "
        "recall@5 on the eval split >= popularity's + IE_GATE_RECALL_MARGIN (0), else the previous table stays."
    ),
)
def novel_interest_transitions(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
    level, k = config.llm_level(), config.history_len()
    with warehouse.connect() as con:
        inputs = pipeline.read_llm_inputs(con, level, k)
    m = pipeline.lookup_depth(inputs.descriptions, k)
    adapter = pipeline.current_adapter_dir()
    # the refresh gate again: materialized alone, this asset must not ship a failed adapter either
    gate = pipeline.adapter_gate(adapter)
    if not gate.passed:
        raise Failure(description=f"adapter {adapter.name} fails the refresh gate ({gate.summary()}); "
                                  f"{config.NOVEL_INTEREST_TRANSITIONS} is left as it was")
    n_partitions = len(PAIR_PARTITIONS.get_partition_keys())
    t0 = time.perf_counter()
    rows = pipeline.read_staged_pairs(adapter, inputs, m, n_partitions)
    seconds = time.perf_counter() - t0
    stats = {"histories": rows["history"].n_unique()}
    with warehouse.connect() as con:
        count_rows = counts.read_counts(con, level, k)
    t1 = time.perf_counter()
    variants = pipeline.lookup_variants(inputs, rows, count_rows, m)
    mechanism_seconds = time.perf_counter() - t1
    mechanism = config.llm_mechanism()
    if mechanism not in variants:
        context.log.warning(f"no validation transitions: the LLM's own lookup ships instead of {mechanism}")
        mechanism = "none"
    shipped = variants[mechanism].rows
    metrics = pipeline.lookup_metrics(shipped, inputs)
    served_gate = pipeline.lookup_gate(metrics)
    if not served_gate.passed:
        raise Failure(description=f"the lookup ({mechanism}) of adapter {adapter.name} fails the refresh gate on the "
                                  f"eval split ({served_gate.summary()}); {config.NOVEL_INTEREST_TRANSITIONS} is "
                                  f"left as it was",
                      metadata=gate_figures(served_gate, prefix="gate_"))
    with warehouse.connect() as con:
        write_lookup(con, shipped, level, k)
        n_lookup = wh.row_count(con, config.NOVEL_INTEREST_TRANSITIONS)
    context.log.info(f"lookup ({mechanism}): {stats['histories']} histories, {rows.height} rows from "
                     f"{n_partitions} partitions (read and checked in {seconds:.1f}s); {metrics}")
    fusion_meta = {"mechanism": mechanism, "mechanism_seconds": MetadataValue.float(round(mechanism_seconds, 2))}
    fused = variants[mechanism].fusion
    if fused is not None:
        context.log.info(f"fusion: llm weights by segment {fused.llm_weights}, debias {fused.debias}; "
                         f"validation {fused.validation}")
        fusion_meta.update({
            **{f"fusion_llm_weight_segment_{i}": MetadataValue.float(w) for i, w in enumerate(fused.llm_weights)},
            "fusion_debias": MetadataValue.float(fused.debias),
            **{f"validation_{key}": MetadataValue.float(float(v)) for key, v in fused.validation.items()},
        })
    aligned = variants[mechanism].alignment
    if aligned is not None:
        fusion_meta.update({f"alignment_{name}": MetadataValue.float(w)
                            for name, w in zip(pipeline.alignment.FEATURES, aligned.weights)})
        fusion_meta["alignment_debias"] = MetadataValue.float(aligned.debias)
        fusion_meta["alignment_top1_floor_moves"] = MetadataValue.int(aligned.floor_moves)
        fusion_meta["alignment_candidates"] = aligned.candidates
        fusion_meta.update({f"alignment_cv_recall_{name}": MetadataValue.float(r) for name, r in aligned.cv_recall})
    return MaterializeResult(
        metadata={
            **fusion_meta,
            **table_metadata(config.NOVEL_INTEREST_TRANSITIONS, n_lookup),
            "rows_written": MetadataValue.int(shipped.height),
            "histories": MetadataValue.int(stats["histories"]),
            "model_version": shipped["model_version"][0],
            "partitions": MetadataValue.int(n_partitions),
            "union_seconds": MetadataValue.float(round(seconds, 2)),
            **{key: MetadataValue.float(float(v)) for key, v in metrics.items() if key != "eval_transitions"},
            "eval_transitions": MetadataValue.int(metrics["eval_transitions"]),
            "refresh_gate": served_gate.summary(),
            "gate_recall_margin": MetadataValue.float(served_gate.figures["recall_margin"]),
        }
    )
