"""Foundation dbt marts (group `warehouse`)."""

from orchestration.dbt import dbt_asset_group

# Marts that read Python outputs live with their own groups (llm, evaluation, ranking).
warehouse_dbt_assets = dbt_asset_group(
    name="warehouse_dbt_assets",
    group="warehouse",
    select="fqn:*",
    exclude="tag:llm tag:ranking tag:evaluation",
)
