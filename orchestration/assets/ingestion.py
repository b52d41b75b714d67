"""Ingestion (group `ingestion`): one source -> raw.interactions, raw.items, raw.rejected_rows."""


from dagster import AssetExecutionContext, AssetSpec, MaterializeResult, MetadataValue, multi_asset

from models_ml import config
from models_ml import warehouse as wh
from models_ml.ingest import load_source
from orchestration.keys import asset_key
from orchestration.resources import WarehouseResource

RAW_TABLES = (config.RAW_INTERACTIONS, config.RAW_ITEMS, config.RAW_REJECTED_ROWS)


@multi_asset(
    specs=[AssetSpec(asset_key(t), group_name="ingestion", kinds={"duckdb"}) for t in RAW_TABLES],
    name="ingest_source",
    description="Load the configured source (IE_SOURCE: demo | movielens | files) into the raw schema.",
)
def ingest_source(context: AssetExecutionContext, warehouse: WarehouseResource):
    result = load_source(config.source(), config.source_path())
    frames = {
        config.RAW_INTERACTIONS: result.interactions,
        config.RAW_ITEMS: result.items,
        config.RAW_REJECTED_ROWS: result.rejected,
    }
    # Everything is read and validated before the warehouse is touched; the three
    # tables are swapped in one transaction so they always agree.
    with warehouse.connect() as con:
        wh.write_tables(con, frames)
    for table, df in frames.items():
        meta = {"rows": MetadataValue.int(df.height), "source": config.source()}
        if table == config.RAW_REJECTED_ROWS:
            by_reason = df.group_by("reason").len().sort("len", descending=True) if df.height else None
            meta["rejected_by_reason"] = MetadataValue.json(
                {r: n for r, n in by_reason.iter_rows()} if by_reason is not None else {}
            )
        if table == config.RAW_INTERACTIONS:
            meta["stats"] = MetadataValue.json(result.stats)
        yield MaterializeResult(asset_key=asset_key(table), metadata=meta)
