"""dagster-dbt wiring: the dbt project, its CLI resource and a factory for dbt asset
groups. Foundation marts form the `warehouse` group; marts that read Python outputs
(transition_lookup, exploration_metrics) are separate ops in their own groups, so the
graph ingestion -> dbt -> Python -> dbt has no cycle inside one op."""


import os
import sys
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Optional

from dagster import AssetExecutionContext, AssetsDefinition
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from models_ml import config

# The dbt next to this interpreter: the venv need not be activated or on PATH.
DBT_EXECUTABLE = str(Path(sys.executable).with_name("dbt"))

dbt_project = DbtProject(project_dir=config.DBT_PROJECT_DIR, profiles_dir=config.DBT_PROJECT_DIR)


def prepare_manifest() -> None:
    """`dbt parse` into the project's target dir with DBT_EXECUTABLE (dagster-dbt's own
    preparer looks for `dbt` on PATH, absent on a clean CI clone)."""
    DbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE).cli(
        ["parse", "--quiet"], target_path=dbt_project.target_path
    ).wait()


# `dagster dev` re-parses on start; the CLI and tests need a manifest too, so parse once
# when it is missing rather than relying on a deploy step.
if os.environ.get("DAGSTER_IS_DEV_CLI") or not dbt_project.manifest_path.exists():
    prepare_manifest()


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


def dbt_asset_group(name: str, group: str, select: str, exclude: str = "") -> AssetsDefinition:
    """dbt models matching ``select`` as one subsettable multi-asset in ``group``."""

    @dbt_assets(
        manifest=dbt_project.manifest_path,
        project=dbt_project,
        select=select,
        exclude=exclude,
        name=name,
        dagster_dbt_translator=_GroupTranslator(group),
    )
    def _assets(context: AssetExecutionContext, dbt: DbtCliResource):
        # DUCKDB_DATABASE and vars come from models_ml.config so dbt and Python agree.
        os.environ["DUCKDB_DATABASE"] = str(config.database_path())
        yield from dbt.cli(["build", "--vars", config.dbt_vars_json()], context=context).stream()

    return _assets
