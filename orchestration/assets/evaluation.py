"""Evaluation (group `evaluation`): the comparison lookups (base model zero-shot,
smoothed counts) -> ml.policy_lookups, the dbt mart lookup_evaluation that judges every
lookup on the eval split, and the report (reports/, figures as asset metadata)."""

import time

import polars as pl

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from models_ml import config, counts
from models_ml import warehouse as wh
from models_ml.cli import report as report_cli
from models_ml.llm import pipeline
from orchestration.dbt import dbt_asset_group
from orchestration.keys import asset_key
from orchestration.metadata import provenance, table_metadata
from orchestration.resources import WarehouseResource

GROUP = "evaluation"

# lookup_evaluation reads the Python lookups, so it is its own dbt op (no cycle).
evaluation_dbt_assets = dbt_asset_group(name="evaluation_dbt_assets", group=GROUP, select="tag:evaluation")


@asset(
    key=asset_key(config.POLICY_LOOKUPS),
    group_name=GROUP,
    kinds={"pytorch", "duckdb"},
    deps=[asset_key(config.SUCCESSOR_COUNTS), asset_key(config.NOVEL_TRANSITION_EXAMPLES), asset_key(config.CLUSTERS),
          asset_key(config.NOVEL_INTEREST_TRANSITIONS)],
    description=(
        "The lookups the shipped one is compared with, at the LLM level and K, for every history: "
        "llm_only (the fine-tuned model alone), llm_fusion and llm_alignment (the mechanisms built on "
        "it: log-linear fusion with the counts, and fusion re-ranked by the feedback-aligned scorer), "
        "counts_alignment (that scorer without the LLM, re-ranking the smoothed counts), "
        "zero_shot (the base model "
        "without an adapter, same prompt and constrained decoding) and markov_smoothed (counts "
        "interpolated with the last cluster's and popularity, weights chosen on the validation fold of "
        "the train users)."
    ),
)
def policy_lookups(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
    level, k = config.llm_level(), config.history_len()
    with warehouse.connect() as con:
        inputs = pipeline.read_llm_inputs(con, level, k)
        count_rows = counts.read_counts(con, level, k)
    histories = pipeline.lookup_histories(inputs)
    model = counts.fitted(count_rows, inputs.descriptions, inputs.validation_transitions)
    smoothing = model.smoothing
    m = pipeline.lookup_depth(inputs.descriptions, k)
    smoothed = counts.lookup_rows(
        counts.smoothed_probs(model.final, histories, smoothing.alpha, smoothing.beta),
        model.final.cluster_ids, histories, "markov_smoothed", level, k, model.version(config.split_mode()), depth=m,
    )
    t0 = time.perf_counter()
    blocks = [smoothed]
    if config.zero_shot_enabled():
        zero, stats = pipeline.run_zero_shot_inference(inputs.descriptions, level, k, m, histories=histories)
        blocks.append(zero.drop("shard").with_columns(policy=pl.lit(pipeline.ZERO_SHOT)))
    zero_seconds = time.perf_counter() - t0
    llm_rows = pipeline.read_pair_inference(pipeline.current_adapter_dir(), inputs.descriptions, level, k, m, histories)
    variants = pipeline.lookup_variants(inputs, llm_rows, count_rows, m)
    blocks += [v.rows.drop("shard").with_columns(policy=pl.lit(v.name)) for v in variants.values()]
    with warehouse.connect() as con:
        counts.write_policy_lookups(con, blocks)
        n = wh.row_count(con, config.POLICY_LOOKUPS)
    context.log.info(f"markov_smoothed alpha {smoothing.alpha} beta {smoothing.beta} "
                     f"(validation recall@{smoothing.m} {smoothing.validation_recall:.3f}); "
                     f"zero-shot {'on' if config.zero_shot_enabled() else 'off'} ({zero_seconds:.0f}s)")
    return MaterializeResult(
        metadata={
            **table_metadata(config.POLICY_LOOKUPS, n),
            "markov_smoothed_alpha": MetadataValue.float(smoothing.alpha),
            "markov_smoothed_beta": MetadataValue.float(smoothing.beta),
            "markov_smoothed_validation_recall_at_5": MetadataValue.float(smoothing.validation_recall),
            "markov_smoothed_validation_mrr": MetadataValue.float(smoothing.validation_mrr),
            "validation_transitions": MetadataValue.int(smoothing.validation_transitions),
            "zero_shot_seconds": MetadataValue.float(round(zero_seconds, 1)),
        }
    )


@asset(
    key=["evaluation_report"],
    group_name=GROUP,
    kinds={"python"},
    deps=[asset_key(config.LOOKUP_EVALUATION), asset_key(config.LOOKUP_VERDICT), asset_key(config.FINETUNE_HISTORY)],
    description=(
        "The evaluation report (Markdown + PNG under reports/<warehouse>/): the targets of lookup_verdict "
        "(met or not), every policy's recall@m and "
        "MRR with intervals in both split modes, recall by history frequency, balance of the top-1 "
        "answers, K x level, the fine-tuning curve. Numbers are also this asset's metadata."
    ),
)
def evaluation_report(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
    with warehouse.connect(read_only=True) as con:
        report = report_cli.build_report(con)
    split = config.split_mode()
    keep = {key: value for key, value in report.figures.items() if key.startswith(f"{split}/") and "__" not in key}
    metadata = {key.replace("/", "__"): MetadataValue.float(v) for key, v in sorted(keep.items())}
    metadata["report"] = MetadataValue.path(str(report.path))
    metadata.update(provenance())
    for name, img in report.images.items():
        metadata[f"plot_{name}"] = MetadataValue.path(str(img))
    return MaterializeResult(metadata=metadata)
