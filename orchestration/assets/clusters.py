"""Interest clusters (group `clusters`): raw.items -> ml.clusters, ml.item_clusters."""


from dagster import AssetExecutionContext, AssetSpec, Failure, MaterializeResult, MetadataValue, multi_asset

from models_ml import clusters, config, tables
from models_ml import warehouse as wh
from orchestration.keys import asset_key
from orchestration.metadata import markdown_table, table_metadata
from orchestration.resources import WarehouseResource


@multi_asset(
    specs=[
        AssetSpec(asset_key(t), group_name="clusters", kinds={"duckdb"}, deps=[asset_key(config.RAW_ITEMS)],
                  description=f"{tables.table(t).description} Built from the items' text embeddings (all-MiniLM-L6-v2).")
        for t in (config.CLUSTERS, config.ITEM_CLUSTERS)
    ],
    name="interest_clusters",
    description="Embed item text (all-MiniLM-L6-v2), cluster into coarse and fine levels, describe each cluster.",
)
def interest_clusters(context: AssetExecutionContext, warehouse: WarehouseResource):
    with warehouse.connect() as con:
        items = wh.read_table(con, config.RAW_ITEMS, ["item_id", "text"]).sort("item_id")
    try:
        n_coarse, n_fine = config.cluster_sizes(items.height, items["text"].n_unique())
    except config.ClusterSizeError as exc:
        raise Failure(description=str(exc)) from None
    context.log.info(f"clustering {items.height} items into {n_coarse} coarse / {n_fine} fine clusters")
    result = clusters.build_clusters(items, n_coarse=n_coarse, n_fine=n_fine, seed=config.dbt_vars()["seed"])
    # both tables swap together, after their suites pass on the staged pair
    with warehouse.connect() as con:
        try:
            wh.write_tables(con, {config.CLUSTERS: result.clusters, config.ITEM_CLUSTERS: result.item_clusters})
        except wh.PublishRefusedError as exc:
            raise Failure(description=str(exc)) from None
    desc = result.clusters.select("level", "cluster_id", "description", "n_items")
    names = {config.COARSE_LEVEL: "coarse", config.FINE_LEVEL: "fine"}
    quality = {
        f"{names[level]}_{metric}": MetadataValue.float(value)
        for level, metrics in result.quality.items()
        for metric, value in metrics.items()
        if metric != "clusters"
    }
    for level, metrics in sorted(result.quality.items()):
        context.log.info(f"level {level}: description self-retrieval {metrics['self_retrieval']:.3f}, "
                         f"topical share {metrics['topical_share']:.3f}")
    yield MaterializeResult(
        asset_key=asset_key(config.CLUSTERS),
        metadata={
            **table_metadata(config.CLUSTERS, result.clusters.height),
            "coarse_clusters": n_coarse,
            "fine_clusters": n_fine,
            **quality,
            "descriptions": MetadataValue.md(markdown_table(desc)),
        },
    )
    yield MaterializeResult(
        asset_key=asset_key(config.ITEM_CLUSTERS),
        metadata=table_metadata(config.ITEM_CLUSTERS, result.item_clusters.height),
    )
