"""The one home of asset keys: every warehouse table's asset key derives from its
name in models_ml.config. Python-written tables keep their schema (``raw/items``,
``ml/clusters``); dbt models in the marts schema are keyed by name alone
(``training_pairs``), as dagster-dbt keys them."""

from dagster import AssetKey

from models_ml import config


def asset_key(table: str) -> AssetKey:
    schema, _, name = table.rpartition(".")
    return AssetKey([name]) if schema in ("", config.MARTS_SCHEMA) else AssetKey([schema, name])
