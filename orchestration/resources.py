"""Dagster resources. The warehouse resource is a thin handle on models_ml.warehouse,
so Python assets never open ad-hoc connections."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import duckdb
from dagster import ConfigurableResource

from models_ml import config, warehouse


class WarehouseResource(ConfigurableResource):
    """The DuckDB warehouse file shared with dbt (DUCKDB_DATABASE)."""

    database: str

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with warehouse.connect(self.database, read_only=read_only) as con:
            yield con


def default_warehouse() -> WarehouseResource:
    return WarehouseResource(database=str(config.database_path()))
