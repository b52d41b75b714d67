"""Ingestion (group `ingestion`): one source -> raw.interactions, raw.items, raw.rejected_rows.

Nothing is published unless every step before the swap passes: the source is read
and validated, the reject-rate gate holds for every file (IE_MAX_REJECT_SHARE), the
catalog can hold the configured cluster levels (the next step's precondition), and the
staged raw tables pass their Great Expectations suites inside the write transaction.
"""

from dagster import AssetExecutionContext, AssetSpec, Failure, MaterializeResult, MetadataValue, multi_asset

from models_ml import config, tables
from models_ml import warehouse as wh
from models_ml.ingest import load_source
from models_ml.ingest.validate import IngestError, check_reject_shares
from orchestration.keys import asset_key
from orchestration.metadata import table_metadata
from orchestration.resources import WarehouseResource

RAW_TABLES = (config.RAW_INTERACTIONS, config.RAW_ITEMS, config.RAW_REJECTED_ROWS)


@multi_asset(
    # each table its own description (models_ml/tables.py), the op's says how they are made
    specs=[
        AssetSpec(asset_key(t), group_name="ingestion", kinds={"duckdb"},
                  description=f"{tables.table(t).description} Loaded from IE_SOURCE (demo | movielens | files).")
        for t in RAW_TABLES
    ],
    name="ingest_source",
    description="Load the configured source (IE_SOURCE: demo | movielens | files) into the raw schema.",
)
def ingest_source(context: AssetExecutionContext, warehouse: WarehouseResource):
    try:
        result = load_source(config.source(), config.source_path())
        for line in check_reject_shares(result):
            context.log.warning(line)
        # the clustering step's precondition, checked before the raw tables change
        config.cluster_sizes(result.items.height, result.items["text"].n_unique())
    except (IngestError, config.ClusterSizeError) as exc:
        raise Failure(description=str(exc)) from None
    frames = {
        config.RAW_INTERACTIONS: result.interactions,
        config.RAW_ITEMS: result.items,
        config.RAW_REJECTED_ROWS: result.rejected,
    }
    # The three tables are swapped in one transaction, after their suites pass on it.
    with warehouse.connect() as con:
        try:
            wh.write_tables(con, frames)
        except wh.PublishRefusedError as exc:
            raise Failure(description=str(exc)) from None
    for table, df in frames.items():
        meta = table_metadata(table, df.height)
        if table == config.RAW_REJECTED_ROWS:
            by_reason = df.group_by("reason").len().sort("len", descending=True) if df.height else None
            meta["rejected_by_reason"] = MetadataValue.json(
                {r: n for r, n in by_reason.iter_rows()} if by_reason is not None else {}
            )
            meta["reject_share_by_file"] = MetadataValue.json(result.stats["reject_share_by_file"])
        if table == config.RAW_INTERACTIONS:
            meta["stats"] = MetadataValue.json(result.stats)
        yield MaterializeResult(asset_key=asset_key(table), metadata=meta)
