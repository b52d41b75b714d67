"""The one Dagster `Definitions` of the project."""

from __future__ import annotations

from dagster import (
    Definitions,
    define_asset_job,
    in_process_executor,
    load_asset_checks_from_modules,
    load_assets_from_modules,
)

from orchestration.assets import clusters, evaluation, ingestion, llm, quality, ranking, warehouse_dbt
from orchestration.dbt import dbt_cli_resource
from orchestration.resources import default_warehouse

ASSET_MODULES = [ingestion, clusters, warehouse_dbt, llm, evaluation, quality, ranking]

all_assets_job = define_asset_job("all_assets", selection="*")
# Re-validate the current warehouse with every GE gate, materializing nothing.
quality_job = define_asset_job("quality", selection=quality.QUALITY_SELECTION)

defs = Definitions(
    assets=load_assets_from_modules(ASSET_MODULES),
    asset_checks=load_asset_checks_from_modules(ASSET_MODULES),
    jobs=[all_assets_job, quality_job],
    resources={"warehouse": default_warehouse(), "dbt": dbt_cli_resource()},
    # DuckDB allows one writer process: run every step in one process, in order.
    executor=in_process_executor,
)
