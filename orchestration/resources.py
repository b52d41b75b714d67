"""Dagster resources. The warehouse resource is a thin handle on models_ml.warehouse,
so Python assets never open ad-hoc connections: every connection waits for other
processes holding the file (its log line goes to the run's log) and every write
through it is audited by the table's Great Expectations suite before it is published
(``expectations.audit``). At each run's start it marks runs left STARTED by a killed
process as failed (orchestration/runs.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import duckdb
from dagster import ConfigurableResource, InitResourceContext

from expectations import audit as gate_audit
from models_ml import config, warehouse
from orchestration import runs


class WarehouseResource(ConfigurableResource):
    """The DuckDB warehouse file shared with dbt (DUCKDB_DATABASE)."""

    database: str
    # write, audit, publish: a gated table is swapped in only when its suite passes
    audit: bool = True

    def setup_for_execution(self, context: InitResourceContext) -> None:
        instance, run = context.instance, context.run
        if instance is None or run is None:
            return
        runs.record_worker(instance, run)
        log = context.log.warning if context.log is not None else None
        runs.fail_orphaned_runs(instance, run.run_id, log=log)

    def _log_warning(self, message: str) -> None:
        try:
            log = self.get_resource_context().log
        except Exception:  # used outside a run: models_ml.warehouse logs it anyway
            return
        if log is not None:
            log.warning(message)

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        audit = gate_audit if self.audit and not read_only else None
        with warehouse.connect(self.database, read_only=read_only, on_wait=self._log_warning, audit=audit) as con:
            yield con


def default_warehouse() -> WarehouseResource:
    return WarehouseResource(database=str(config.database_path()))
