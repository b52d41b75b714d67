"""dagster-dbt wiring: the dbt project (built once), its CLI resource and a factory for
dbt asset groups. Foundation marts form the `warehouse` group; marts that read Python
outputs (transition_lookup, exploration_metrics) are separate ops in their own groups,
so the graph ingestion -> dbt -> Python -> dbt has no cycle inside one op.

The manifest is parsed by `make manifest` (every Makefile target that loads the
definitions runs it first) and, under `dagster dev`, again at start-up by
``prepare_if_dev()``, so edits to the dbt project show without a deploy step.

dbt runs as ``ie-dbt`` (orchestration/dbt_child.py), which dies with the Dagster
process, and only once no other process holds the warehouse file (it waits like
every writer, IE_LOCK_TIMEOUT_S).
"""

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from dagster import (
    AssetExecutionContext,
    AssetMaterialization,
    AssetsDefinition,
    Failure,
    MetadataValue,
    Output,
    TableColumn,
    TableSchema,
)
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from models_ml import config
from models_ml import warehouse as wh
from orchestration.metadata import provenance
from orchestration.resources import WarehouseResource

# The dbt next to this interpreter (the venv need not be activated), through the
# wrapper that dies with this process; plain dbt in a venv installed before it existed.
_BOUND_DBT = Path(sys.executable).with_name("ie-dbt")
DBT_EXECUTABLE = str(_BOUND_DBT if _BOUND_DBT.exists() else Path(sys.executable).with_name("dbt"))

dbt_project = DbtProject(project_dir=config.DBT_PROJECT_DIR, profiles_dir=config.DBT_PROJECT_DIR)
dbt_project.prepare_if_dev()
if not dbt_project.manifest_path.exists():
    raise FileNotFoundError(
        f"{dbt_project.manifest_path} is missing: run `make manifest` (dbt parse) before loading the "
        "Dagster definitions"
    )


class _GroupTranslator(DagsterDbtTranslator):
    def __init__(self, group: str):
        super().__init__()
        self._group = group

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> Optional[str]:
        return self._group


def dbt_cli_resource() -> DbtCliResource:
    return DbtCliResource(
        project_dir=dbt_project, profiles_dir=str(config.DBT_PROJECT_DIR), dbt_executable=DBT_EXECUTABLE
    )


def require_duckdb_target() -> None:
    """The Python assets read the marts from the DuckDB file, so the pipeline builds
    them there; another DBT_TARGET (the profile reads it) is refused, not half-used."""
    target = config.dbt_target()
    if target != "dev":
        raise RuntimeError(
            f"DBT_TARGET={target}: the Dagster pipeline builds the marts in the DuckDB warehouse its Python "
            "assets read; unset DBT_TARGET here and build the marts on Spark with `make marts-spark` "
            "(README, Marts on Spark)"
        )


def dbt_build_vars() -> str:
    """The vars of every dbt run: the effective set-based parameters (models_ml.config,
    environment overrides applied) and the warehouse file, so dbt and Python agree."""
    return json.dumps({**config.dbt_vars(), "duckdb_database": str(config.database_path())})


COLUMN_SCHEMA = "dagster/column_schema"


def built_metadata(con, spec) -> dict:
    """A built dbt model's row count and columns with their DuckDB types and the YAML's
    descriptions, read from the warehouse file through the warehouse module. (dagster-dbt's
    fetch_row_counts/fetch_column_metadata query the catalog named in the manifest parsed
    at load time, which is another file's when DUCKDB_DATABASE changed since.)"""
    schema, name = str(spec.metadata["dagster/table_name"]).split(".")[-2:]
    table = f"{schema}.{name}"
    if not wh.table_exists(con, table):
        return provenance()
    described = getattr(spec.metadata.get(COLUMN_SCHEMA), "schema", spec.metadata.get(COLUMN_SCHEMA))
    text = {c.name: c.description for c in described.columns} if described is not None else {}
    cols = wh.query(
        con,
        "select column_name, data_type from information_schema.columns "
        "where table_schema = ? and table_name = ? order by ordinal_position",
        [schema, name],
    )
    return {
        "dagster/row_count": MetadataValue.int(wh.row_count(con, table)),
        COLUMN_SCHEMA: TableSchema(columns=[TableColumn(c, t, description=text.get(c)) for c, t in cols.iter_rows()]),
        **provenance(),
    }


def dbt_asset_group(name: str, group: str, select: str, exclude: str = "") -> AssetsDefinition:
    """dbt models matching ``select`` as one subsettable multi-asset in ``group``."""

    # no project=: dagster-dbt would show the DbtProject object as unserializable metadata,
    # and the CLI resource already knows the project
    @dbt_assets(
        manifest=dbt_project.manifest_path,
        select=select,
        exclude=exclude,
        name=name,
        dagster_dbt_translator=_GroupTranslator(group),
    )
    def _assets(context: AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource):
        require_duckdb_target()
        # the warehouse resource also starts the run's bookkeeping (orchestration/runs.py)
        try:
            wh.wait_until_free(config.database_path(), on_wait=context.log.warning)
        except wh.WarehouseBusyError as exc:
            raise Failure(description=str(exc)) from None
        events, error = [], None
        try:  # dbt holds the file until it exits: buffer its events, then read the facts
            events.extend(dbt.cli(["build", "--vars", dbt_build_vars()], context=context).stream())
        except Exception as exc:  # the events before a failure are still reported
            error = exc
        with warehouse.connect(read_only=True) as con:
            for event in events:
                if isinstance(event, (Output, AssetMaterialization)):
                    key = event.asset_key if isinstance(event, AssetMaterialization) else context.asset_key_for_output(event.output_name)
                    event = event.with_metadata({**event.metadata, **built_metadata(con, context.assets_def.specs_by_key[key])})
                yield event
        if error is not None:
            raise error

    return _assets
