"""Item level (group `ranking`): SASRec ranker -> ml.ranker_evaluation, three slate
policies for every user -> ml.recommendations, and the dbt mart exploration_metrics."""

import time

from dagster import AssetCheckResult, AssetExecutionContext, MaterializeResult, MetadataValue, asset, asset_check

from models_ml import config, gates
from models_ml import warehouse as wh
from models_ml.items import policies, seqrec
from models_ml.items.sequences import load_training_data
from orchestration.dbt import dbt_asset_group
from orchestration.keys import asset_key
from orchestration.metadata import gate_check_result, image_markdown, markdown_table, table_metadata
from orchestration.resources import WarehouseResource

GROUP = "ranking"

# exploration_metrics reads ml.recommendations, so it is its own dbt op (no cycle).
ranking_dbt = dbt_asset_group(name="ranking_dbt_assets", group=GROUP, select="tag:ranking")


@asset(
    key=asset_key(config.RANKER_EVALUATION),
    group_name=GROUP,
    kinds={"pytorch", "duckdb"},
    deps=[asset_key(config.STG_INTERACTIONS), asset_key(config.RAW_ITEMS)],
    description=(
        "Train the SASRec sequence recommender on positive item sequences (leave-last-out), "
        "save it under IE_MODELS_DIR/sasrec, and write HR@10/NDCG@10 of it and of a popularity "
        "baseline (full-catalog ranking) to ml.ranker_evaluation."
    ),
)
def ranker_evaluation(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
    with warehouse.connect() as con:
        seqs, catalog = load_training_data(con)
    # No connection is held while training (single-writer DuckDB, in-process executor).
    cfg = seqrec.SeqRecConfig(**config.seqrec_overrides())
    context.log.info(f"training SASRec on {len(seqs)} users, {catalog.n_items} items, {seqs.items.size} positives")
    result = seqrec.train(seqs, catalog, cfg, log=context.log.info)
    path = seqrec.save(result, config.ranker_dir())
    frame = seqrec.evaluation_frame(result)
    with warehouse.connect() as con:
        wh.write_table(con, config.RANKER_EVALUATION, frame)
    k = cfg.eval_k
    s, p = result.test, result.popularity
    return MaterializeResult(
        metadata={
            **table_metadata(config.RANKER_EVALUATION, frame.height),
            f"sasrec_hr@{k}": MetadataValue.float(s[f"hr@{k}"]),
            f"sasrec_ndcg@{k}": MetadataValue.float(s[f"ndcg@{k}"]),
            f"popularity_hr@{k}": MetadataValue.float(p[f"hr@{k}"]),
            f"popularity_ndcg@{k}": MetadataValue.float(p[f"ndcg@{k}"]),
            "eval_users": MetadataValue.int(s["n_users"]),
            "items": MetadataValue.int(catalog.n_items),
            "best_epoch": MetadataValue.int(result.best_epoch),
            "epochs_run": MetadataValue.int(len(result.history)),
            "train_seconds": MetadataValue.float(round(result.train_seconds, 1)),
            "model_version": result.model_version,
            "model_path": MetadataValue.path(str(path)),
            "training_curve": image_markdown(path.parent / seqrec.CURVE_FILE, "SASRec training curve"),
            "training_curve_path": MetadataValue.path(str(path.parent / seqrec.CURVE_FILE)),
            "config": MetadataValue.json(cfg.__dict__),
            "evaluation": MetadataValue.md(markdown_table(frame.select("model", "metric", "value", "n_users"))),
        }
    )


@asset_check(
    asset=asset_key(config.RANKER_EVALUATION),
    name="refresh_gate",
    blocking=True,
    description=(
        "Refresh gate on the sequence recommender: its NDCG@10 must be above the popularity baseline's "
        "(+ IE_GATE_NDCG_MARGIN, 0) in ml.ranker_evaluation. Blocking: a ranker that loses to popularity "
        "never refreshes the recommendations."
    ),
)
def ranker_refresh_gate(warehouse: WarehouseResource) -> AssetCheckResult:
    eval_k = seqrec.SeqRecConfig(**config.seqrec_overrides()).eval_k
    metric = f"ndcg@{eval_k}"
    with warehouse.connect(read_only=True) as con:
        rows = wh.query(con, f"select model, value, model_version from {config.RANKER_EVALUATION} where metric = ?",
                        [metric])
    values = dict(zip(rows["model"], rows["value"]))
    if "sasrec" not in values or "popularity" not in values:
        raise ValueError(f"{config.RANKER_EVALUATION} lacks the sasrec and popularity {metric} rows")
    version = rows.filter(rows["model"] == "sasrec")["model_version"][0]
    gate = gates.ranker_gate(values["sasrec"], values["popularity"], k=eval_k)
    return gate_check_result(gate, model_version=version)


@asset(
    key=asset_key(config.RECOMMENDATIONS),
    group_name=GROUP,
    kinds={"pytorch", "duckdb"},
    deps=[
        asset_key(config.RANKER_EVALUATION),
        asset_key(config.NOVEL_INTEREST_TRANSITIONS),
        asset_key(config.ITEM_CLUSTERS),
        asset_key(config.USER_CLUSTER_SEQUENCES),
        asset_key(config.STG_INTERACTIONS),
    ],
    description=(
        "Slates for every user: explore (last K distinct clusters -> lookup table -> novel "
        "cluster -> restricted top-k), baseline (unrestricted model) and popular; written in "
        "chunks and swapped in atomically."
    ),
)
def recommendations(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
    loaded = seqrec.load(config.ranker_dir())
    slate_size, chunk = config.slate_size(), config.ranking_chunk_users()
    t0 = time.perf_counter()
    with warehouse.connect() as con:
        stats = policies.generate_all(con, loaded, slate_size, chunk_users=chunk)
    seconds = time.perf_counter() - t0
    d = stats.as_dict()
    context.log.info(f"recommendations: {d}")
    return MaterializeResult(
        metadata={
            **table_metadata(config.RECOMMENDATIONS, sum(stats.rows.values())),
            "rows_per_policy": MetadataValue.json(stats.rows),
            "users": MetadataValue.int(stats.users),
            "users_without_positive_history": MetadataValue.int(stats.users_without_positive_history),
            "explore_target_from_lookup": MetadataValue.int(stats.explore_from_lookup),
            "explore_target_model_fallback": MetadataValue.int(stats.explore_model_fallback),
            "explore_no_novel_cluster": MetadataValue.int(stats.explore_no_novel_cluster),
            "short_slates": MetadataValue.json(stats.short_slates),
            "slate_size": MetadataValue.int(slate_size),
            "level": MetadataValue.int(config.llm_level()),
            "model_version": loaded.model_version,
            "seconds": MetadataValue.float(round(seconds, 2)),
            "users_per_second": MetadataValue.float(round(stats.users / seconds, 1) if seconds else 0.0),
        }
    )
